package acme_test

// Integration: the real lego adapter against a real Pebble CA, validating
// HTTP-01 through a real nginx on loopback that serves berth's webroot from
// berth's own rendered default server.

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/acme"
	"github.com/berthproxy/berth/internal/testenv"
	"github.com/berthproxy/berth/nginxconf"
)

// rig is nginx + Pebble + the directories berth would use.
type rig struct {
	t                     *testing.T
	pebble                *testenv.Pebble
	httpAddr              string
	prefix, webroot       string
	certs, state          string
	roots                 []*x509.Certificate
	directory             string // the CA URL berth is given (Pebble, or a proxy in front)
	stored                chan struct{}
	extraConf             string // a user's own conf.d file, to break a host's challenge path
	renewProfile, profile string
}

func newRig(t *testing.T, profiles map[string]time.Duration, extraConf func(httpAddr string) string) *rig {
	return newRigWith(t, testenv.PebbleOptions{Profiles: profiles}, extraConf)
}

// newRigWith is newRig with Pebble options (HTTPPort is set here).
func newRigWith(t *testing.T, popts testenv.PebbleOptions, extraConf func(httpAddr string) string) *rig {
	if testing.Short() {
		t.Skip("Pebble and nginx integration test; skipped under -short")
	}
	bin := testenv.RequireNginx(t)
	r := &rig{t: t, stored: make(chan struct{}, 16), profile: "default"}
	r.prefix = testenv.NginxPrefix(t, testenv.NginxBuild(t, bin, "-V"))
	r.webroot = filepath.Join(r.prefix, "webroot")
	if err := os.MkdirAll(filepath.Join(r.webroot, ".well-known", "acme-challenge"), 0o755); err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	r.httpAddr = net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	files, errs := nginxconf.Render(nginxconf.Config{Webroot: r.webroot, HTTPListen: r.httpAddr,
		HTTPSListen: net.JoinHostPort("127.0.0.1", fmt.Sprint(testenv.FreePort(t)))})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	confd := filepath.Join(r.prefix, "conf.d")
	if _, err := nginxconf.Apply(confd, nginxconf.Files{}, files); err != nil {
		t.Fatal(err)
	}
	if extraConf != nil {
		if err := os.WriteFile(filepath.Join(confd, "user.conf"), []byte(extraConf(r.httpAddr)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	probeFile := filepath.Join(r.webroot, ".well-known", "acme-challenge", "ready")
	os.WriteFile(probeFile, []byte("ready"), 0o644)
	testenv.StartNginx(t, bin, r.prefix, func() error {
		body, err := r.probe(context.Background(), "ready.test", "/.well-known/acme-challenge/ready")
		if err == nil && body != "ready" {
			err = fmt.Errorf("got %q", body)
		}
		return err
	})
	os.Remove(probeFile)
	if popts.Profiles == nil {
		popts.Profiles = map[string]time.Duration{"default": 90 * 24 * time.Hour}
	}
	popts.HTTPPort = port
	r.pebble = testenv.StartPebble(t, popts)
	r.directory = r.pebble.DirectoryURL
	roots, err := acme.ParseRoots(r.pebble.RootsFile)
	if err != nil {
		t.Fatal(err)
	}
	r.roots = roots
	r.certs, r.state = t.TempDir(), t.TempDir()
	return r
}

// probe is the self-check berth's controller does, aimed at loopback nginx.
func (r *rig) probe(ctx context.Context, host, path string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.httpAddr+path, nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return string(body), nil
}

func (r *rig) issuer() *acme.LazyIssuer {
	return &acme.LazyIssuer{Config: acme.AccountConfig{CA: r.directory, Roots: r.roots, StateDir: r.state,
		Webroot: r.webroot, Profile: r.profile}}
}

// start runs a manager (as berth does after a start) until the test ends
// or stop is called.
func (r *rig) start(selfCheck bool) (m *acme.Manager, stop func()) {
	l := logrus.New()
	l.SetOutput(testWriter{r.t})
	opts := acme.Options{Store: acme.Store{Dir: r.certs}, Issuer: r.issuer(), Webroot: r.webroot, StateDir: r.state,
		Log: logrus.NewEntry(l)}
	if selfCheck {
		opts.Probe = acme.ProbeFunc(r.probe)
	}
	m, err := acme.NewManager(opts)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { m.Run(ctx); done <- struct{}{} }()
	go func() { // what the controller does with Changed
		defer func() { done <- struct{}{} }()
		for {
			select {
			case <-ctx.Done():
				return
			case <-m.Changed():
				select {
				case r.stored <- struct{}{}:
				default:
				}
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done; <-done }) }
	r.t.Cleanup(stop)
	return m, stop
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitStored waits for the manager to store a certificate.
func (r *rig) waitStored(timeout time.Duration) {
	r.t.Helper()
	select {
	case <-r.stored:
	case <-time.After(timeout):
		r.t.Fatal("no certificate stored in time")
	}
}

func (r *rig) load(name string) *acme.Stored {
	r.t.Helper()
	st, err := acme.Store{Dir: r.certs}.Load(name)
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

// verify checks the stored chain against Pebble's root for each name.
func (r *rig) verify(st *acme.Stored, names ...string) {
	r.t.Helper()
	inter := x509.NewCertPool()
	rest := st.ChainPEM
	for {
		c, more, ok := nextCert(rest)
		if !ok {
			break
		}
		inter.AddCert(c)
		rest = more
	}
	for _, n := range names {
		if _, err := st.Leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: r.pebble.IssuerRoots(r.t), Intermediates: inter}); err != nil {
			r.t.Fatalf("certificate for %s does not verify against Pebble's root: %v", n, err)
		}
	}
}

func TestObtainMultiNameThroughNginxWebroot(t *testing.T) {
	r := newRig(t, nil, nil)
	old := syscallUmask(0o077) // tokens must still be readable by nginx's workers
	defer syscallUmask(old)
	m, _ := r.start(true)
	m.Want(acme.Requests([][]string{{"www.a.test", "a.test"}}), nil)
	r.waitStored(30 * time.Second)
	st := r.load("a.test")
	if !slices.Equal(st.Meta.Domains, []string{"a.test", "www.a.test"}) {
		t.Fatalf("domains %v", st.Meta.Domains)
	}
	r.verify(st, "a.test", "www.a.test")
	if st.Leaf.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("key algorithm %v, want ECDSA (P-256 by default)", st.Leaf.PublicKeyAlgorithm)
	}
	if n := r.pebble.Orders(t); n != 1 {
		t.Fatalf("Pebble saw %d orders, want 1", n)
	}
	if got := m.Certs()["www.a.test"]; got.Chain == "" {
		t.Fatalf("Certs() = %v", m.Certs())
	}
}

func TestRestartReusesAccountAndCertificateWithoutANewOrder(t *testing.T) {
	r := newRig(t, nil, nil)
	m, stop := r.start(true)
	m.Want(acme.Requests([][]string{{"a.test"}}), nil)
	r.waitStored(30 * time.Second)
	first := r.load("a.test")
	accounts, _ := filepath.Glob(filepath.Join(r.state, "accounts", "*", "account.json"))
	before, _ := os.ReadFile(accounts[0])
	stop()

	m2, _ := r.start(true)
	if _, ok := m2.Certs()["a.test"]; !ok {
		t.Fatal("a restarted manager does not serve the stored certificate at once")
	}
	m2.Want(acme.Requests([][]string{{"a.test"}}), nil)
	// A forced renewal goes through the same account.
	st, err := acme.RenewHost(context.Background(), acme.Store{Dir: r.certs}, r.state, r.issuer(), "a.test", true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if n := r.pebble.Orders(t); n != 2 {
		t.Fatalf("Pebble saw %d orders, want 2 (the first and the forced renewal; none from the restart)", n)
	}
	after, _ := os.ReadFile(accounts[0])
	if string(before) != string(after) || st.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("the account changed or the certificate was not replaced")
	}
	if _, err := acme.RenewHost(context.Background(), acme.Store{Dir: r.certs}, r.state, r.issuer(), "a.test", false, time.Now()); err == nil || !strings.Contains(err.Error(), "not due") {
		t.Fatalf("renew without --force of a fresh certificate: %v", err)
	}
}

func TestShortLivedCertificateIsRenewedAndNamesTheOneItReplaces(t *testing.T) {
	// 20 s: renewal starts at half life, and an order takes about 5 s
	// (lego polls every 5 s) even on a loaded machine.
	r := newRig(t, map[string]time.Duration{"short": 20 * time.Second}, nil)
	r.profile = "short"
	m, _ := r.start(true)
	m.Want(acme.Requests([][]string{{"short.test"}}), nil)
	r.waitStored(30 * time.Second)
	first := r.load("short.test")
	r.waitStored(30 * time.Second) // renewed well before it expires
	second := r.load("short.test")
	if second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("not renewed")
	}
	if !second.Leaf.NotBefore.Before(first.Leaf.NotAfter) {
		t.Fatal("renewed only after expiry")
	}
	r.verify(second, "short.test")
}

func TestARIWindowDrivesRenewalAndAnEmptyWindowIsIgnored(t *testing.T) {
	r := newRig(t, nil, nil)
	m, stop := r.start(true)
	m.Want(acme.Requests([][]string{{"ari.test"}}), nil)
	r.waitStored(30 * time.Second)
	first := r.load("ari.test")
	stop()

	// An empty window must not read as "renew now".
	r.pebble.SetRenewalInfoJSON(t, first.ChainPEM, `{"suggestedWindow":{}}`)
	w, err := r.issuer().RenewalInfo(context.Background(), first.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	def := acme.RenewAt(first.Leaf.NotBefore, first.Leaf.NotAfter, nil, 0)
	if got := acme.RenewAt(first.Leaf.NotBefore, first.Leaf.NotAfter, w, 0); !got.Equal(def) {
		t.Fatalf("an empty ARI window moved renewal to %v (default %v)", got, def)
	}

	// A window in the past means renew now: at the next start-up check.
	r.pebble.SetRenewalInfo(t, first.ChainPEM, time.Now().Add(-2*time.Minute), time.Now().Add(-time.Minute))
	m2, _ := r.start(true)
	m2.Want(acme.Requests([][]string{{"ari.test"}}), nil)
	r.waitStored(30 * time.Second)
	second := r.load("ari.test")
	if second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("the ARI window did not trigger a renewal")
	}
}

func TestRevokeStopsServingAndHoldsTheName(t *testing.T) {
	r := newRig(t, nil, nil)
	m, _ := r.start(true)
	m.Want(acme.Requests([][]string{{"rev.test"}}), nil)
	r.waitStored(30 * time.Second)
	st := r.load("rev.test")
	if _, err := acme.RevokeHost(context.Background(), acme.Store{Dir: r.certs}, r.state, r.issuer(), "rev.test"); err != nil {
		t.Fatal(err)
	}
	if !r.pebble.Revoked(t, st.ChainPEM) {
		t.Fatal("Pebble does not consider the certificate revoked")
	}
	r.waitStored(10 * time.Second) // the daemon's refresh notices within a couple of seconds
	if _, ok := m.Certs()["rev.test"]; ok {
		t.Fatal("a revoked certificate is still served")
	}
	if n := r.pebble.Orders(t); n != 1 {
		t.Fatalf("%d orders: the revoked name was re-ordered", n)
	}
}

// breakChallenge is a user's own conf.d file that shadows the challenge
// path of broken.test with a 404, as a misconfiguration would.
func breakChallenge(addr string) string {
	return fmt.Sprintf("server {\n    listen %s;\n    server_name broken.test;\n    location / { return 404; }\n}\n", addr)
}

func TestSelfCheckKeepsABrokenChallengePathAwayFromTheCA(t *testing.T) {
	r := newRig(t, nil, breakChallenge)
	m, _ := r.start(true)
	m.Want(acme.Requests([][]string{{"broken.test", "ok.test"}}), nil)
	r.waitStored(30 * time.Second)
	st := r.load("broken.test") // the certificate keeps its group's name
	if !slices.Equal(st.Meta.Domains, []string{"ok.test"}) {
		t.Fatalf("domains %v, want ok.test alone", st.Meta.Domains)
	}
	if n := r.pebble.Orders(t); n != 1 {
		t.Fatalf("%d orders; broken.test must never reach the CA", n)
	}
	assertBackedOff(t, r, "broken.test", "self-check")
}

func TestAFailingNameIsIsolatedAndBackedOff(t *testing.T) {
	r := newRig(t, nil, breakChallenge)
	m, _ := r.start(false) // no self-check: the CA's validation fails
	m.Want(acme.Requests([][]string{{"broken.test", "ok.test"}}), nil)
	r.waitStored(60 * time.Second)
	st := r.load("broken.test")
	if !slices.Equal(st.Meta.Domains, []string{"ok.test"}) {
		t.Fatalf("domains %v, want ok.test alone", st.Meta.Domains)
	}
	r.verify(st, "ok.test")
	assertBackedOff(t, r, "broken.test", "broken.test")
}

func assertBackedOff(t *testing.T, r *rig, name, errPart string) {
	t.Helper()
	_, names, err := acme.Status(acme.Store{Dir: r.certs}, r.state)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n.Name == name {
			if n.Failures < 1 || time.Until(n.NextAttempt) < 4*time.Minute || !strings.Contains(n.LastError, errPart) {
				t.Fatalf("%s state %+v", name, n.NameState)
			}
			return
		}
	}
	t.Fatalf("no state for %s in %+v", name, names)
}

