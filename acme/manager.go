package acme

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/internal/atomicfile"
)

// Issuer is the narrow view of an ACME CA that the manager needs.
type Issuer interface {
	// Obtain orders a certificate for names, as opts say.
	Obtain(ctx context.Context, names []string, opts OrderOptions) (Issued, error)
	// RenewalInfo returns the CA's suggested window, or nil without ARI.
	RenewalInfo(ctx context.Context, leaf *x509.Certificate) (*Window, error)
	// Revoke revokes a certificate.
	Revoke(ctx context.Context, chainPEM []byte) error
}

// OrderOptions say how one order is placed.
type OrderOptions struct {
	Replaces  *x509.Certificate // the certificate a renewal replaces (ARI), or nil
	Challenge string            // ChallengeHTTP01 ("" too) or ChallengeDNS01; wildcards always use DNS-01
	Profile   string            // ACME profile; "" = the issuer's default
}

// Prober fetches path from nginx with the given Host header and returns
// the body: the self-check that the challenge path reaches the webroot.
type Prober interface {
	Probe(ctx context.Context, host, path string) (string, error)
}

// ProbeFunc adapts a function to Prober.
type ProbeFunc func(ctx context.Context, host, path string) (string, error)

// Probe implements Prober.
func (f ProbeFunc) Probe(ctx context.Context, host, path string) (string, error) {
	return f(ctx, host, path)
}

// Paths are the files of ONE immutable certificate version, as nginx sees
// them. A renewal changes them, so the config that names them changes and
// nginx reloads.
type Paths struct {
	Chain, Key string // <Dir>/.berth/<name>/<version>/fullchain.pem and privkey.pem
	Serial     string // leaf serial number, lower-case hex
	Name       string // the certificate's name (its first host; a user certificate's file)
}

// Options configure a Manager.
type Options struct {
	Store       Store
	Issuer      Issuer
	Webroot     string
	StateDir    string
	Probe       Prober // nil skips the self-check
	Log         *logrus.Entry
	Concurrency int // parallel orders; default 3
	// UserDir is the read-only directory of the user's own certificates
	// (usercerts.go); "" or a missing directory means none.
	UserDir string
	// Profile is the ACME profile of requests that name none
	// (BERTH_ACME_PROFILE); a certificate ordered with another is renewed.
	Profile string
	// DNS01 says a DNS provider is configured: wildcards and DNS-01
	// requests are ordered. Without one they get a log line, no order.
	DNS01 bool
	// UnusedGrace is how long a certificate no site uses is kept before it
	// is removed; default DefaultUnusedGrace.
	UnusedGrace time.Duration
}

// DefaultUnusedGrace keeps a certificate for a month after its last use, so
// a service that is down for maintenance, or moved for a while, comes back
// with its certificate instead of a new order.
const DefaultUnusedGrace = 30 * 24 * time.Hour

// servedResolution bounds how often last-use times are persisted.
const servedResolution = time.Hour

// refreshInterval is how often the manager looks for changes made by
// "berth renew", "berth revoke" and "berth import", separate processes, and
// in the user certificate directory: a readlink per certificate, a stat of
// names.json and reading the user's few KiB per certificate, so it is
// cheap enough to run often enough that such a change is live within a
// couple of seconds.
const refreshInterval = 2 * time.Second

// Manager obtains and renews certificates for the wanted host sets. Its
// concerns live in their own files: the inventory of stored certificates
// (inventory.go), name state (state.go), the one order routine (order.go),
// ARI (ari.go) and clean-up (clean.go).
type Manager struct {
	opts    Options
	book    nameBook
	order   orderer
	wake    chan struct{}
	changed chan struct{}
	bookMu  sync.Mutex // serialises this process's names.json updates with their adoption

	mu         sync.Mutex
	groups     []group
	certs      map[string]*certInfo
	retired    []*certInfo // replaced by a certificate without some of their names; serve those until expiry
	names      map[string]NameState
	namesStamp fileStamp
	running    map[string]bool
	reported   map[string]bool
	served     map[string]bool // hosts with a site now
	inUse      map[string]bool // versions the nginx files name; nil before the first InUse
	offered    map[string]bool // versions Certs handed out since the last InUse
	pruneDue   bool
	lastView   map[string]Paths // Certs as last signalled on Changed
	obs        orderObs         // orders for CertStatus (status.go)
	user       []*userCert      // valid user certificates (usercerts.go)
	userScan   userScan         // used by refreshUser only: NewManager, then Run's goroutine
	userWarned map[string]time.Time
}

// NewManager loads the stored certificates and per-name state, so stored
// certificates are served at once and backoff survives restarts. A corrupt
// state file is moved aside, never a reason not to start.
func NewManager(opts Options) (*Manager, error) {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 3
	}
	if opts.UnusedGrace <= 0 {
		opts.UnusedGrace = DefaultUnusedGrace
	}
	opts.Log = orStandard(opts.Log)
	if opts.Store.Log == nil {
		opts.Store.Log = opts.Log
	}
	book := newNameBook(opts.StateDir, opts.Log)
	m := &Manager{opts: opts, book: book,
		wake: make(chan struct{}, 1), changed: make(chan struct{}, 1),
		certs: map[string]*certInfo{}, running: map[string]bool{}, reported: map[string]bool{}, served: map[string]bool{},
		userScan: userScan{dir: opts.UserDir}, userWarned: map[string]time.Time{}}
	m.order = orderer{store: opts.Store, issuer: opts.Issuer, update: m.updateNames}
	var err error
	if m.names, m.namesStamp, err = book.load(); err != nil {
		return nil, err
	}
	if _, err := opts.Store.List(); err != nil {
		return nil, err
	}
	m.refresh()
	m.refreshUser(time.Now())
	m.lastView = m.view(time.Now())
	return m, nil
}

