package acme

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeHelper writes a stand-in for berth-dns: a script that answers the
// way the real one does (cmd/berth-dns), logging each call to calls.
func fakeHelper(t *testing.T, script string) (path, calls string) {
	dir := t.TempDir()
	path, calls = filepath.Join(dir, "berth-dns"), filepath.Join(dir, "calls")
	body := "#!/bin/sh\necho \"$@\" >> " + calls + "\n" + script + "\n"
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, calls
}

func TestAnUnusableDNSProviderFailsEachDNS01OrderWithItsReason(t *testing.T) {
	helper, _ := fakeHelper(t, `echo 'DNS provider "rfc2136" (BERTH_ACME_DNS_PROVIDER) is not usable: rfc2136: some credentials information are missing: RFC2136_NAMESERVER' >&2; exit 1`)
	d := NewDNSSolver("rfc2136", nil, helper)
	if err := d.Err(); err == nil || !strings.Contains(err.Error(), `"rfc2136"`) || !strings.Contains(err.Error(), "NAMESERVER") {
		t.Fatalf("Err() = %v, want one naming the provider and the missing variable", err)
	}
	l := &LegoIssuer{dnsErr: d.Err()} // no clients: a DNS-01 order must not reach one
	_, err := l.Obtain(context.Background(), []string{"*.w.test", "w.test"}, OrderOptions{})
	var oe *OrderError
	if !errors.As(err, &oe) || !slices.Equal(oe.Failed, []string{"*.w.test", "w.test"}) || !strings.Contains(oe.Error(), "NAMESERVER") {
		t.Fatalf("Obtain = %v, want an OrderError failing both names with the provider's reason", err)
	}
	if NewDNSSolver("", nil, helper) != nil || (*DNSSolver)(nil).Err() == nil {
		t.Fatal("no provider must read as an error saying to set BERTH_ACME_DNS_PROVIDER")
	}
	if err := NewDNSSolver("rfc2136", nil, filepath.Join(t.TempDir(), "missing")).Err(); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("a missing helper: Err() = %v, want one naming its path", err)
	}
}

// The solver hands lego the helper's calls and the provider's own timing.
func TestTheDNSHelperIsCalledForEachRecord(t *testing.T) {
	helper, calls := fakeHelper(t, `[ "$2" = check ] && echo "42 3"; exit 0`)
	d := NewDNSSolver("rfc2136", nil, helper)
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
	p := d.provider.(helperProvider)
	if timeout, interval := p.Timeout(); timeout != 42*time.Second || interval != 3*time.Second {
		t.Fatalf("Timeout = %v, %v; want the helper's 42s, 3s", timeout, interval)
	}
	if err := p.Present("a.test", "tok", "auth"); err != nil {
		t.Fatal(err)
	}
	if err := p.CleanUp("a.test", "tok", "auth"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(calls)
	if want := "rfc2136 check\nrfc2136 present a.test tok auth\nrfc2136 cleanup a.test tok auth\n"; string(got) != want {
		t.Fatalf("calls:\n%s\nwant:\n%s", got, want)
	}
}

func TestFailedNamesIncludeWildcards(t *testing.T) {
	err := errors.New("error: one or more domains had a problem:\n[*.w.test] acme: error presenting token: refused\n[ok.test] x\n")
	if got := failedNames(err); !slices.Equal(got, []string{"*.w.test", "ok.test"}) {
		t.Fatalf("failedNames = %v", got)
	}
}
