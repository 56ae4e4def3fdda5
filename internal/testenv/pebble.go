package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Pebble, Let's Encrypt's test CA, runs either as two processes on loopback
// (StartPebble) or as two containers on a test's Docker network
// (PebbleContainers): pebble itself, and pebble-challtestsrv as the DNS
// server its VA asks, answering every A query with one address and no AAAA
// query at all (Pebble dials IPv6 first). Both are built once per machine
// from the Go module proxy as static binaries; the containers run them in a
// FROM scratch image.

// pebbleVersion is the Pebble release the ACME tests are written against.
const pebbleVersion = "v2.10.3"

const pebbleModule = "github.com/letsencrypt/pebble/v2"

// pebbleStartTimeout bounds how long Pebble and its DNS server may take to
// answer. Pebble generates an ECDSA issuer chain at start, which takes
// milliseconds; a start that takes longer than this is hung.
const pebbleStartTimeout = 20 * time.Second

// pebbleStartAttempts: free loopback ports are found by listening on port 0
// and closing, so another process may take one before Pebble binds it. A
// start that fails is retried with new ports.
const pebbleStartAttempts = 3

// wfeCertValidity is the lifetime of the TLS certificate generated for
// Pebble's ACME and management listeners: generated for every instance,
// it only has to outlive one test run.
const wfeCertValidity = 365 * 24 * time.Hour

// defaultProfileValidity is the classic Let's Encrypt lifetime, used for the
// single "default" profile when PebbleOptions.Profiles is nil.
const defaultProfileValidity = 90 * 24 * time.Hour

// Ports inside the containers of PebbleContainers (Pebble's own defaults),
// and where the configuration is copied to.
const (
	pebbleWFEPort   = 14000
	pebbleMgmtPort  = 15000
	challDNSPort    = 8053
	challMgmtPort   = 8055
	pebbleConfigDir = "/config"
)

// pebbleDockerfile: both binaries are static, so the image needs nothing else.
const pebbleDockerfile = "FROM scratch\nCOPY pebble pebble-challtestsrv /\n"

// ordersLine is what Pebble's WFE logs after storing a new order: the
// number of orders in its in-memory database (see Pebble.Orders).
var ordersLine = regexp.MustCompile(`There are now (\d+) orders in the db`)

// PebbleOptions configure one Pebble instance.
type PebbleOptions struct {
	// HTTPPort is the port Pebble's VA connects to for HTTP-01 challenges,
	// on the address its DNS server answers with. StartPebble requires it
	// (e.g. the loopback nginx port); PebbleContainers uses 80 when zero.
	HTTPPort int
	// AlwaysValid sets PEBBLE_VA_ALWAYS_VALID=1: the VA marks every
	// challenge valid without connecting anywhere.
	AlwaysValid bool
	// Profiles maps profile names to certificate lifetimes (rounded up to
	// whole seconds). Nil means {"default": 90 days}. Pebble picks a random
	// profile for an order that names none, so with more than one profile
	// clients must name one.
	Profiles map[string]time.Duration
	// AuthzReuse is PEBBLE_AUTHZREUSE: the percentage of new orders for
	// which Pebble reuses a valid authorization of the same account.
	AuthzReuse int
	// EABKeys maps external account key IDs to base64url HMAC keys (no
	// padding, as Pebble decodes them). When non-empty, new accounts must
	// carry an external account binding.
	EABKeys map[string]string
}

// Pebble is a running CA on loopback with a DNS server (pebble-challtestsrv)
// that answers every name with 127.0.0.1. Tests reach it only through
// 127.0.0.1.
type Pebble struct {
	// DirectoryURL is the ACME directory: https://127.0.0.1:<port>/dir.
	DirectoryURL string
	// RootsFile is a PEM file with the CA that signed Pebble's TLS
	// certificate: what BERTH_ACME_CA_ROOTS points to. It is not the root
	// of the certificates Pebble issues (see IssuerRoots).
	RootsFile string
	// ManagementURL is Pebble's management interface: https://127.0.0.1:<port>.
	ManagementURL string

	admin pebbleAdmin
}

