package acme

// This is the only file that imports lego, so the ACME client can be
// swapped behind the Issuer interface.

import (
	"cmp"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/lego"
	legolog "github.com/go-acme/lego/v4/log"
	"github.com/go-acme/lego/v4/registration"
	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/internal/atomicfile"
)

// CA directory shortcuts accepted by BERTH_ACME_CA.
var caShortcuts = map[string]string{
	"letsencrypt":         lego.LEDirectoryProduction,
	"letsencrypt-staging": lego.LEDirectoryStaging,
}

// DirectoryURL resolves a BERTH_ACME_CA value to a directory URL.
func DirectoryURL(ca string) string {
	if u, ok := caShortcuts[ca]; ok {
		return u
	}
	return ca
}

// Key types accepted by BERTH_ACME_KEY_TYPE.
var keyTypes = map[string]certcrypto.KeyType{
	"ec256": certcrypto.EC256, "ec384": certcrypto.EC384,
	"rsa2048": certcrypto.RSA2048, "rsa3072": certcrypto.RSA3072, "rsa4096": certcrypto.RSA4096,
}

// AccountConfig says which CA to use and as whom.
type AccountConfig struct {
	CA       string              // directory URL or shortcut
	Email    string              // optional contact
	Roots    []*x509.Certificate // extra roots for the CA's TLS, on top of the system's
	EABKID   string              // External Account Binding, for CAs that need it
	EABHMAC  string
	KeyType  string // certificate key type; "" is ec256
	Profile  string // ACME profile; "" lets the CA choose
	StateDir string // account key and registration live here
	Webroot  string // HTTP-01 tokens are written here
	// HTTP01, when set, serves HTTP-01 tokens instead of the webroot: a
	// Swarm manager hands them to every node's agent.
	HTTP01 ChallengeWriter
	// DNS answers DNS-01 challenges; nil when no DNS provider is configured.
	DNS *DNSSolver
	// Log receives lego's own progress lines at debug level; nil drops them.
	Log *logrus.Entry
}

// legoLogOnce routes lego's package-level logger once per process.
var legoLogOnce sync.Once

func routeLegoLog(l *logrus.Entry) {
	legoLogOnce.Do(func() {
		w := io.Discard
		if l != nil {
			w = l.WithField("component", "lego").WriterLevel(logrus.DebugLevel)
		}
		legolog.Logger = stdlog.New(w, "", 0)
	})
}

// DNSSolver answers DNS-01 challenges through one of lego's DNS providers,
// run by the berth-dns helper program (dnshelper.go) and configured once at
// start from that provider's own environment variables. A provider that
// cannot be configured (unknown name, missing variables, no helper) is kept
// as its error: every DNS-01 order then fails with it, through the normal
// failure path and backoff, while HTTP-01 orders go on.
type DNSSolver struct {
	provider  challenge.Provider
	resolvers []string
	err       error
}

// NewDNSSolver configures lego's DNS provider name (BERTH_ACME_DNS_PROVIDER)
// through the helper program at helper (BERTH_ACME_DNS_HELPER) and the
// resolvers, host:port, through which propagation is checked
// (BERTH_ACME_DNS_RESOLVERS; empty: the system's). It returns nil for "".
func NewDNSSolver(name string, resolvers []string, helper string) *DNSSolver {
	if name == "" {
		return nil
	}
	p, err := checkHelper(helper, name)
	if err != nil {
		return &DNSSolver{err: err}
	}
	return &DNSSolver{provider: p, resolvers: resolvers}
}

// options say where propagation is checked. With resolvers named, lego
// waits until they answer the TXT record and asks no one else: the zone's
// authoritative servers are often reachable only through them (split DNS,
// a server on a private network), and lego would look those up by name
// through the system's resolver. Without, lego asks the zone's
// authoritative servers, as its own CLI does.
func (d *DNSSolver) options() []dns01.ChallengeOption {
	if len(d.resolvers) == 0 {
		return nil
	}
	return []dns01.ChallengeOption{dns01.AddRecursiveNameservers(d.resolvers),
		dns01.RecursiveNSsPropagationRequirement(), dns01.DisableAuthoritativeNssPropagationRequirement()}
}

// Err says why the DNS provider cannot be used, or nil.
func (d *DNSSolver) Err() error {
	if d == nil {
		return errNoDNSProvider
	}
	return d.err
}

var errNoDNSProvider = errors.New("DNS-01 needs a DNS provider: set BERTH_ACME_DNS_PROVIDER and that provider's variables")

