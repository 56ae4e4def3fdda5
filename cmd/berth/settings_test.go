package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/controller"
)

func TestLabelDefaultsComeFromEnvironmentAndFlagsAndReachTheController(t *testing.T) {
	t.Setenv("BERTH_MAX_BODY_SIZE", "10M")
	t.Setenv("BERTH_PROXY_READ_TIMEOUT", "60s")
	t.Setenv("BERTH_HSTS", "off")
	s, err := parseSettings("run", []string{"--proxy-connect-timeout", "3s", "--snippets", "on"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := controller.Defaults{MaxBodySize: "10m", ConnectTimeout: "3s", ReadTimeout: "60s", HSTS: "off", Snippets: true, ACMEChallenge: "http-01"}
	if got := s.controllerOptions().Defaults; got != want {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
}

func TestLabelDefaultsAreTheDocumentedOnes(t *testing.T) {
	s, err := parseSettings("run", nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := controller.Defaults{MaxBodySize: "0", HSTS: controller.DefaultHSTS, ACMEChallenge: controller.ChallengeHTTP01}
	if s.Defaults != want {
		t.Fatalf("defaults %+v, want %+v", s.Defaults, want)
	}
}

func TestBadLabelDefaultsNameTheSetting(t *testing.T) {
	for env, v := range map[string]string{"BERTH_MAX_BODY_SIZE": "lots", "BERTH_PROXY_SEND_TIMEOUT": "1y",
		"BERTH_HSTS": "always", "BERTH_SNIPPETS": "yes", "BERTH_PROXY_CONNECT_TIMEOUT": "5 s",
		"BERTH_ACME_CHALLENGE": "dns", "BERTH_ACME_DNS_RESOLVERS": "10.0.0.1:53,not a resolver"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, v)
			if _, err := parseSettings("run", nil, io.Discard); err == nil || !strings.Contains(err.Error(), env) {
				t.Fatalf("err=%v, want one naming %s", err, env)
			}
		})
	}
}

func TestSnippetsOnIsWarnedAboutAtStart(t *testing.T) {
	for _, on := range []bool{true, false} {
		var buf bytes.Buffer
		log := logrus.New()
		log.SetOutput(&buf)
		settings{Defaults: controller.Defaults{Snippets: on}}.warnAtStart(logrus.NewEntry(log))
		if got := strings.Contains(buf.String(), "anyone who can label a container controls nginx"); got != on {
			t.Fatalf("snippets %v: log %q", on, buf.String())
		}
	}
}

func TestDNS01SettingsAreReadAndChecked(t *testing.T) {
	t.Setenv("BERTH_ACME_CHALLENGE", "DNS-01")
	t.Setenv("BERTH_ACME_DNS_PROVIDER", "rfc2136")
	t.Setenv("BERTH_ACME_DNS_RESOLVERS", "10.0.0.2:5353, ns.example.com")
	s, err := parseSettings("run", nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Defaults.ACMEChallenge != controller.ChallengeDNS01 || s.ACMEDNSProvider != "rfc2136" ||
		strings.Join(s.ACMEDNSResolvers, ",") != "10.0.0.2:5353,ns.example.com:53" {
		t.Fatalf("settings %+v", s)
	}
	t.Setenv("BERTH_ACME_DNS_PROVIDER", "")
	if _, err := parseSettings("run", nil, io.Discard); err == nil || !strings.Contains(err.Error(), "BERTH_ACME_DNS_PROVIDER") {
		t.Fatalf("dns-01 without a provider: err %v, want one naming BERTH_ACME_DNS_PROVIDER", err)
	}
}

func TestAMisconfiguredDNSProviderIsAnErrorNamingItAndWhatIsMissing(t *testing.T) {
	// The providers themselves are cmd/berth-dns's (tested there); here,
	// the settings hand the provider to the helper they name, and berth
	// still starts when it fails.
	dir := t.TempDir()
	failing := filepath.Join(dir, "berth-dns")
	script := "#!/bin/sh\necho \"DNS provider \\\"$1\\\" (BERTH_ACME_DNS_PROVIDER) is not usable: CLOUDFLARE_DNS_API_TOKEN missing\" >&2\nexit 1\n"
	if err := os.WriteFile(failing, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ helper, want string }{
		{failing, "CLOUDFLARE_DNS_API_TOKEN"},
		{filepath.Join(dir, "missing"), filepath.Join(dir, "missing")},
	} {
		t.Setenv("BERTH_ACME_DNS_PROVIDER", "cloudflare")
		t.Setenv("BERTH_ACME_DNS_HELPER", tc.helper)
		s, err := parseSettings("run", nil, io.Discard)
		if err != nil {
			t.Fatalf("a misconfigured provider must not stop berth: %v", err)
		}
		err = s.accountConfig().DNS.Err()
		if err == nil || !strings.Contains(err.Error(), "cloudflare") || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("err %v, want one naming cloudflare and %s", err, tc.want)
		}
	}
}

func TestSwarmSettingsAreReadAndChecked(t *testing.T) {
	t.Setenv("BERTH_SWARM", "on")
	t.Setenv("BERTH_SWARM_AGENT_PORT", "9200")
	s, err := parseSettings("run", []string{"--agent-secret-file", "/s/agent"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Swarm || s.AgentPort != 9200 || s.AgentSecretFile != "/s/agent" || s.SwarmStoreKeyFile != "/run/secrets/berth-store-key" {
		t.Fatalf("swarm settings %+v", s)
	}
	if s.Defaults.ConnectTimeout != "1s" {
		t.Fatalf("connect timeout on a Swarm: %q; want 1s, so a dead node's task does not hang requests", s.Defaults.ConnectTimeout)
	}
	t.Setenv("BERTH_PROXY_CONNECT_TIMEOUT", "5s")
	if s, _ := parseSettings("run", nil, io.Discard); s.Defaults.ConnectTimeout != "5s" {
		t.Fatalf("a connect timeout set on a Swarm: %q; want the setting", s.Defaults.ConnectTimeout)
	}
	for env, val := range map[string]string{"BERTH_SWARM": "yes", "BERTH_SWARM_AGENT_PORT": "70000"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, val)
			if _, err := parseSettings("run", nil, io.Discard); err == nil || !strings.Contains(err.Error(), env) {
				t.Fatalf("%s=%s: %v; want an error naming it", env, val, err)
			}
		})
	}
}