// IssuerRoots returns the root that the certificates Pebble issues chain
// to. It holds no intermediate: verifying a served chain against it fails
// if the server leaves the intermediate out, as it would with a real CA.
func (p *Pebble) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	return p.admin.issuerRoots(t)
}

// Orders returns how many orders Pebble has created so far. It reads the
// count Pebble logs after storing each new order ("There are now N orders
// in the db"); newOrder requests that Pebble rejects are not counted.
func (p *Pebble) Orders(t testing.TB) int {
	t.Helper()
	return p.admin.orders(t)
}

// Revoked reports whether Pebble considers the certificate (the first one
// in certPEM) revoked. It fails the test if Pebble never issued it.
func (p *Pebble) Revoked(t testing.TB, certPEM []byte) bool {
	t.Helper()
	return p.admin.revoked(t, certPEM)
}

// SetRenewalInfo makes Pebble's ARI endpoint suggest the window [start,
// end) for the certificate (the first one in certPEM). A window in the past
// means "renew now". Pebble answers with it until it is set again.
func (p *Pebble) SetRenewalInfo(t testing.TB, certPEM []byte, start, end time.Time) {
	t.Helper()
	p.admin.setRenewalInfo(t, certPEM, start, end)
}

// SetRenewalInfoJSON makes Pebble's ARI endpoint answer with body, verbatim
// and unchecked, for the certificate (the first one in certPEM): for tests
// of malformed or empty renewal info.
func (p *Pebble) SetRenewalInfoJSON(t testing.TB, certPEM []byte, body string) {
	t.Helper()
	p.admin.setRenewalInfoJSON(t, certPEM, body)
}

// StartPebble starts Pebble and pebble-challtestsrv on loopback, waits until
// the ACME directory, the management interface and the DNS server answer,
// and stops both in t.Cleanup. Their output goes to the test log if the test
// failed. It needs only Go: the binaries are built from the module proxy
// once per machine.
func StartPebble(t testing.TB, opts PebbleOptions) *Pebble {
	t.Helper()
	if opts.HTTPPort <= 0 || opts.HTTPPort > 65535 {
		t.Fatalf("StartPebble: PebbleOptions.HTTPPort %d is not a port", opts.HTTPPort)
	}
	bins := pebbleBinaries(t)
	dir := t.TempDir()
	tls, err := writeWFECert(dir, "127.0.0.1", "localhost")
	if err != nil {
		t.Fatalf("generate Pebble's TLS certificate: %v", err)
	}
	var errs []error
	for attempt := 1; attempt <= pebbleStartAttempts; attempt++ {
		p, err := startLoopbackPebble(t, bins, dir, tls, opts)
		if err == nil {
			return p
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", attempt, err))
	}
	t.Fatalf("start Pebble: %v", errors.Join(errs...))
	return nil
}

func startLoopbackPebble(t testing.TB, bins, dir string, tls wfeCert, opts PebbleOptions) (*Pebble, error) {
	// The TLS-ALPN-01 port is only reserved: nothing listens on it.
	ports, err := freeLoopbackPorts(5)
	if err != nil {
		return nil, err
	}
	wfe, mgmt, alpn, dnsAddr, dnsMgmt := loopback(ports[0]), loopback(ports[1]), ports[2], loopback(ports[3]), loopback(ports[4])
	cfg, err := pebbleConfigJSON(opts, wfe, mgmt, opts.HTTPPort, alpn, tls.certFile, tls.keyFile)
	if err != nil {
		return nil, err
	}
	cfgFile := filepath.Join(dir, "pebble-config.json")
	if err := os.WriteFile(cfgFile, cfg, 0o644); err != nil {
		return nil, err
	}
	dns, err := startProcess("pebble-challtestsrv", filepath.Join(bins, "pebble-challtestsrv"), hostEnv(nil),
		challtestsrvArgs("127.0.0.1", dnsAddr, dnsMgmt)...)
	if err != nil {
		return nil, err
	}
	pebble, err := startProcess("pebble", filepath.Join(bins, "pebble"), hostEnv(pebbleEnv(opts)),
		"-config", cfgFile, "-dnsserver", dnsAddr)
	if err != nil {
		dns.stop()
		return nil, err
	}
	p := &Pebble{
		DirectoryURL:  "https://" + wfe + "/dir",
		RootsFile:     tls.rootsFile,
		ManagementURL: "https://" + mgmt,
		admin: newPebbleAdmin("https://"+mgmt, tls.rootsPEM, func() (string, error) {
			return pebble.out.String(), nil
		}),
	}
	alive := func() error { return errors.Join(dns.exitErr(), pebble.exitErr()) }
	err = waitUntil(pebbleStartTimeout, alive, func() error {
		return errors.Join(expectDNSAnswer(dnsAddr, "127.0.0.1"), p.admin.ready(p.DirectoryURL))
	})
	if err != nil {
		pebble.stop()
		dns.stop()
		return nil, fmt.Errorf("%w\n%s", err, dns.tail()+"\n"+pebble.tail())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Pebble on %s:\n%s\n%s", wfe, dns.tail(), pebble.tail())
		}
		pebble.stop()
		dns.stop()
		p.admin.client.CloseIdleConnections()
	})
	return p, nil
}