// LegoIssuer implements Issuer with lego. lego's client has one set of
// challenge solvers and picks, per authorization, the first the CA offers
// that it has a solver for; so HTTP-01 and DNS-01 orders go through two
// clients that share the account, each with one solver, and every order
// is validated the way it asked.
type LegoIssuer struct {
	client    *lego.Client // HTTP-01 only
	dnsClient *lego.Client // DNS-01 only; nil when dnsErr says why
	dnsErr    error
	profile   string
	keyType   certcrypto.KeyType
}

type account struct {
	Email        string                 `json:"email"`
	Registration *registration.Resource `json:"registration"`
	key          crypto.PrivateKey
}

func (a *account) GetEmail() string                        { return a.Email }
func (a *account) GetRegistration() *registration.Resource { return a.Registration }
func (a *account) GetPrivateKey() crypto.PrivateKey        { return a.key }

// NewLegoIssuer loads (or creates and registers) the account for the CA.
// An account the CA no longer knows is registered again with the same key.
func NewLegoIssuer(ctx context.Context, cfg AccountConfig) (*LegoIssuer, error) {
	kt := certcrypto.EC256
	if cfg.KeyType != "" {
		var ok bool
		if kt, ok = keyTypes[cfg.KeyType]; !ok {
			return nil, fmt.Errorf("BERTH_ACME_KEY_TYPE %q: want ec256, ec384, rsa2048, rsa3072 or rsa4096", cfg.KeyType)
		}
	}
	routeLegoLog(cfg.Log)
	dirURL := DirectoryURL(cfg.CA)
	accDir := filepath.Join(cfg.StateDir, "accounts", accountDirName(dirURL))
	acc, err := loadAccount(accDir, cfg.Email, cfg.Log)
	if err != nil {
		return nil, err
	}
	bare := func() (*lego.Client, error) {
		lc := lego.NewConfig(acc)
		lc.CADirURL = dirURL
		lc.UserAgent = "berth"
		lc.HTTPClient = newHTTPClient(cfg.Roots)
		lc.Certificate.KeyType = kt
		client, err := lego.NewClient(lc)
		if err != nil {
			return nil, fmt.Errorf("ACME directory %s: %w", dirURL, err)
		}
		return client, nil
	}
	newClient := func() (*lego.Client, error) {
		client, err := bare()
		if err != nil {
			return nil, err
		}
		return client, client.Challenge.SetHTTP01Provider(httpProvider(cfg))
	}
	client, err := newClient()
	if err != nil {
		return nil, err
	}
	if acc.Registration != nil && !accountKnown(client) {
		// The CA forgot the account: register the same key again, with a
		// client that signs with the key rather than the stale account URL.
		acc.Registration = nil
		if client, err = newClient(); err != nil {
			return nil, err
		}
	}
	if acc.Registration == nil {
		if err := register(client, acc, cfg); err != nil {
			return nil, err
		}
	}
	if err := saveAccount(accDir, acc); err != nil {
		return nil, err
	}
	l := &LegoIssuer{client: client, profile: cfg.Profile, keyType: kt, dnsErr: cfg.DNS.Err()}
	if l.dnsErr == nil {
		if l.dnsClient, err = bare(); err != nil {
			return nil, err
		}
		err = l.dnsClient.Challenge.SetDNS01Provider(cfg.DNS.provider, cfg.DNS.options()...)
		if err != nil {
			return nil, fmt.Errorf("DNS-01 solver: %w", err)
		}
	}
	return l, nil
}

// accountDirName keeps accounts of different CAs apart.
func accountDirName(dirURL string) string {
	sum := sha256.Sum256([]byte(dirURL))
	return hex.EncodeToString(sum[:8])
}

// loadAccount reads the account key and registration. A corrupt key is
// moved aside with its registration and a new key is made (a new account
// is registered); a corrupt registration is moved aside and the key is
// registered again (the CA returns the same account). Either way berth
// starts.
func loadAccount(dir, email string, log *logrus.Entry) (*account, error) {
	acc := &account{Email: email}
	keyFile, regFile := filepath.Join(dir, "key.pem"), filepath.Join(dir, "account.json")
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("account key: %w", err)
	}
	if err == nil {
		if acc.key, err = certcrypto.ParsePEMPrivateKey(keyPEM); err != nil {
			setAside(log, keyFile, err, "a new ACME account key is made and registered")
			if _, err := os.Stat(regFile); err == nil {
				setAside(log, regFile, errors.New("registration of an unreadable key"), "it is replaced by the new registration")
			}
		}
	}
	if acc.key == nil {
		if acc.key, err = certcrypto.GeneratePrivateKey(certcrypto.EC256); err != nil {
			return nil, err
		}
		return acc, nil
	}
	if raw, err := os.ReadFile(regFile); err == nil {
		var stored account
		if err := json.Unmarshal(raw, &stored); err != nil {
			setAside(log, regFile, err, "the account key is registered again")
		} else if stored.Email == email {
			acc.Registration = stored.Registration
		}
	}
	return acc, nil
}

