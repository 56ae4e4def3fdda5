package acme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// fakeCA is the unit-layer issuer: it signs whatever it is asked for with a
// throwaway CA, except names it is told to fail.
type fakeCA struct {
	mu      sync.Mutex
	key     *ecdsa.PrivateKey
	cert    *x509.Certificate
	fail    map[string]bool // names whose validation fails
	limit   time.Duration   // when set, every order is rate-limited with this Retry-After
	life    time.Duration
	orders  [][]string
	replace []*x509.Certificate
}

func newFakeCA(t *testing.T) *fakeCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake root"}, IsCA: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour), BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &fakeCA{key: key, cert: cert, fail: map[string]bool{}, life: 90 * 24 * time.Hour}
}

func (f *fakeCA) Obtain(_ context.Context, names []string, replaces *x509.Certificate) (Issued, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.orders = append(f.orders, slices.Clone(names))
	f.replace = append(f.replace, replaces)
	if f.limit > 0 {
		return Issued{}, &OrderError{Err: errors.New("too many certificates"), RateLimited: true, RetryAfter: f.limit}
	}
	var failed []string
	for _, n := range names {
		if f.fail[n] {
			failed = append(failed, n)
		}
	}
	if len(failed) > 0 {
		return Issued{}, &OrderError{Err: errors.New("validation failed for " + strings.Join(failed, ",")), Failed: failed}
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), DNSNames: names,
		NotBefore: time.Now(), NotAfter: time.Now().Add(f.life)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, f.cert, &key.PublicKey, f.key)
	if err != nil {
		return Issued{}, err
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return Issued{
		ChainPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func (f *fakeCA) RenewalInfo(context.Context, *x509.Certificate) (*Window, error) { return nil, nil }
func (f *fakeCA) Revoke(context.Context, []byte) error                            { return nil }

func (f *fakeCA) orderCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.orders)
}

type env struct {
	certs, state, webroot string
	ca                    *fakeCA
	notified              chan struct{}
}

func newEnv(t *testing.T) *env {
	return &env{certs: t.TempDir(), state: t.TempDir(), webroot: t.TempDir(), ca: newFakeCA(t), notified: make(chan struct{}, 100)}
}

func (e *env) manager(t *testing.T, probe Prober) *Manager {
	return e.managerWith(t, Options{Probe: probe})
}

func (e *env) managerWith(t *testing.T, o Options) *Manager {
	l := logrus.New()
	l.SetOutput(io.Discard)
	o.Store, o.Issuer, o.Webroot, o.StateDir = Store{Dir: e.certs}, e.ca, e.webroot, e.state
	o.Notify, o.Log = func() { e.notified <- struct{}{} }, logrus.NewEntry(l)
	m, err := NewManager(o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func run(t *testing.T, m *Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestObtainStoresFilesAndSurvivesRestartWithoutReissue(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, nil)
	run(t, m)
	m.Want([][]string{{"a.test", "www.a.test"}}, nil)
	<-e.notified
	certs := m.Certs()
	if len(certs) != 2 || certs["a.test"] != certs["www.a.test"] {
		t.Fatalf("Certs() = %v, want both names on one certificate", certs)
	}
	if fi, err := os.Stat(certs["a.test"].Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	st, err := Store{Dir: e.certs}.Load("a.test")
	if err != nil || !slices.Equal(st.Meta.Domains, []string{"a.test", "www.a.test"}) {
		t.Fatalf("stored: %v %+v", err, st)
	}

	restarted := e.manager(t, nil)
	if got := restarted.Certs(); len(got) != 2 {
		t.Fatalf("after restart Certs() = %v; stored certificates must be served at once", got)
	}
	run(t, restarted)
	restarted.Want([][]string{{"a.test", "www.a.test"}}, nil)
	time.Sleep(50 * time.Millisecond) // give a wrong re-issue the chance to happen
	if n := e.ca.orderCount(); n != 1 {
		t.Fatalf("%d orders after a restart; a valid certificate must not be re-issued", n)
	}
}

func TestAFailingNameDoesNotHoldBackTheOthersAndItsBackoffPersists(t *testing.T) {
	e := newEnv(t)
	e.ca.fail["bad.test"] = true
	m := e.manager(t, nil)
	run(t, m)
	m.Want([][]string{{"bad.test", "good.test"}}, nil)
	<-e.notified
	certs := m.Certs()
	if _, ok := certs["good.test"]; !ok || len(certs) != 1 {
		t.Fatalf("Certs() = %v, want good.test only", certs)
	}
	names, _ := stateFile{e.state + "/names.json"}.load()
	bad := names["bad.test"]
	if bad.Failures != 1 || time.Until(bad.NextAttempt) < 4*time.Minute || !strings.Contains(bad.LastError, "validation failed") {
		t.Fatalf("bad.test state %+v", bad)
	}
	// A restart must not retry bad.test before its backoff ends.
	before := e.ca.orderCount()
	restarted := e.manager(t, nil)
	run(t, restarted)
	restarted.Want([][]string{{"bad.test", "good.test"}}, nil)
	time.Sleep(50 * time.Millisecond)
	if n := e.ca.orderCount(); n != before {
		t.Fatalf("restart placed %d new orders during backoff", n-before)
	}
}

func TestRateLimitHonoursRetryAfter(t *testing.T) {
	e := newEnv(t)
	e.ca.limit = 3 * time.Hour
	m := e.manager(t, nil)
	run(t, m)
	m.Want([][]string{{"a.test"}}, nil)
	waitFor(t, "an order", func() bool { return e.ca.orderCount() == 1 })
	waitFor(t, "backoff state", func() bool {
		names, _ := stateFile{e.state + "/names.json"}.load()
		return time.Until(names["a.test"].NextAttempt) > 2*time.Hour+59*time.Minute
	})
}

func TestSelfCheckStopsOrdersForABrokenChallengePath(t *testing.T) {
	e := newEnv(t)
	probe := func(_ context.Context, host, path string) (string, error) {
		if host == "broken.test" {
			return "<html>welcome to nginx</html>", nil
		}
		data, err := os.ReadFile(e.webroot + path)
		return string(data), err
	}
	m := e.manager(t, probe)
	run(t, m)
	m.Want([][]string{{"broken.test", "ok.test"}}, nil)
	<-e.notified
	for _, order := range e.ca.orders {
		if slices.Contains(order, "broken.test") {
			t.Fatalf("broken.test reached the CA: %v", e.ca.orders)
		}
	}
	names, _ := stateFile{e.state + "/names.json"}.load()
	if !strings.Contains(names["broken.test"].LastError, "self-check") {
		t.Fatalf("broken.test state %+v", names["broken.test"])
	}
	if entries, _ := os.ReadDir(e.webroot + "/.well-known/acme-challenge"); len(entries) != 0 {
		t.Fatalf("probe files left in the webroot: %v", entries)
	}
}

func TestUnissuableNamesAreNeverOrdered(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, nil)
	run(t, m)
	m.Want([][]string{{"app.localhost", "intranet", "10.0.0.1"}, {"real.test"}}, nil)
	<-e.notified
	if len(e.ca.orders) != 1 || !slices.Equal(e.ca.orders[0], []string{"real.test"}) {
		t.Fatalf("orders %v", e.ca.orders)
	}
}

func TestRenewalReplacesTheOldCertificateAndKeepsItUntilThen(t *testing.T) {
	e := newEnv(t)
	e.ca.life = 3 * time.Second // renews at half life
	m := e.manager(t, nil)
	run(t, m)
	m.Want([][]string{{"a.test"}}, nil)
	<-e.notified
	first, _ := Store{Dir: e.certs}.Load("a.test")
	<-e.notified // the renewal
	e.ca.mu.Lock()
	replaced := e.ca.replace[1]
	e.ca.mu.Unlock()
	if replaced == nil || replaced.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Fatal("the renewal did not name the certificate it replaces")
	}
	second, _ := Store{Dir: e.certs}.Load("a.test")
	if second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("the stored certificate was not replaced")
	}
}