// challtestsrvArgs runs pebble-challtestsrv as a DNS server only: its
// challenge servers would otherwise take ports 5001-5003 and 8443.
func challtestsrvArgs(answerIP, dnsAddr, mgmtAddr string) []string {
	return []string{
		"-defaultIPv4", answerIP, "-defaultIPv6", "",
		"-dnsserver", dnsAddr, "-management", mgmtAddr,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
	}
}

// pebbleEnv fixes Pebble's randomness for stable tests: no VA sleeps, no
// rejected good nonces (default 5%), authorization reuse as asked (default
// 50%).
func pebbleEnv(opts PebbleOptions) []string {
	env := []string{
		"PEBBLE_VA_NOSLEEP=1",
		"PEBBLE_WFE_NONCEREJECT=0",
		"PEBBLE_AUTHZREUSE=" + strconv.Itoa(opts.AuthzReuse),
	}
	if opts.AlwaysValid {
		env = append(env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	return env
}

// hostEnv is this process's environment without PEBBLE_* variables (which
// would change Pebble's behaviour behind the test's back), plus extra.
func hostEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PEBBLE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// pebbleConfigJSON writes Pebble's configuration file. Issuer keys are
// ECDSA (Pebble's default is RSA, which makes every start slower).
func pebbleConfigJSON(opts PebbleOptions, listen, mgmt string, httpPort, tlsPort int, certFile, keyFile string) ([]byte, error) {
	if opts.AuthzReuse < 0 || opts.AuthzReuse > 100 {
		return nil, fmt.Errorf("PebbleOptions.AuthzReuse %d is not a percentage", opts.AuthzReuse)
	}
	type profile struct {
		Description    string `json:"description"`
		ValidityPeriod int64  `json:"validityPeriod"`
	}
	profiles := map[string]profile{}
	durations := opts.Profiles
	if durations == nil {
		durations = map[string]time.Duration{"default": defaultProfileValidity}
	}
	for name, d := range durations {
		if name == "" || d <= 0 {
			return nil, fmt.Errorf("PebbleOptions.Profiles: profile %q with lifetime %v", name, d)
		}
		secs := int64((d + time.Second - 1) / time.Second)
		profiles[name] = profile{Description: "berth test profile " + name + ": " + d.String(), ValidityPeriod: secs}
	}
	var cfg struct {
		Pebble struct {
			ListenAddress                  string             `json:"listenAddress"`
			ManagementListenAddress        string             `json:"managementListenAddress"`
			Certificate                    string             `json:"certificate"`
			PrivateKey                     string             `json:"privateKey"`
			HTTPPort                       int                `json:"httpPort"`
			TLSPort                        int                `json:"tlsPort"`
			OCSPResponderURL               string             `json:"ocspResponderURL"`
			ExternalAccountBindingRequired bool               `json:"externalAccountBindingRequired"`
			ExternalAccountMACKeys         map[string]string  `json:"externalAccountMACKeys,omitempty"`
			KeyAlgorithm                   string             `json:"keyAlgorithm"`
			RetryAfter                     map[string]int     `json:"retryAfter"`
			Profiles                       map[string]profile `json:"profiles"`
		} `json:"pebble"`
	}
	c := &cfg.Pebble
	c.ListenAddress, c.ManagementListenAddress = listen, mgmt
	c.Certificate, c.PrivateKey = certFile, keyFile
	c.HTTPPort, c.TLSPort = httpPort, tlsPort
	c.ExternalAccountBindingRequired = len(opts.EABKeys) > 0
	c.ExternalAccountMACKeys = opts.EABKeys
	c.KeyAlgorithm = "ecdsa"
	// Retry-After on polled authorizations and processing orders; lego
	// v4.35 reads neither (it polls challenges from 5 s, orders every 0.5 s).
	c.RetryAfter = map[string]int{"authz": 3, "order": 5}
	c.Profiles = profiles
	return json.MarshalIndent(cfg, "", "  ")
}

// wfeCert is the TLS certificate of Pebble's listeners, written to files.
type wfeCert struct {
	rootsPEM                     []byte
	rootsFile, certFile, keyFile string
}

// writeWFECert generates a root CA and a leaf certificate for hosts (names
// or IP addresses) signed by it, and writes wfe-roots.pem, wfe-cert.pem and
// wfe-key.pem into dir. The root's key is never written.
func writeWFECert(dir string, hosts ...string) (wfeCert, error) {
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return wfeCert{}, err
	}
	root := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "berth test Pebble WFE root " + randomSerial().Text(36)[:8]},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(wfeCertValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, rootKey.Public(), rootKey)
	if err != nil {
		return wfeCert{}, err
	}
	if root, err = x509.ParseCertificate(rootDER); err != nil {
		return wfeCert{}, err
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return wfeCert{}, err
	}
	leaf := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(wfeCertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, h)
		}
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, root, leafKey.Public(), rootKey)
	if err != nil {
		return wfeCert{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return wfeCert{}, err
	}
	c := wfeCert{
		rootsPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
		rootsFile: filepath.Join(dir, "wfe-roots.pem"),
		certFile:  filepath.Join(dir, "wfe-cert.pem"),
		keyFile:   filepath.Join(dir, "wfe-key.pem"),
	}
	files := map[string][]byte{
		c.rootsFile: c.rootsPEM,
		c.certFile:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		c.keyFile:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	for name, data := range files {
		if err := os.WriteFile(name, data, 0o644); err != nil {
			return wfeCert{}, err
		}
	}
	return c, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// pebbleBinaries returns a directory holding static pebble and
// pebble-challtestsrv binaries of pebbleVersion, building them with
// `go install module@version` (so that Pebble never enters go.mod) into a
// cache directory keyed by the Pebble and Go versions.
func pebbleBinaries(t testing.TB) string {
	t.Helper()
	goVersion, err := goEnv("GOVERSION")
	if err != nil {
		t.Fatal(err)
	}
	key := hashOf(pebbleVersion, goVersion, runtime.GOOS, runtime.GOARCH, "CGO_ENABLED=0 -trimpath")
	return memoImage(t, "pebble-binaries-"+key, func(logf logFunc) (string, error) {
		dir := filepath.Join(binCacheDir(), "pebble-"+pebbleVersion+"-"+key)
		if havePebble(dir) { // no lock needed: the directory appears by rename
			return dir, nil
		}
		return dir, withBuildLock(logf, func() error { return buildPebble(logf, dir) })
	})
}

var pebbleCommands = []string{"pebble", "pebble-challtestsrv"}

func havePebble(dir string) bool {
	for _, c := range pebbleCommands {
		if fi, err := os.Stat(filepath.Join(dir, c)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

func buildPebble(logf logFunc, dir string) error {
	if havePebble(dir) {
		return nil
	}
	partial := dir + ".partial"
	if err := os.RemoveAll(partial); err != nil {
		return err
	}
	if err := os.MkdirAll(partial, 0o755); err != nil {
		return err
	}
	start := time.Now()
	logf("building Pebble %s from the Go module proxy (once per machine)", pebbleVersion)
	args := []string{"install", "-trimpath", "-ldflags=-X main.version=" + pebbleVersion}
	for _, c := range pebbleCommands {
		args = append(args, pebbleModule+"/cmd/"+c+"@"+pebbleVersion)
	}
	env := []string{"GOBIN=" + partial, "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off"}
	if err := run(logf, nil, os.TempDir(), env, goTool(), args...); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Rename(partial, dir); err != nil {
		return err
	}
	logf("built Pebble %s in %v", pebbleVersion, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// binCacheDir is cacheDir when this process may write there (it is under
// /var/cache, which needs root), else the user's cache directory: the
// loopback Pebble needs nothing else that root would give.
func binCacheDir() string {
	dir := cacheDir()
	if err := os.MkdirAll(dir, 0o755); err == nil && syscall.Access(dir, 2 /* W_OK */) == nil {
		return dir
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "berth-testenv")
	}
	return filepath.Join(os.TempDir(), "berth-testenv-cache")
}

// process is a child process whose output is kept in memory.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error // set before done is closed
}

func startProcess(name, bin string, env []string, args ...string) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// Killed with the test binary, even when it dies without cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exitErr returns an error if the process has exited.
func (p *process) exitErr() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v", p.name, p.err)
	default:
		return nil
	}
}

func (p *process) stop() {
	p.cmd.Process.Kill() // fails only if it has exited already
	<-p.done
}

func (p *process) tail() string {
	return p.name + " output (last lines):\n" + lastLines(p.out.String(), tailLines)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freeLoopbackPorts returns n distinct TCP ports that were free on
// 127.0.0.1 a moment ago.
func freeLoopbackPorts(n int) ([]int, error) {
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// waitUntil polls cond until it returns nil. It gives up when alive returns
// an error (a process or container died) or after timeout, returning cond's
// last error.
func waitUntil(timeout time.Duration, alive, cond func() error) error {
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if dead := alive(); dead != nil {
			return fmt.Errorf("%w (last check: %v)", dead, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v: %w", timeout, err)
		}
		<-ticker.C
	}
}

// expectDNSAnswer asks the DNS server at addr over TCP (as Pebble's VA
// does) for an arbitrary name, and wants exactly the address want.
func expectDNSAnswer(addr, want string) error {
	r := &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ips, err := r.LookupIPAddr(ctx, "probe.berth.test.")
	if err != nil {
		return fmt.Errorf("DNS server %s: %w", addr, err)
	}
	if len(ips) != 1 || ips[0].IP.String() != want {
		return fmt.Errorf("DNS server %s answers %v, want only %s", addr, ips, want)
	}
	return nil
}

// pebbleAdmin talks to Pebble's management interface and reads its log.
type pebbleAdmin struct {
	mgmtURL string
	client  *http.Client
	output  func() (string, error)
}

func newPebbleAdmin(mgmtURL string, rootsPEM []byte, output func() (string, error)) pebbleAdmin {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootsPEM)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil // only ever 127.0.0.1
	transport.TLSClientConfig.RootCAs = pool
	return pebbleAdmin{
		mgmtURL: mgmtURL,
		client:  &http.Client{Transport: transport, Timeout: 10 * time.Second},
		output:  output,
	}
}

// do sends a request and returns the body of a response with status want.
func (a *pebbleAdmin) do(method, url string, body []byte, want int) ([]byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "berth-testenv") // Pebble rejects requests without one
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	if resp.StatusCode != want {
		return data, fmt.Errorf("%s %s: status %d, want %d: %s", method, url, resp.StatusCode, want, bytes.TrimSpace(data))
	}
	return data, nil
}

func (a *pebbleAdmin) ready(directoryURL string) error {
	dir, err := a.do("GET", directoryURL, nil, http.StatusOK)
	if err != nil {
		return err
	}
	if !bytes.Contains(dir, []byte(`"newOrder"`)) {
		return fmt.Errorf("GET %s: no newOrder in %s", directoryURL, dir)
	}
	_, err = a.do("GET", a.mgmtURL+"/roots/0", nil, http.StatusOK)
	return err
}

func (a *pebbleAdmin) issuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	data, err := a.do("GET", a.mgmtURL+"/roots/0", nil, http.StatusOK)
	if err != nil {
		t.Fatalf("Pebble's issuer root: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("Pebble's issuer root: no certificate in %q", data)
	}
	return pool
}

func (a *pebbleAdmin) orders(t testing.TB) int {
	t.Helper()
	out, err := a.output()
	if err != nil {
		t.Fatalf("read Pebble's log: %v", err)
	}
	matches := ordersLine.FindAllStringSubmatch(out, -1)
	if len(matches) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(matches[len(matches)-1][1])
	return n
}

func (a *pebbleAdmin) revoked(t testing.TB, certPEM []byte) bool {
	t.Helper()
	cert := firstCertificate(t, certPEM)
	url := a.mgmtURL + "/cert-status-by-serial/" + cert.SerialNumber.Text(16)
	data, err := a.do("GET", url, nil, http.StatusOK)
	if err != nil {
		t.Fatalf("certificate status in Pebble (did Pebble issue %s?): %v", cert.Subject, err)
	}
	var status struct{ Status string }
	if err := json.Unmarshal(data, &status); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, data)
	}
	switch status.Status {
	case "Revoked":
		return true
	case "Valid":
		return false
	}
	t.Fatalf("GET %s: unknown status %q", url, status.Status)
	return false
}

func (a *pebbleAdmin) setRenewalInfo(t testing.TB, certPEM []byte, start, end time.Time) {
	t.Helper()
	type window struct {
		Start time.Time `json:"start"`
		End   time.Time `json:"end"`
	}
	body, err := json.Marshal(struct {
		SuggestedWindow window `json:"suggestedWindow"`
	}{window{start.UTC(), end.UTC()}})
	if err != nil {
		t.Fatal(err)
	}
	a.setRenewalInfoJSON(t, certPEM, string(body))
}

func (a *pebbleAdmin) setRenewalInfoJSON(t testing.TB, certPEM []byte, body string) {
	t.Helper()
	cert := firstCertificate(t, certPEM)
	req, err := json.Marshal(map[string]string{
		"certificate": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		"ariResponse": body,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The trailing slash matters: without it Pebble redirects, and the POST
	// becomes a GET.
	if _, err := a.do("POST", a.mgmtURL+"/set-renewal-info/", req, http.StatusOK); err != nil {
		t.Fatalf("set renewal info in Pebble: %v", err)
	}
}

func firstCertificate(t testing.TB, certPEM []byte) *x509.Certificate {
	t.Helper()
	for rest := certPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			t.Fatalf("no CERTIFICATE block in %q", certPEM)
		}
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatalf("parse certificate: %v", err)
			}
			return cert
		}
	}
}

