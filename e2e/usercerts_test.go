package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
)

// Paths in the berth container of the user certificate directory and of a
// directory to import from.
const (
	userCertsDir = "/etc/nginx/user-certs"
	importDir    = "/import"
)

// testCA is a certificate authority the test client trusts: it stands for
// the CA a user bought a certificate from, or an earlier acme-companion's.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "berth e2e user CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a 30-day server certificate for hosts as a full chain
// (leaf, then the CA) and its PKCS#8 key, both PEM, and the parsed leaf.
func (ca *testCA) issue(t *testing.T, hosts ...string) (chain, key []byte, leaf *x509.Certificate) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: hosts[0]}, DNSNames: hosts,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	kd, _ := x509.MarshalPKCS8PrivateKey(k)
	chain = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})...)
	return chain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), leaf
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// newPebbleStackMounting is newPebbleStack with extra read-only mounts of
// host directories into berth (host path → container path).
func newPebbleStackMounting(t *testing.T, mounts map[string]string) (*stack, *testenv.PebbleInContainers) {
	var ca *testenv.PebbleInContainers
	s := newStackWith(t, stackOptions{berth: func(s *stack) []string {
		ca = testenv.PebbleContainers(t, s.network, s.ip(s.nginx), testenv.PebbleOptions{})
		args := []string{"--network", s.network,
			"-v", ca.RootsFile + ":" + pebbleRoots + ":ro",
			"-e", "BERTH_ACME_CA=" + ca.DirectoryURL,
			"-e", "BERTH_ACME_CA_ROOTS=" + pebbleRoots}
		for host, path := range mounts {
			args = append(args, "-v", host+":"+path+":ro")
		}
		return args
	}})
	return s, ca
}

// servedLeaf is nil-error when https://host/ answers 200 from backend
// name with exactly leaf, verified against roots.
func (s *stack) servedLeaf(host, name string, roots *x509.CertPool, leaf *x509.Certificate) error {
	cs, err := s.servedTLS(host, name, roots)
	if err != nil {
		return err
	}
	if got := cs.PeerCertificates[0]; !got.Equal(leaf) {
		return fmt.Errorf("https://%s/ serves serial %x from %q, want serial %x", host, got.SerialNumber, got.Issuer.CommonName, leaf.SerialNumber)
	}
	return nil
}

// restartBerth restarts the berth container and waits until it logs again.
func (s *stack) restartBerth(t *testing.T) {
	t.Helper()
	restarted := time.Now()
	testenv.Docker(t, "restart", s.berth)
	testenv.Eventually(t, converge, func() error { return s.loggedSince(restarted) })
}

// TestAUserCertificateIsServedAndNeverOrdered mounts a directory holding a
// certificate for own.test (nginx-proxy's layout, from a CA the client
// trusts) as berth's user certificate directory. nginx serves it for
// own.test, and Pebble gets no order for own.test, before or after a berth
// restart, while it does issue one for another host next to it.
func TestAUserCertificateIsServedAndNeverOrdered(t *testing.T) {
	userCA := newTestCA(t)
	dir := t.TempDir()
	chain, key, leaf := userCA.issue(t, "own.test")
	writeFile(t, filepath.Join(dir, "own.test.crt"), chain, 0o644)
	writeFile(t, filepath.Join(dir, "own.test.key"), key, 0o600)
	s, ca := newPebbleStackMounting(t, map[string]string{dir: userCertsDir})
	pebbleRoots := ca.IssuerRoots(t)

	start := time.Now()
	s.run(backend{name: "own", labels: []string{"proxy.host=own.test", "proxy.acme=on"}})
	testenv.Eventually(t, certDeadline, func() error { return s.servedLeaf("own.test", "own", userCA.pool, leaf) })
	t.Logf("own.test served with the user's certificate after %v", since(start))

	// Pebble works here: a host without a user certificate gets one.
	s.run(backend{name: "other", labels: []string{"proxy.host=other.test", "proxy.acme=on"}})
	testenv.Eventually(t, certDeadline, func() error {
		_, err := s.servedTLS("other.test", "other", pebbleRoots)
		return err
	})
	if n := ca.Orders(t); n != 1 {
		t.Fatalf("Pebble has %d orders, want exactly 1 (other.test's); own.test must never be ordered", n)
	}
	s.restartBerth(t)
	consistently(t, 5*time.Second, func() error {
		if n := ca.Orders(t); n != 1 {
			return fmt.Errorf("Pebble has %d orders after berth restarted, want still 1", n)
		}
		return s.servedLeaf("own.test", "own", userCA.pool, leaf)
	})
	if line, err := s.logLineWith("serving your own certificate", "own.test"); err != nil {
		t.Errorf("berth did not say it serves the user's certificate: %v", err)
	} else {
		t.Logf("berth: %s", line)
	}
}

