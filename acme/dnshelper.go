package acme

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// helperProvider answers DNS-01 challenges through berth-dns, a program of
// its own that links lego's DNS providers (cmd/berth-dns says why they are
// kept out of this process). It implements lego's challenge.Provider and
// challenge.ProviderTimeout, so lego's DNS-01 solver drives it as it would
// the provider itself: Present, propagation checks here, CleanUp.
type helperProvider struct {
	path, name        string
	timeout, interval time.Duration
}

// helperCallTimeout bounds one present or cleanup: a provider's API call,
// with its own retries, not the propagation wait (lego does that here).
const helperCallTimeout = 2 * time.Minute

// checkHelper runs "berth-dns NAME check", which configures the provider
// from its environment, and reads its propagation timing. Its error is
// the helper's own reason (unknown provider, missing variables).
func checkHelper(path, name string) (helperProvider, error) {
	h := helperProvider{path: path, name: name}
	out, err := h.call("check")
	if err != nil {
		return h, err
	}
	var t, i int64
	if _, err := fmt.Sscan(out, &t, &i); err != nil || t <= 0 || i <= 0 {
		return h, fmt.Errorf("DNS helper %s: unexpected answer %q to check", path, strings.TrimSpace(out))
	}
	h.timeout, h.interval = time.Duration(t)*time.Second, time.Duration(i)*time.Second
	return h, nil
}

// Present adds the TXT record of a DNS-01 challenge.
func (h helperProvider) Present(domain, token, keyAuth string) error {
	_, err := h.call("present", domain, token, keyAuth)
	return err
}

// CleanUp removes it.
func (h helperProvider) CleanUp(domain, token, keyAuth string) error {
	_, err := h.call("cleanup", domain, token, keyAuth)
	return err
}

// Timeout is the provider's own propagation timeout and polling interval.
func (h helperProvider) Timeout() (timeout, interval time.Duration) {
	return h.timeout, h.interval
}

// call runs the helper with the daemon's environment (where the provider's
// variables are) and returns its standard output, or an error carrying the
// last line it wrote to standard error.
func (h helperProvider) call(verb string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), helperCallTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, h.path, append([]string{h.name, verb}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if reason := lastLine(stderr.String()); reason != "" {
			return "", fmt.Errorf("%s", reason)
		}
		return "", fmt.Errorf("DNS provider %q: the helper %s (BERTH_ACME_DNS_HELPER) failed: %w", h.name, h.path, err)
	}
	return stdout.String(), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