// PebbleInContainers is Pebble with its DNS server (pebble-challtestsrv),
// each in a container on a test's Docker network. Containers on that network
// reach the CA at DirectoryURL; the host reaches the published ports on
// 127.0.0.1.
type PebbleInContainers struct {
	// DirectoryURL is the ACME directory for containers on the network:
	// https://<Name>:14000/dir.
	DirectoryURL string
	// RootsPEM is the CA that signed Pebble's TLS certificate (valid for
	// Name, localhost and 127.0.0.1); RootsFile holds it on the host.
	RootsPEM  []byte
	RootsFile string
	// Name is the Pebble container's name (and host name on the network);
	// its DNS server is Name+"-dns".
	Name string
	// ManagementURL is Pebble's management interface, published on the
	// host: https://127.0.0.1:<port>.
	ManagementURL string
	// HostDirectoryURL is the ACME directory published on the host.
	HostDirectoryURL string

	dnsAddr    string // DNS (TCP) published on the host
	dnsMgmtURL string // pebble-challtestsrv's management interface on the host
	admin      pebbleAdmin
}

// IssuerRoots is Pebble.IssuerRoots.
func (p *PebbleInContainers) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	return p.admin.issuerRoots(t)
}

// Orders is Pebble.Orders, read from the container's log.
func (p *PebbleInContainers) Orders(t testing.TB) int {
	t.Helper()
	return p.admin.orders(t)
}

