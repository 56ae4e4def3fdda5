package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthproxy/berth/acme"
	"github.com/berthproxy/berth/internal/testenv"
)

func TestCertsListsCertificatesAndFailingNames(t *testing.T) {
	certs, state := t.TempDir(), t.TempDir()
	notAfter := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	chain, key, _ := testenv.SelfSigned(t, "a.test", notAfter.Add(-90*24*time.Hour), notAfter)
	err := acme.Store{Dir: certs}.Save("a.test", chain, key, acme.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(state, "names.json"), []byte(`{"bad.test":{"failures":2,"next_attempt":"2026-12-01T00:00:00Z","last_error":"connection refused"}}`), 0o600)
	var out bytes.Buffer
	if code := run([]string{"certs", "--certs-dir", certs, "--state-dir", state}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"a.test ", "2027-03-01T00:00:00Z", "2027-01-30", "bad.test", "retry 2026-12-01T00:00:00Z", "connection refused"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRenewAndRevokeNeedOneValidHost(t *testing.T) {
	cases := map[string][]string{
		"exactly one HOST":  {"renew"},
		"exactly one HOST ": {"revoke", "a.test", "b.test"},
		"bad_host!":         {"renew", "bad_host!"},
		"BERTH_ACME_CA=off": {"renew", "a.test"},
	}
	for want, args := range cases {
		var stderr bytes.Buffer
		full := append([]string{args[0], "--acme-ca", "off"}, args[1:]...)
		if code := run(full, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), strings.TrimSpace(want)) {
			t.Errorf("%v: exit %d, stderr %q, want 2 and %q", full, code, stderr.String(), want)
		}
	}
}

func TestCertsMovesACorruptStateFileAsideAndStillListsTheCertificates(t *testing.T) {
	certs, state := t.TempDir(), t.TempDir()
	notAfter := time.Now().Add(60 * 24 * time.Hour)
	chain, key, _ := testenv.SelfSigned(t, "a.test", notAfter.Add(-90*24*time.Hour), notAfter)
	if err := (acme.Store{Dir: certs}).Save("a.test", chain, key, acme.Meta{}); err != nil {
		t.Fatal(err)
	}
	names := filepath.Join(state, "names.json")
	os.WriteFile(names, []byte(`{"a.test":{"fail`), 0o600)
	var out, stderr bytes.Buffer
	if code := run([]string{"certs", "--certs-dir", certs, "--state-dir", state}, &out, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(out.String(), "a.test ") {
		t.Fatalf("output lacks the certificate:\n%s", out.String())
	}
	if aside, _ := filepath.Glob(names + ".corrupt-*"); len(aside) != 1 || !strings.Contains(stderr.String(), "moved aside") {
		t.Fatalf("corrupt names.json moved to %v; stderr %q", aside, stderr.String())
	}
}
