package testenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Pebble, Let's Encrypt's test CA, runs either as two processes on loopback
// (StartPebble) or as two containers on a test's Docker network
// (PebbleContainers): pebble itself, and pebble-challtestsrv as the DNS
// server its VA asks, answering every A query with one address and no AAAA
// query at all (Pebble dials IPv6 first). Both are built once per machine
// from the Go module proxy as static binaries; the containers run them in a
// FROM scratch image. For DNS-01, PebbleContainers can ask a real DNS
// server instead (PebbleOptions.DNSServer, e.g. StartBIND's).

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
	// DNSServer ("ip:port") is the DNS server Pebble's VA asks for every
	// lookup (DNS-01 TXT records and HTTP-01 addresses alike), e.g. a BIND
	// on the same network: PebbleContainers then starts no
	// pebble-challtestsrv, so its answerIP is not used and SetAnswerIP
	// fails. StartPebble does not support it.
	DNSServer string
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

	// pebbleAdmin gives IssuerRoots, Orders, Revoked and SetRenewalInfo*.
	pebbleAdmin
}

// StartPebble starts Pebble and pebble-challtestsrv on loopback, waits until
// the ACME directory, the management interface and the DNS server answer,
// and stops both in t.Cleanup. Their output goes to the test log if the test
// failed. It needs only Go: the binaries are built from the module proxy
// once per machine.
func StartPebble(t testing.TB, opts PebbleOptions) *Pebble {
	t.Helper()
	SkipShort(t, "runs Pebble")
	if opts.HTTPPort <= 0 || opts.HTTPPort > 65535 {
		t.Fatalf("StartPebble: PebbleOptions.HTTPPort %d is not a port", opts.HTTPPort)
	}
	if opts.DNSServer != "" {
		t.Fatalf("StartPebble: PebbleOptions.DNSServer is for PebbleContainers")
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
		pebbleAdmin: newPebbleAdmin("https://"+mgmt, tls.rootsPEM, func() (string, error) {
			return pebble.out.String(), nil
		}),
	}
	alive := func() error { return errors.Join(dns.exitErr(), pebble.exitErr()) }
	err = waitUntil(pebbleStartTimeout, alive, func() error {
		return errors.Join(expectDNSAnswer(dnsAddr, "127.0.0.1"), p.pebbleAdmin.ready(p.DirectoryURL))
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
		p.pebbleAdmin.client.CloseIdleConnections()
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