func saveAccount(dir string, acc *account) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("account dir: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, "key.pem"), certcrypto.PEMEncode(acc.key), 0o600); err != nil {
		return fmt.Errorf("account key: %w", err)
	}
	raw, _ := json.MarshalIndent(acc, "", "  ")
	return atomicfile.Write(filepath.Join(dir, "account.json"), raw, 0o600)
}

// accountKnown asks the CA whether the stored account still exists. Any
// answer but "accountDoesNotExist" counts as known, so a CA hiccup at start
// never makes berth register a second account.
func accountKnown(client *lego.Client) bool {
	_, err := client.Registration.QueryRegistration()
	var pd *legoacme.ProblemDetails
	return err == nil || !errors.As(err, &pd) || pd.Type != "urn:ietf:params:acme:error:accountDoesNotExist"
}

func register(client *lego.Client, acc *account, cfg AccountConfig) error {
	var res *registration.Resource
	var err error
	if cfg.EABKID != "" {
		res, err = client.Registration.RegisterWithExternalAccountBinding(registration.RegisterEABOptions{
			TermsOfServiceAgreed: true, Kid: cfg.EABKID, HmacEncoded: cfg.EABHMAC})
	} else {
		res, err = client.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true})
	}
	if err != nil {
		return fmt.Errorf("ACME account registration: %w", err)
	}
	acc.Registration = res
	return nil
}

// newHTTPClient gives lego a client of its own (lego rewrites the
// transport it is handed) trusting the system roots plus extra roots.
func newHTTPClient(extra []*x509.Certificate) *http.Client {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, c := range extra {
		pool.AddCert(c)
	}
	return &http.Client{
		Timeout: 2 * time.Minute,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout: 15 * time.Second,
			TLSClientConfig:     &tls.Config{RootCAs: pool},
			ForceAttemptHTTP2:   true,
		},
	}
}

// Obtain orders a certificate for names with a fresh key, by DNS-01 when
// opts ask for it or a name is a wildcard, else by HTTP-01. opts.Replaces,
// when set, is the certificate being renewed: the order names it (ARI).
func (l *LegoIssuer) Obtain(ctx context.Context, names []string, opts OrderOptions) (Issued, error) {
	client := l.client
	if challengeOf(names, opts.Challenge) == ChallengeDNS01 {
		if l.dnsErr != nil {
			return Issued{}, &OrderError{Err: l.dnsErr, Failed: slices.Clone(names)}
		}
		client = l.dnsClient
	}
	key, err := certcrypto.GeneratePrivateKey(l.keyType)
	if err != nil {
		return Issued{}, err
	}
	profile := cmp.Or(opts.Profile, l.profile)
	req := certificate.ObtainRequest{Domains: names, PrivateKey: key, Bundle: true, Profile: profile}
	if opts.Replaces != nil {
		if req.ReplacesCertID, err = certificate.MakeARICertID(opts.Replaces); err != nil {
			req.ReplacesCertID = ""
		}
	}
	type result struct {
		res *certificate.Resource
		err error
	}
	done := make(chan result, 1)
	go func() { // lego's Obtain takes no context
		res, err := client.Certificate.Obtain(req)
		done <- result{res, err}
	}()
	select {
	case <-ctx.Done():
		return Issued{}, ctx.Err()
	case r := <-done:
		if r.err != nil {
			return Issued{}, classify(r.err, names)
		}
		return Issued{ChainPEM: r.res.Certificate, KeyPEM: r.res.PrivateKey, CertURL: r.res.CertURL, Profile: profile}, nil
	}
}

// classify turns a lego error into an *OrderError naming the failed names
// and the CA's Retry-After.
func classify(err error, names []string) error {
	oe := &OrderError{Err: err}
	var rl *legoacme.RateLimitedError
	if errors.As(err, &rl) {
		oe.RateLimited = true
		oe.RetryAfter = parseRetryAfter(rl.RetryAfter, time.Now())
	}
	oe.Failed = failedNames(err)
	return oe
}

// failedNames reads the per-domain failures lego reports. lego keeps them
// in an unexported map type keyed by domain; the keys are read by
// reflection, and the message's "[domain]" lines are the fallback.
func failedNames(err error) []string {
	var out []string
	walk(err, func(e error) {
		v := reflect.ValueOf(e)
		if v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String {
			for _, k := range v.MapKeys() {
				out = append(out, k.String())
			}
		}
	})
	if len(out) == 0 {
		for _, m := range domainLine.FindAllStringSubmatch(err.Error(), -1) {
			out = append(out, m[1])
		}
	}
	return out
}

