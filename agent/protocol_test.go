package agent

import (
	"cmp"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestVerifyAcceptsOnlyAFreshRequestSignedWithTheSecret(t *testing.T) {
	secret, body := []byte("s3cret"), []byte(`{"generation":1}`)
	now := time.Unix(1_800_000_000, 0)
	ts := now.Unix()
	target := Target("PUT", "/v1/config")
	good := Sign(secret, ts, target, body)
	for _, tc := range []struct {
		name     string
		sig, ts  string
		target   string // "" is the target signed
		body     []byte
		want     error
		wantNone bool
	}{
		{name: "a request signed now with the secret passes", sig: good, ts: strconv.FormatInt(ts, 10), body: body, wantNone: true},
		{name: "a signature under another secret is refused", sig: Sign([]byte("other"), ts, target, body), ts: strconv.FormatInt(ts, 10), body: body, want: ErrBadSignature},
		{name: "a request sent to another path is refused", sig: good, ts: strconv.FormatInt(ts, 10), target: Target("PUT", "/v1/challenge/abc"), body: body, want: ErrBadSignature},
		{name: "a request sent with another method is refused", sig: good, ts: strconv.FormatInt(ts, 10), target: Target("DELETE", "/v1/config"), body: body, want: ErrBadSignature},
		{name: "a changed body is refused", sig: good, ts: strconv.FormatInt(ts, 10), body: []byte(`{"generation":2}`), want: ErrBadSignature},
		{name: "a timestamp changed to look fresh is refused", sig: good, ts: strconv.FormatInt(ts+1, 10), body: body, want: ErrBadSignature},
		{name: "a request signed six minutes ago is stale", sig: Sign(secret, ts-360, target, body), ts: strconv.FormatInt(ts-360, 10), body: body, want: ErrStale},
		{name: "a request six minutes ahead is stale", sig: Sign(secret, ts+360, target, body), ts: strconv.FormatInt(ts+360, 10), body: body, want: ErrStale},
		{name: "a request four minutes old passes", sig: Sign(secret, ts-240, target, body), ts: strconv.FormatInt(ts-240, 10), body: body, wantNone: true},
		{name: "a timestamp that is not a number is refused", sig: good, ts: "yesterday", body: body, want: ErrStale},
		{name: "an unsigned request is refused", ts: strconv.FormatInt(ts, 10), body: body, want: ErrUnsigned},
		{name: "a request without timestamp is refused", sig: good, body: body, want: ErrUnsigned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(secret, tc.sig, tc.ts, cmp.Or(tc.target, target), tc.body, now)
			if tc.wantNone && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.wantNone && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReadSecretRefusesAMissingOrEmptySecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := ReadSecret(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing secret file was accepted")
	}
	if _, err := ReadSecret(write("empty", "\n")); err == nil {
		t.Fatal("an empty secret was accepted")
	}
	got, err := ReadSecret(write("ok", "abc\n"))
	if err != nil || string(got) != "abc" {
		t.Fatalf("ReadSecret = %q, %v; want abc without the newline", got, err)
	}
	if _, err := New(nil, Options{}, nil); err == nil {
		t.Fatal("an agent without a secret was created")
	}
}

func TestCertPathStaysInsideTheCertsDir(t *testing.T) {
	for _, rel := range []string{"", ".", "..", "../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", `a\b`} {
		if _, err := certPath("/certs", rel); err == nil {
			t.Errorf("certPath(%q) was accepted", rel)
		}
	}
	if p, err := certPath("/certs", "a.test/v1/privkey.pem"); err != nil || p != "/certs/a.test/v1/privkey.pem" {
		t.Fatalf("certPath = %q, %v", p, err)
	}
}

func TestChallengeTokensAreBase64URLOnly(t *testing.T) {
	for _, tok := range []string{"", "..", "a/b", "a.b", "a%2fb", "a b"} {
		if _, err := challengePath("/w", tok); !errors.Is(err, errBadToken) {
			t.Errorf("token %q: %v, want errBadToken", tok, err)
		}
	}
	if p, err := challengePath("/w", "Ab-_9"); err != nil || p != "/w/.well-known/acme-challenge/Ab-_9" {
		t.Fatalf("challengePath = %q, %v", p, err)
	}
}