// Revoked is Pebble.Revoked.
func (p *PebbleInContainers) Revoked(t testing.TB, certPEM []byte) bool {
	t.Helper()
	return p.admin.revoked(t, certPEM)
}

// SetRenewalInfo is Pebble.SetRenewalInfo.
func (p *PebbleInContainers) SetRenewalInfo(t testing.TB, certPEM []byte, start, end time.Time) {
	t.Helper()
	p.admin.setRenewalInfo(t, certPEM, start, end)
}

// SetRenewalInfoJSON is Pebble.SetRenewalInfoJSON.
func (p *PebbleInContainers) SetRenewalInfoJSON(t testing.TB, certPEM []byte, body string) {
	t.Helper()
	p.admin.setRenewalInfoJSON(t, certPEM, body)
}

// SetAnswerIP makes the DNS server answer every A query with ip from now
// on, e.g. after the nginx container was recreated with a new address.
func (p *PebbleInContainers) SetAnswerIP(t testing.TB, ip string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"ip": ip})
	if _, err := p.admin.do("POST", p.dnsMgmtURL+"/set-default-ipv4", body, http.StatusOK); err != nil {
		t.Fatalf("set the DNS answer: %v", err)
	}
	if err := expectDNSAnswer(p.dnsAddr, ip); err != nil {
		t.Fatal(err)
	}
}