// removeLeftovers clears what a berth killed half-way through a write left
// in the certificate and state directories; the daemon is their writer.
func (m *Manager) removeLeftovers(now time.Time) {
	removed := m.opts.Store.RemoveLeftovers(now)
	if names, err := atomicfile.RemoveLeftovers(m.opts.StateDir, "", now); err == nil {
		removed = append(removed, names...)
	}
	for _, name := range removed {
		m.opts.Log.WithField("file", name).Info("removed a temporary file left by an interrupted write")
	}
}

func newCertInfo(st *Stored) *certInfo {
	ci := &certInfo{stored: st, version: st.Version, jitter: randFloat(), loaded: time.Now()}
	ci.renewAt = RenewAt(st.Leaf.NotBefore, st.Leaf.NotAfter, nil, ci.jitter)
	return ci
}

func randFloat() float64 {
	n, err := rand.Int(rand.Reader, big.NewInt(1<<30))
	if err != nil {
		return 0.5
	}
	return float64(n.Int64()) / (1 << 30)
}

// Want replaces the set of wanted certificates, and says which hosts have
// a site now (served, whether or not they want a certificate), so unused
// certificates can be told from used ones. It never blocks on the CA or
// on a file lock. Names no CA can issue here are dropped with one log
// line each: wildcards and DNS-01 requests need a DNS provider.
func (m *Manager) Want(reqs []CertRequest, served []string) {
	m.mu.Lock()
	user := m.userNamesLocked(time.Now())
	m.mu.Unlock()
	var clean []CertRequest
	for _, r := range reqs {
		var ok []string
		for _, n := range r.Names {
			if why := m.unorderable(n, r.Challenge); why != "" {
				if !coveredBy(user, n) { // the user's own certificate serves it: nothing is missing
					m.reportOnce(n, "no certificate ordered: "+why)
				}
				continue
			}
			ok = append(ok, n)
		}
		if len(ok) > 0 {
			r.Names = ok
			clean = append(clean, r)
		}
	}
	groups := groupRequests(clean, m.opts.Profile)
	m.mu.Lock()
	changed := !slices.EqualFunc(groups, m.groups, equalGroup)
	m.groups = groups
	m.served = make(map[string]bool, len(served))
	for _, h := range served {
		m.served[h] = true
	}
	m.mu.Unlock()
	if changed {
		m.poke()
	}
}

// unorderable says why name cannot be ordered by challenge here, or "".
func (m *Manager) unorderable(name, challenge string) string {
	if !m.opts.DNS01 && challenge == ChallengeDNS01 {
		return "DNS-01 is asked for, but no DNS provider is configured (set BERTH_ACME_DNS_PROVIDER)"
	}
	if m.opts.DNS01 && IsWildcard(name) {
		return Unissuable(name[2:])
	}
	return Unissuable(name)
}

func equalGroup(a, b group) bool {
	return slices.Equal(a.names, b.names) && a.challenge == b.challenge && a.profile == b.profile && a.fallback == b.fallback
}

// Changed receives (buffered, one pending at most) whenever Certs() may
// differ from what it last returned: a certificate stored, renewed,
// revoked, removed, expired or changed by another process.
func (m *Manager) Changed() <-chan struct{} { return m.changed }

func (m *Manager) reportOnce(key, msg string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.reported[key] {
		m.reported[key] = true
		m.opts.Log.WithField("host", key).Info(msg)
	}
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Run orders and renews until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	done := make(chan struct{}, m.opts.Concurrency)
	inFlight := 0
	var jobs sync.WaitGroup
	defer jobs.Wait() // jobs stop promptly on ctx; never leave one writing after Run
	jobs.Go(func() { m.checkRenewalInfo(ctx) })
	m.removeLeftovers(time.Now())
	for {
		now := time.Now()
		m.housekeep(now)
		m.mu.Lock()
		due, next := planJobs(withoutCovered(m.groups, m.userNamesLocked(now)), m.certs, m.names, m.running, now)
		next = earliest(next, now.Add(min(refreshInterval, m.opts.UnusedGrace)))
		for _, j := range due {
			if inFlight >= m.opts.Concurrency {
				break
			}
			inFlight++
			m.running[j.cert] = true
			jobs.Go(func() {
				m.run(ctx, j)
				done <- struct{}{}
			})
		}
		m.mu.Unlock()
		timer := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-m.wake:
		case <-done:
			inFlight--
		case <-timer.C:
		}
		timer.Stop()
	}
}

// housekeep is each pass's work before planning: notice other processes'
// changes, record use, clean up, and say whether Certs changed.
func (m *Manager) housekeep(now time.Time) {
	m.refresh()
	m.refreshUser(now)
	m.copyUser(now)
	m.persistServed(now)
	m.cleanUnused(now)
	m.prune()
	m.signalIfChanged(now)
}