// TestImportThenRestartOrdersNothing imports an acme-companion certs
// volume (<host>/fullchain.pem + key.pem, <host>.crt and .key links) with
// "berth import" run in the berth container next to the daemon. The
// daemon serves the imported certificate for a service started after, and
// across a restart, without a single order at Pebble.
func TestImportThenRestartOrdersNothing(t *testing.T) {
	oldCA := newTestCA(t)
	dir := t.TempDir()
	chain, key, leaf := oldCA.issue(t, "imp.test", "www.imp.test")
	writeFile(t, filepath.Join(dir, "imp.test", "fullchain.pem"), chain, 0o644)
	writeFile(t, filepath.Join(dir, "imp.test", "key.pem"), key, 0o600)
	for _, h := range []string{"imp.test", "www.imp.test"} {
		for ext, target := range map[string]string{".crt": "fullchain.pem", ".key": "key.pem"} {
			if err := os.Symlink("./imp.test/"+target, filepath.Join(dir, h+ext)); err != nil {
				t.Fatal(err)
			}
		}
	}
	s, ca := newPebbleStackMounting(t, map[string]string{dir: importDir})

	out := testenv.Docker(t, "exec", s.berth, "/berth", "import", importDir)
	t.Logf("berth import %s:\n%s", importDir, out)
	if !strings.Contains(out, "imported imp.test (imp.test, www.imp.test)") {
		t.Fatalf("berth import did not import imp.test:\n%s", out)
	}
	s.run(backend{name: "imp", labels: []string{"proxy.host=imp.test,www.imp.test", "proxy.acme=on"}})
	for _, h := range []string{"imp.test", "www.imp.test"} {
		testenv.Eventually(t, certDeadline, func() error { return s.servedLeaf(h, "imp", oldCA.pool, leaf) })
	}
	s.restartBerth(t)
	consistently(t, 5*time.Second, func() error {
		if n := ca.Orders(t); n != 0 {
			return fmt.Errorf("Pebble has %d orders, want none: the imported certificate is valid", n)
		}
		return s.servedLeaf("imp.test", "imp", oldCA.pool, leaf)
	})
	// Importing again changes nothing and still succeeds.
	if out := testenv.Docker(t, "exec", s.berth, "/berth", "import", importDir); !strings.Contains(out, "nothing to import") {
		t.Fatalf("second berth import:\n%s", out)
	}
}

// TestUserCertificatesWithoutACME runs berth with BERTH_ACME_CA=off and a
// user certificate directory holding one good certificate (certbot's
// layout) and one whose key belongs to another certificate: the good one
// is served, the bad one is ignored without harming the config (its host
// still answers over HTTP), and berth says which file and why.
func TestUserCertificatesWithoutACME(t *testing.T) {
	userCA := newTestCA(t)
	dir := t.TempDir()
	chain, key, leaf := userCA.issue(t, "mine.test")
	writeFile(t, filepath.Join(dir, "mine", "fullchain.pem"), chain, 0o644)
	writeFile(t, filepath.Join(dir, "mine", "privkey.pem"), key, 0o600)
	badChain, _, _ := userCA.issue(t, "bad.test")
	_, otherKey, _ := userCA.issue(t, "bad.test")
	writeFile(t, filepath.Join(dir, "bad.test.crt"), badChain, 0o644)
	writeFile(t, filepath.Join(dir, "bad.test.key"), otherKey, 0o600)
	s := newStackWith(t, stackOptions{berth: func(s *stack) []string {
		return []string{"--network", "none", "-e", "BERTH_ACME_CA=off", "-v", dir + ":" + userCertsDir + ":ro"}
	}})
	s.run(backend{name: "mine", labels: []string{"proxy.host=mine.test"}})
	s.run(backend{name: "bad", labels: []string{"proxy.host=bad.test", "proxy.https=both"}})
	testenv.Eventually(t, converge, func() error { return s.servedLeaf("mine.test", "mine", userCA.pool, leaf) })
	s.expectServed("bad.test", "/", "bad")
	if err := s.handshake("bad.test"); err == nil {
		t.Errorf("bad.test completed a TLS handshake; its user certificate is unusable and must not be served")
	}
	line, err := s.logLineWith("user certificate ignored", "bad.test.crt", "the key does not match the certificate")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("berth: %s", line)
}