var domainLine = regexp.MustCompile(`(?m)^\[([a-z0-9.*-]+)\] `)

func walk(err error, fn func(error)) {
	if err == nil {
		return
	}
	fn(err)
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			walk(e, fn)
		}
	case interface{ Unwrap() error }:
		walk(u.Unwrap(), fn)
	}
}

// parseRetryAfter reads a Retry-After header value: seconds or a date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// RenewalInfo asks the CA for its renewal window (ARI). It returns nil
// when the CA offers none.
func (l *LegoIssuer) RenewalInfo(ctx context.Context, leaf *x509.Certificate) (*Window, error) {
	info, err := l.client.Certificate.GetRenewalInfo(certificate.RenewalInfoRequest{Cert: leaf})
	if errors.Is(err, api.ErrNoARI) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("renewal info: %w", err)
	}
	return &Window{Start: info.SuggestedWindow.Start, End: info.SuggestedWindow.End}, nil
}

// Revoke revokes a certificate at the CA.
func (l *LegoIssuer) Revoke(ctx context.Context, chainPEM []byte) error {
	if err := l.client.Certificate.Revoke(chainPEM); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	return nil
}

// ChallengeWriter serves and withdraws HTTP-01 tokens (lego's
// challenge.Provider, by its method set).
type ChallengeWriter interface {
	Present(domain, token, keyAuth string) error
	CleanUp(domain, token, keyAuth string) error
}

func httpProvider(cfg AccountConfig) ChallengeWriter {
	if cfg.HTTP01 != nil {
		return cfg.HTTP01
	}
	return webrootProvider{dir: cfg.Webroot}
}

// webrootProvider answers HTTP-01 from the shared webroot. Unlike lego's
// own, it sets the modes explicitly: under umask 077 nginx (another user)
// could not read the token and validation would fail.
type webrootProvider struct{ dir string }

func (w webrootProvider) path(token string) string {
	return filepath.Join(w.dir, ".well-known", "acme-challenge", filepath.Base(token))
}

func (w webrootProvider) Present(domain, token, keyAuth string) error {
	dir := filepath.Dir(w.path(token))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("webroot: %w", err)
	}
	for d := dir; d != filepath.Dir(w.dir) && d != "/"; d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	return atomicfile.Write(w.path(token), []byte(keyAuth), 0o644)
}

func (w webrootProvider) CleanUp(domain, token, keyAuth string) error {
	if err := os.Remove(w.path(token)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// ParseRoots reads a PEM file of extra roots (BERTH_ACME_CA_ROOTS).
func ParseRoots(file string) ([]*x509.Certificate, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("BERTH_ACME_CA_ROOTS: %w", err)
	}
	var roots []*x509.Certificate
	for block, rest := pem.Decode(raw); block != nil; block, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("BERTH_ACME_CA_ROOTS %s: %w", file, err)
		}
		roots = append(roots, c)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("BERTH_ACME_CA_ROOTS %s: no PEM certificates", file)
	}
	return roots, nil
}

// LazyIssuer connects to the CA on first use, so berth never contacts a
// CA (or registers an account) until some host needs a certificate, and a
// CA that is down at start-up only delays orders.
type LazyIssuer struct {
	Config AccountConfig
	mu     sync.Mutex
	issuer *LegoIssuer
}

func (l *LazyIssuer) get(ctx context.Context) (*LegoIssuer, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.issuer != nil {
		return l.issuer, nil
	}
	is, err := NewLegoIssuer(ctx, l.Config)
	if err != nil {
		return nil, err
	}
	l.issuer = is
	return is, nil
}

// Obtain implements Issuer.
func (l *LazyIssuer) Obtain(ctx context.Context, names []string, opts OrderOptions) (Issued, error) {
	is, err := l.get(ctx)
	if err != nil {
		return Issued{}, classify(err, names)
	}
	return is.Obtain(ctx, names, opts)
}

// RenewalInfo implements Issuer.
func (l *LazyIssuer) RenewalInfo(ctx context.Context, leaf *x509.Certificate) (*Window, error) {
	is, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return is.RenewalInfo(ctx, leaf)
}

// Revoke implements Issuer.
func (l *LazyIssuer) Revoke(ctx context.Context, chainPEM []byte) error {
	is, err := l.get(ctx)
	if err != nil {
		return err
	}
	return is.Revoke(ctx, chainPEM)
}