// PebbleContainers starts Pebble and pebble-challtestsrv as containers
// (from a FROM scratch image built locally from the static binaries) on the
// Docker network named network. The DNS server answers every A query with
// answerIP (e.g. the nginx container's address on network), so Pebble's VA
// connects there on port 80 (opts.HTTPPort if set) for HTTP-01. It waits
// until the CA and the DNS server answer, and removes both containers in
// t.Cleanup, logging their output first if the test failed.
func PebbleContainers(t testing.TB, network, answerIP string, opts PebbleOptions) *PebbleInContainers {
	t.Helper()
	RequireDocker(t)
	if ip := net.ParseIP(answerIP); ip == nil || ip.To4() == nil {
		t.Fatalf("PebbleContainers: answerIP %q is not an IPv4 address", answerIP)
	}
	httpPort := opts.HTTPPort
	if httpPort == 0 {
		httpPort = 80
	}
	img := pebbleImage(t)
	name := fmt.Sprintf("berth-test-pebble-%x", time.Now().UnixNano())
	dnsName := name + "-dns"
	dir := t.TempDir()
	tls, err := writeWFECert(dir, name, "localhost", "127.0.0.1")
	if err != nil {
		t.Fatalf("generate Pebble's TLS certificate: %v", err)
	}
	inContainer := func(file string) string { return pebbleConfigDir + "/" + filepath.Base(file) }
	cfg, err := pebbleConfigJSON(opts, fmt.Sprintf(":%d", pebbleWFEPort), fmt.Sprintf(":%d", pebbleMgmtPort),
		httpPort, 443, inContainer(tls.certFile), inContainer(tls.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pebble-config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Pebble containers:\n%s\n%s", containerTail(dnsName), containerTail(name))
		}
		TryDocker("rm", "-f", "-v", name, dnsName)
	})

	args := append([]string{"run", "-d", "--name", dnsName, "--network", network}, LabelArgs()...)
	args = append(args, "-p", fmt.Sprintf("127.0.0.1::%d/tcp", challDNSPort), "-p", fmt.Sprintf("127.0.0.1::%d/tcp", challMgmtPort),
		img, "/pebble-challtestsrv")
	Docker(t, append(args, challtestsrvArgs(answerIP, fmt.Sprintf(":%d", challDNSPort), fmt.Sprintf(":%d", challMgmtPort))...)...)
	dnsIP := Docker(t, "inspect", "--format", `{{(index .NetworkSettings.Networks "`+network+`").IPAddress}}`, dnsName)
	if net.ParseIP(dnsIP) == nil {
		t.Fatalf("address of %s on network %s: %q", dnsName, network, dnsIP)
	}

	args = append([]string{"create", "--name", name, "--network", network}, LabelArgs()...)
	args = append(args, "-p", fmt.Sprintf("127.0.0.1::%d/tcp", pebbleWFEPort), "-p", fmt.Sprintf("127.0.0.1::%d/tcp", pebbleMgmtPort))
	for _, kv := range pebbleEnv(opts) {
		args = append(args, "-e", kv)
	}
	args = append(args, img, "/pebble", "-config", pebbleConfigDir+"/pebble-config.json",
		"-dnsserver", net.JoinHostPort(dnsIP, strconv.Itoa(challDNSPort)))
	Docker(t, args...)
	Docker(t, "cp", dir+"/.", name+":"+pebbleConfigDir) // scratch has no shell to write files with
	Docker(t, "start", name)

	p := &PebbleInContainers{
		DirectoryURL:     fmt.Sprintf("https://%s:%d/dir", name, pebbleWFEPort),
		RootsPEM:         tls.rootsPEM,
		RootsFile:        tls.rootsFile,
		Name:             name,
		ManagementURL:    "https://" + publishedAddr(t, name, pebbleMgmtPort),
		HostDirectoryURL: "https://" + publishedAddr(t, name, pebbleWFEPort) + "/dir",
		dnsAddr:          publishedAddr(t, dnsName, challDNSPort),
		dnsMgmtURL:       "http://" + publishedAddr(t, dnsName, challMgmtPort),
	}
	p.admin = newPebbleAdmin(p.ManagementURL, tls.rootsPEM, func() (string, error) { return containerLogs(name) })
	alive := func() error { return containersRunning(name, dnsName) }
	err = waitUntil(pebbleStartTimeout, alive, func() error {
		return errors.Join(expectDNSAnswer(p.dnsAddr, answerIP), p.admin.ready(p.HostDirectoryURL))
	})
	if err != nil {
		t.Fatalf("start Pebble containers: %v", err)
	}
	return p
}

