package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthproxy/berth/acme"
)

func TestCertsListsCertificatesAndFailingNames(t *testing.T) {
	certs, state := t.TempDir(), t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	notAfter := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "a.test"}, Issuer: pkix.Name{CommonName: "Test CA"},
		DNSNames: []string{"a.test", "www.a.test"}, NotBefore: notAfter.Add(-90 * 24 * time.Hour), NotAfter: notAfter}
	der, _ := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	err := acme.Store{Dir: certs}.Save("a.test", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), acme.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(state, "names.json"), []byte(`{"bad.test":{"failures":2,"next_attempt":"2026-12-01T00:00:00Z","last_error":"connection refused"}}`), 0o600)
	var out bytes.Buffer
	if code := run([]string{"certs", "--certs-dir", certs, "--state-dir", state}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"a.test,www.a.test", "2027-03-01T00:00:00Z", "2027-01-30", "bad.test", "retry 2026-12-01T00:00:00Z", "connection refused"} {
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