// TestRateLimitIsHonoured puts a proxy in front of Pebble that answers new
// orders with 429 and a Retry-After, as Let's Encrypt does.
func TestRateLimitIsHonoured(t *testing.T) {
	r := newRig(t, nil, nil)
	target, _ := url.Parse(r.pebble.DirectoryURL)
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: target.Scheme, Host: target.Host})
	tr := http.DefaultTransport.(*http.Transport).Clone()
	pool := x509.NewCertPool()
	for _, c := range r.roots {
		pool.AddCert(c)
	}
	tr.TLSClientConfig.RootCAs = pool
	rp.Transport = tr
	var proxy *httptest.Server
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path != target.Path {
			return nil
		}
		body, _ := io.ReadAll(resp.Body)
		body = []byte(strings.ReplaceAll(string(body), "https://"+target.Host, proxy.URL))
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		resp.ContentLength = int64(len(body))
		resp.Header.Del("Content-Length")
		return nil
	}
	proxy = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.Contains(req.URL.Path, "order-plz") || strings.Contains(req.URL.Path, "new-order") {
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "7200")
			w.Header().Set("Replay-Nonce", "bm9uY2U")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many certificates already issued","status":429}`)
			return
		}
		rp.ServeHTTP(w, req)
	}))
	t.Cleanup(proxy.Close)
	r.directory = proxy.URL + target.Path
	r.roots = append(r.roots, proxy.Certificate())
	m, _ := r.start(true)
	m.Want(acme.Requests([][]string{{"limited.test"}}), nil)
	testenv.Eventually(t, 30*time.Second, func() error {
		_, names, err := acme.Status(acme.Store{Dir: r.certs}, r.state)
		for _, n := range names {
			if n.Name == "limited.test" && time.Until(n.NextAttempt) > 119*time.Minute && strings.Contains(n.LastError, "too many certificates") {
				return nil
			}
		}
		return fmt.Errorf("no 2h backoff with the CA's text yet: %+v %v", names, err)
	})
}