// pebbleImage returns a FROM scratch image holding /pebble and
// /pebble-challtestsrv, tagged by a hash of the binaries.
func pebbleImage(t testing.TB) string {
	t.Helper()
	RequireDocker(t)
	bins := pebbleBinaries(t)
	return memoImage(t, "pebble-image-"+bins, func(logf logFunc) (string, error) {
		key, err := hashFiles(bins, pebbleCommands, imageVersion, pebbleDockerfile)
		if err != nil {
			return "", err
		}
		ref := "berth-test-pebble:" + key
		if imageExists(ref) { // skip the build lock, which a debootstrap may hold for a minute
			return ref, nil
		}
		return buildIfMissing(logf, ref, func() error {
			if err := buildPebbleImage(logf, bins, ref); err != nil {
				return err
			}
			pruneReplaced(logf, "berth-test-pebble", ref)
			return nil
		})
	})
}

func buildPebbleImage(logf logFunc, bins, ref string) error {
	ctx, err := os.MkdirTemp("", "berth-pebble-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ctx)
	for _, c := range pebbleCommands {
		if err := copyFile(filepath.Join(bins, c), filepath.Join(ctx, c)); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(pebbleDockerfile), 0o644); err != nil {
		return err
	}
	return run(logf, nil, ctx, []string{"DOCKER_BUILDKIT=0"}, "docker", "build",
		"--force-rm", "--label", imageLabel, "-t", ref, ".")
}

// publishedAddr returns the 127.0.0.1:port that the container's TCP port is
// published on.
func publishedAddr(t testing.TB, container string, port int) string {
	t.Helper()
	out := Docker(t, "port", container, fmt.Sprintf("%d/tcp", port))
	addr := strings.TrimSpace(strings.Split(out, "\n")[0])
	if host, _, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" {
		t.Fatalf("port %d of %s is published on %q, want 127.0.0.1", port, container, out)
	}
	return addr
}

func containersRunning(names ...string) error {
	for _, name := range names {
		state, err := TryDocker("inspect", "--format", "{{.State.Status}} (exit code {{.State.ExitCode}})", name)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(state, "running ") {
			return fmt.Errorf("container %s is %s", name, state)
		}
	}
	return nil
}

// containerLogs returns what the container wrote to stdout and stderr.
func containerLogs(name string) (string, error) {
	out, err := exec.Command("docker", "logs", name).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("docker logs %s: %w: %s", name, err, out)
	}
	return string(out), nil
}

func containerTail(name string) string {
	out, err := containerLogs(name)
	if err != nil {
		return err.Error()
	}
	return name + " output (last lines):\n" + lastLines(out, tailLines)
}