func TestUnusedCertificatesAreKeptForTheGracePeriodThenRemoved(t *testing.T) {
	e := newEnv(t)
	const grace = 300 * time.Millisecond
	m := e.managerWith(t, Options{UnusedGrace: grace})
	run(t, m)
	m.Want([][]string{{"gone.test"}, {"kept.test"}}, []string{"gone.test", "kept.test"})
	<-e.notified
	<-e.notified
	// gone.test's container stops: no site uses it any more.
	m.Want([][]string{{"kept.test"}}, []string{"kept.test"})
	stopped := time.Now()
	if _, ok := m.Certs()["gone.test"]; !ok {
		t.Fatal("a certificate was dropped as soon as its container stopped")
	}
	waitFor(t, "the unused certificate to be removed", func() bool {
		_, err := Store{Dir: e.certs}.Load("gone.test")
		return errors.Is(err, ErrNotFound)
	})
	if since := time.Since(stopped); since < grace {
		t.Fatalf("removed after %v, before the grace period of %v", since, grace)
	}
	if _, ok := m.Certs()["gone.test"]; ok {
		t.Fatal("a removed certificate is still offered")
	}
	if _, err := (Store{Dir: e.certs}).Load("kept.test"); err != nil {
		t.Fatalf("a certificate in use was removed: %v", err)
	}
}

func TestAFailedRenewalKeepsTheOldCertificateInService(t *testing.T) {
	e := newEnv(t)
	e.ca.life = 6 * time.Second // renewal due at half life, 3 s in
	m := e.manager(t, nil)
	run(t, m)
	m.Want([][]string{{"a.test"}}, []string{"a.test"})
	<-e.notified
	first, _ := Store{Dir: e.certs}.Load("a.test")
	e.ca.mu.Lock()
	e.ca.fail["a.test"] = true
	e.ca.mu.Unlock()
	waitFor(t, "a failed renewal", func() bool {
		names, _ := stateFile{e.state + "/names.json"}.load()
		return names["a.test"].Failures > 0
	})
	if time.Now().After(first.Leaf.NotAfter) {
		t.Fatal("the failed renewal came only after expiry; nothing left to check")
	}
	if got := m.Certs()["a.test"]; got.Chain == "" {
		t.Fatal("the old certificate was taken out of service by a failed renewal")
	}
	if st, _ := (Store{Dir: e.certs}).Load("a.test"); st.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Fatal("the stored certificate changed")
	}
}

func TestDirectoryURLShortcuts(t *testing.T) {
	for in, want := range map[string]string{
		"letsencrypt":                  "https://acme-v02.api.letsencrypt.org/directory",
		"letsencrypt-staging":          "https://acme-staging-v02.api.letsencrypt.org/directory",
		"https://ca.example/directory": "https://ca.example/directory",
	} {
		if got := DirectoryURL(in); got != want {
			t.Errorf("DirectoryURL(%q) = %q, want %q", in, got, want)
		}
	}
}