func nextCert(rest []byte) (*x509.Certificate, []byte, bool) {
	for {
		block, more := pemDecode(rest)
		if block == nil {
			return nil, nil, false
		}
		if c, err := x509.ParseCertificate(block); err == nil {
			return c, more, true
		}
		rest = more
	}
}

func TestAnAccountTheCAForgotIsRegisteredAgain(t *testing.T) {
	r := newRig(t, nil, nil)
	if _, err := acme.RenewHost(context.Background(), acme.Store{Dir: r.certs}, r.state, r.issuer(), "a.test", true, time.Now()); err != nil {
		t.Fatal(err)
	}
	accounts, _ := filepath.Glob(filepath.Join(r.state, "accounts", "*", "account.json"))
	raw, _ := os.ReadFile(accounts[0])
	var acc struct {
		Registration struct {
			URI string `json:"uri"`
		} `json:"registration"`
	}
	if err := json.Unmarshal(raw, &acc); err != nil || acc.Registration.URI == "" {
		t.Fatalf("account.json %s: %v", raw, err)
	}
	// Point the stored registration at an account the CA never had, as
	// after a CA reset.
	forgotten := strings.Replace(string(raw), acc.Registration.URI, acc.Registration.URI+"0000", 1)
	if err := os.WriteFile(accounts[0], []byte(forgotten), 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(filepath.Dir(accounts[0]), "key.pem")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("account key mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := acme.RenewHost(context.Background(), acme.Store{Dir: r.certs}, r.state, r.issuer(), "a.test", true, time.Now()); err != nil {
		t.Fatalf("with a forgotten account: %v", err)
	}
	now, _ := os.ReadFile(accounts[0])
	if strings.Contains(string(now), acc.Registration.URI+"0000") {
		t.Fatal("the forgotten account was not replaced by a new registration")
	}
}

func TestExternalAccountBinding(t *testing.T) {
	const kid, hmac = "berth-kid", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	r := newRigWith(t, testenv.PebbleOptions{EABKeys: map[string]string{kid: hmac}}, nil)
	withoutEAB := r.issuer()
	if _, err := acme.RenewHost(context.Background(), acme.Store{Dir: r.certs}, r.state, withoutEAB, "eab.test", true, time.Now()); err == nil || !strings.Contains(err.Error(), "registration") {
		t.Fatalf("a CA that requires EAB accepted an account without it: %v", err)
	}
	withEAB := r.issuer()
	withEAB.Config.EABKID, withEAB.Config.EABHMAC = kid, hmac
	st, err := acme.RenewHost(context.Background(), acme.Store{Dir: r.certs}, r.state, withEAB, "eab.test", true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r.verify(st, "eab.test")
}
