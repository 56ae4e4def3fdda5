package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestAnUnknownOrUnconfiguredProviderIsAnErrorNamingIt(t *testing.T) {
	t.Setenv("DNSUPDATE_NAMESERVER", "")
	t.Setenv("RFC2136_NAMESERVER", "")
	for _, v := range []string{"CLOUDFLARE_EMAIL", "CLOUDFLARE_API_KEY", "CLOUDFLARE_DNS_API_TOKEN", "CF_API_EMAIL", "CF_API_KEY", "CF_DNS_API_TOKEN"} {
		t.Setenv(v, "")
	}
	for args, want := range map[string][]string{
		"nope check":       {`"nope"`, "unrecognized DNS provider"},
		"rfc2136 check":    {`"rfc2136"`, "NAMESERVER"},
		"cloudflare check": {`"cloudflare"`, "CLOUDFLARE_"},
	} {
		var stderr bytes.Buffer
		if code := run(strings.Fields(args), &bytes.Buffer{}, &stderr); code != 1 || !strings.Contains(stderr.String(), want[0]) || !strings.Contains(stderr.String(), want[1]) {
			t.Errorf("%s: exit %d, stderr %q; want 1 naming %v", args, code, stderr.String(), want)
		}
	}
}

func TestCheckPrintsTheProvidersTiming(t *testing.T) {
	t.Setenv("RFC2136_NAMESERVER", "127.0.0.1:53")
	t.Setenv("RFC2136_PROPAGATION_TIMEOUT", "42")
	t.Setenv("RFC2136_POLLING_INTERVAL", "3")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"rfc2136", "check"}, &stdout, &stderr); code != 0 || stdout.String() != "42 3\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and \"42 3\"", code, stdout.String(), stderr.String())
	}
	if code := run([]string{"rfc2136", "present", "a.test"}, &stdout, &stderr); code != 2 {
		t.Fatalf("a call with missing arguments: exit %d, want 2", code)
	}
}
