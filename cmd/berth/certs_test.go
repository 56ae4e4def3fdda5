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
		// A wildcard certificate is renewed by its wildcard name.
		"BERTH_ACME_CA=off ": {"renew", "*.a.test"},
		"bad_wild!":          {"revoke", "*.bad_wild!"},
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

// writeCert writes a self-signed certificate for host, valid from nb to
// na, as <base>.crt and <base>.key in dir.
func writeCert(t *testing.T, dir, base, host string, nb, na time.Time) {
	t.Helper()
	chain, key, _ := testenv.SelfSigned(t, host, nb, na)
	os.MkdirAll(dir, 0o755)
	if os.WriteFile(filepath.Join(dir, base+".crt"), chain, 0o644) != nil || os.WriteFile(filepath.Join(dir, base+".key"), key, 0o600) != nil {
		t.Fatal("cannot write test certificate")
	}
}

func TestCertsListsTheUsersOwnCertificatesAndTheIgnoredFiles(t *testing.T) {
	certs, state, user := t.TempDir(), t.TempDir(), t.TempDir()
	now := time.Now()
	writeCert(t, user, "_.example.test", "*.example.test", now.Add(-time.Hour), time.Date(2099, 1, 2, 0, 0, 0, 0, time.UTC))
	writeCert(t, user, "old.test", "old.test", now.Add(-48*time.Hour), now.Add(-time.Hour))
	var out bytes.Buffer
	if code := run([]string{"certs", "--certs-dir", certs, "--state-dir", state, "--user-certs-dir", user}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(out.String(), "\n")
	line := func(prefix string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		t.Fatalf("no line starting with %q:\n%s", prefix, out.String())
		return ""
	}
	if l := line("_.example.test.crt "); !strings.Contains(l, "*.example.test") || !strings.Contains(l, "2099-01-02") || !strings.Contains(l, "never: your own") {
		t.Errorf("user certificate line %q lacks its names, expiry or the mark", l)
	}
	if l := line("old.test.crt "); !strings.Contains(l, "ignored: expired on") {
		t.Errorf("expired user certificate line %q lacks the reason", l)
	}
}

func TestImportPrintsWhatItImportedAndSkipped(t *testing.T) {
	certs, state, from := t.TempDir(), t.TempDir(), t.TempDir()
	now := time.Now()
	writeCert(t, from, "good.test", "good.test", now.Add(-time.Hour), now.Add(60*24*time.Hour))
	writeCert(t, from, "old.test", "old.test", now.Add(-48*time.Hour), now.Add(-time.Hour))
	args := []string{"import", "--certs-dir", certs, "--state-dir", state, from}
	var out, stderr bytes.Buffer
	if code := run(args, &out, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"imported good.test (good.test) from " + filepath.Join(from, "good.test.crt"),
		"skipped " + filepath.Join(from, "old.test.crt") + ": expired on", "imported 1 certificate(s)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := (acme.Store{Dir: certs}).Load("good.test"); err != nil {
		t.Fatalf("not in the store: %v", err)
	}
	// Again: nothing to do, still success.
	out.Reset()
	if code := run(args, &out, &stderr); code != 0 || !strings.Contains(out.String(), "nothing to import") ||
		!strings.Contains(out.String(), "already in the store") {
		t.Fatalf("second import: exit %d, output:\n%s", code, out.String())
	}
}

func TestImportFailsClearly(t *testing.T) {
	certs, state, only := t.TempDir(), t.TempDir(), t.TempDir()
	writeCert(t, only, "old.test", "old.test", time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"import"}, 2, "exactly one DIR"},
		{[]string{"import", filepath.Join(only, "missing")}, 1, "import: read " + filepath.Join(only, "missing") + ": no such file or directory"},
		{[]string{"import", only}, 1, "nothing imported from " + only + ": 1 file(s) unusable"},
	}
	for _, c := range cases {
		var stderr bytes.Buffer
		args := append([]string{c.args[0], "--certs-dir", certs, "--state-dir", state}, c.args[1:]...)
		if code := run(args, io.Discard, &stderr); code != c.code || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, stderr.String(), c.code, c.want)
		}
	}
}
