package acme

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Issuer is the narrow view of an ACME CA that the manager needs.
type Issuer interface {
	// Obtain orders a certificate for names; replaces is the certificate a
	// renewal replaces, or nil.
	Obtain(ctx context.Context, names []string, replaces *x509.Certificate) (Issued, error)
	// RenewalInfo returns the CA's suggested window, or nil without ARI.
	RenewalInfo(ctx context.Context, leaf *x509.Certificate) (*Window, error)
	// Revoke revokes a certificate.
	Revoke(ctx context.Context, chainPEM []byte) error
}

// Prober fetches path from nginx with the given Host header and returns
// the body: the self-check that the challenge path reaches the webroot.
type Prober func(ctx context.Context, host, path string) (string, error)

// Paths are the files of a certificate, as nginx sees them.
type Paths struct {
	Chain, Key string
}

// Options configure a Manager.
type Options struct {
	Store       Store
	Issuer      Issuer
	Webroot     string
	StateDir    string
	Probe       Prober // nil skips the self-check
	Notify      func() // called after a certificate is stored
	Log         *logrus.Entry
	Concurrency int // parallel orders; default 3
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

// Manager obtains and renews certificates for the wanted host sets.
type Manager struct {
	opts  Options
	state stateFile
	wake  chan struct{}

	mu       sync.Mutex
	groups   [][]string
	certs    map[string]*certInfo
	names    map[string]NameState
	running  map[string]bool
	reported map[string]bool
	served   map[string]bool // hosts with a site now
	stateMod time.Time       // names.json as last read, to notice "berth renew/revoke"
}

// refreshInterval is how often the manager rereads the certificate store
// and names.json, so "berth renew" and "berth revoke", run as separate
// processes, take effect in the daemon without a restart.
const refreshInterval = 30 * time.Second

// NewManager loads the stored certificates and per-name state, so stored
// certificates are served at once and backoff survives restarts.
func NewManager(opts Options) (*Manager, error) {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 3
	}
	if opts.UnusedGrace <= 0 {
		opts.UnusedGrace = DefaultUnusedGrace
	}
	m := &Manager{opts: opts, state: stateFile{filepath.Join(opts.StateDir, "names.json")},
		wake: make(chan struct{}, 1), certs: map[string]*certInfo{}, running: map[string]bool{}, reported: map[string]bool{},
		served: map[string]bool{}}
	var err error
	if m.names, err = m.state.load(); err != nil {
		return nil, err
	}
	list, err := opts.Store.List()
	if err != nil {
		return nil, err
	}
	for _, name := range list {
		st, err := opts.Store.Load(name)
		if err != nil {
			opts.Log.WithError(err).WithField("cert", name).Warn("stored certificate unusable; it will be re-issued if wanted")
			continue
		}
		m.certs[name] = newCertInfo(st, opts.Store.version(name))
	}
	m.stateMod = stateModTime(opts.StateDir)
	return m, nil
}

// refresh picks up certificates and name state changed by another process.
// It reports whether the set of served certificates changed.
func (m *Manager) refresh() bool {
	list, err := m.opts.Store.List()
	if err != nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	seen := map[string]bool{}
	for _, name := range list {
		seen[name] = true
		v := m.opts.Store.version(name)
		if ci := m.certs[name]; ci != nil && ci.version == v {
			continue
		}
		if st, err := m.opts.Store.Load(name); err == nil {
			m.certs[name] = newCertInfo(st, v)
			changed = true
		}
	}
	for name := range m.certs {
		if !seen[name] {
			delete(m.certs, name)
			changed = true
		}
	}
	if mod := stateModTime(m.opts.StateDir); !mod.Equal(m.stateMod) {
		if names, err := m.state.load(); err == nil {
			m.names, m.stateMod = names, mod
			changed = true // a revocation changes what is served
		}
	}
	return changed
}

func newCertInfo(st *Stored, version string) *certInfo {
	ci := &certInfo{stored: st, version: version, jitter: randFloat(), loaded: time.Now()}
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

// Want replaces the set of wanted host lists, and says which hosts have a
// site now (served, whether or not they want a certificate), so unused
// certificates can be told from used ones. It never blocks on the CA.
// Names no public CA can issue are dropped with one log line each.
func (m *Manager) Want(sets [][]string, served []string) {
	m.markServed(served)
	var clean [][]string
	for _, set := range sets {
		var ok []string
		for _, n := range set {
			if why := Unissuable(n); why != "" {
				m.reportOnce(n, why)
				continue
			}
			ok = append(ok, n)
		}
		if len(ok) > 0 {
			clean = append(clean, ok)
		}
	}
	groups := Groups(clean)
	m.mu.Lock()
	changed := !slices.EqualFunc(groups, m.groups, slices.Equal[[]string])
	m.groups = groups
	m.mu.Unlock()
	if changed {
		m.poke()
	}
}

// markServed remembers the hosts with a site, persisting last-use times
// at most once per servedResolution.
func (m *Manager) markServed(hosts []string) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.served = make(map[string]bool, len(hosts))
	dirty := false
	for _, h := range hosts {
		m.served[h] = true
		if st := m.names[h]; now.Sub(st.LastServed) >= servedResolution {
			st.LastServed = now.Truncate(servedResolution)
			m.names[h] = st
			dirty = true
		}
	}
	if dirty {
		if err := m.state.save(m.names); err != nil {
			m.opts.Log.WithError(err).Error("cannot persist name state")
		}
		m.stateMod = stateModTime(m.opts.StateDir)
	}
}

// cleanUnused removes certificates that no site has used for UnusedGrace.
// A certificate berth has never seen in use counts from when it was
// loaded, so a restored backup is not removed at once. It reports whether
// anything was removed.
func (m *Manager) cleanUnused(now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	removed := false
	for name, ci := range m.certs {
		last, inUse := ci.loaded, false
		for _, d := range ci.stored.Meta.Domains {
			inUse = inUse || m.served[d]
			if t := m.names[d].LastServed; t.After(last) {
				last = t
			}
		}
		if inUse || m.running[name] || now.Sub(last) < m.opts.UnusedGrace {
			continue
		}
		if err := m.opts.Store.Delete(name); err != nil {
			m.opts.Log.WithError(err).WithField("cert", name).Error("cannot remove unused certificate")
			continue
		}
		delete(m.certs, name)
		removed = true
		m.opts.Log.WithFields(logrus.Fields{"cert": name, "last_used": last.UTC().Format(time.RFC3339)}).
			Info("removed a certificate no site has used for the grace period")
	}
	return removed
}

func (m *Manager) reportOnce(name, why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.reported[name] {
		m.reported[name] = true
		m.opts.Log.WithField("host", name).Info("no certificate ordered: " + why)
	}
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Certs returns, for every host with a valid stored certificate, its files.
// When several certificates cover a host, the one that expires last wins.
func (m *Manager) Certs() map[string]Paths {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	best := map[string]*certInfo{}
	for _, ci := range m.certs {
		if !ci.leaf().NotAfter.After(now) || ci.leaf().NotBefore.After(now) || revoked(ci, m.names) {
			continue
		}
		for _, h := range ci.stored.Meta.Domains {
			if b := best[h]; b == nil || ci.leaf().NotAfter.After(b.leaf().NotAfter) {
				best[h] = ci
			}
		}
	}
	out := make(map[string]Paths, len(best))
	for h, ci := range best {
		chain, key := m.opts.Store.Paths(ci.stored.Name)
		out[h] = Paths{Chain: chain, Key: key}
	}
	return out
}

// Run orders and renews until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	done := make(chan struct{}, m.opts.Concurrency)
	inFlight := 0
	var jobs sync.WaitGroup
	defer jobs.Wait() // jobs stop promptly on ctx; never leave one writing after Run
	go m.checkRenewalInfo(ctx)
	for {
		if m.refresh() && m.opts.Notify != nil {
			m.opts.Notify()
		}
		m.cleanUnused(time.Now())
		m.mu.Lock()
		due, next := planJobs(m.groups, m.certs, m.names, m.running, time.Now())
		next = earliest(next, time.Now().Add(min(refreshInterval, m.opts.UnusedGrace)))
		for _, j := range due {
			if inFlight >= m.opts.Concurrency {
				break
			}
			inFlight++
			m.running[j.cert] = true
			jobs.Add(1)
			go func(j job) {
				defer jobs.Done()
				m.run(ctx, j)
				done <- struct{}{}
			}(j)
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

// run places one order, after the self-check, retrying without the names
// that fail so they do not hold back the others.
func (m *Manager) run(ctx context.Context, j job) {
	defer func() {
		m.mu.Lock()
		delete(m.running, j.cert)
		m.mu.Unlock()
	}()
	log := m.opts.Log.WithFields(logrus.Fields{"cert": j.cert, "hosts": strings.Join(j.names, ",")})
	names := m.selfCheck(ctx, j.names, log)
	var replaces *x509.Certificate
	if j.replaces != nil && covers(names, j.replaces.stored.Meta.Domains) {
		replaces = j.replaces.leaf()
	}
	for len(names) > 0 && ctx.Err() == nil {
		log.WithField("renewal", j.renewal).Info("ordering certificate")
		issued, err := m.opts.Issuer.Obtain(ctx, names, replaces)
		if err == nil {
			m.store(j.cert, names, issued, log)
			return
		}
		if ctx.Err() != nil {
			return
		}
		var oe *OrderError
		if !errors.As(err, &oe) || oe.RateLimited || len(oe.Failed) == 0 {
			var retry time.Duration
			if oe != nil {
				retry = oe.RetryAfter
			}
			m.fail(names, err, retry, log)
			return
		}
		m.fail(oe.Failed, err, 0, log)
		names = without(names, oe.Failed)
		replaces = nil
	}
}

func without(names, drop []string) []string {
	var out []string
	for _, n := range names {
		if !slices.Contains(drop, n) {
			out = append(out, n)
		}
	}
	return out
}

// selfCheck serves a probe file from the webroot and fetches it through
// nginx for each name; names whose challenge path does not reach the
// webroot are backed off without spending the CA's failed-validation limit.
func (m *Manager) selfCheck(ctx context.Context, names []string, log *logrus.Entry) []string {
	if m.opts.Probe == nil {
		return names
	}
	token := "berth-probe-" + randHex(12)
	file := filepath.Join(m.opts.Webroot, ".well-known", "acme-challenge", token)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		m.fail(names, fmt.Errorf("self-check: %w", err), 0, log)
		return nil
	}
	if err := writeFile(file, []byte(token), 0o644); err != nil {
		m.fail(names, fmt.Errorf("self-check: %w", err), 0, log)
		return nil
	}
	defer os.Remove(file)
	var ok []string
	for _, n := range names {
		body, err := m.opts.Probe(ctx, n, "/.well-known/acme-challenge/"+token)
		if err == nil && strings.TrimSpace(body) != token {
			err = fmt.Errorf("got %q instead of the probe file", truncate(body, 80))
		}
		if err != nil {
			m.fail([]string{n}, fmt.Errorf("self-check: http://%s/.well-known/acme-challenge/ does not serve the webroot through nginx: %w", n, err), 0, log)
			continue
		}
		ok = append(ok, n)
	}
	return ok
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// fail backs each name off and persists the reason.
func (m *Manager) fail(names []string, err error, caRetry time.Duration, log *logrus.Entry) {
	now := time.Now()
	m.mu.Lock()
	for _, n := range names {
		st := m.names[n]
		st.Failures++
		st.NextAttempt = RetryAfter(now, st.Failures, caRetry)
		st.LastError = err.Error()
		m.names[n] = st
		log.WithFields(logrus.Fields{"host": n, "attempt": st.Failures, "retry_in": st.NextAttempt.Sub(now).Round(time.Second)}).
			WithError(err).Error("certificate order failed")
	}
	saveErr := m.state.save(m.names)
	m.stateMod = stateModTime(m.opts.StateDir)
	m.mu.Unlock()
	if saveErr != nil {
		log.WithError(saveErr).Error("cannot persist backoff state")
	}
}

// store saves a new certificate, clears the names' failures and notifies.
func (m *Manager) store(cert string, names []string, issued Issued, log *logrus.Entry) {
	leaf, err := leafOf(issued.ChainPEM)
	if err != nil {
		m.fail(names, fmt.Errorf("CA returned an unreadable certificate: %w", err), 0, log)
		return
	}
	meta := Meta{Domains: leafNames(leaf), Issuer: issuerName(leaf), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
		CertURL: issued.CertURL, Profile: issued.Profile, Obtained: time.Now().UTC()}
	if err := m.opts.Store.Save(cert, issued.ChainPEM, issued.KeyPEM, meta); err != nil {
		m.fail(names, err, 0, log)
		return
	}
	st, err := m.opts.Store.Load(cert)
	if err != nil {
		m.fail(names, err, 0, log)
		return
	}
	m.mu.Lock()
	m.certs[cert] = newCertInfo(st, m.opts.Store.version(cert))
	for _, n := range names {
		delete(m.names, n)
	}
	saveErr := m.state.save(m.names)
	m.stateMod = stateModTime(m.opts.StateDir)
	m.mu.Unlock()
	if saveErr != nil {
		log.WithError(saveErr).Error("cannot persist state")
	}
	log.WithFields(logrus.Fields{"not_after": leaf.NotAfter.UTC().Format(time.RFC3339), "issuer": meta.Issuer}).Info("certificate stored")
	if m.opts.Notify != nil {
		m.opts.Notify()
	}
}

// checkRenewalInfo asks the CA for renewal windows at start and every
// ariInterval, and moves renewal times accordingly.
func (m *Manager) checkRenewalInfo(ctx context.Context) {
	for {
		m.mu.Lock()
		var due []*certInfo
		for _, ci := range m.certs {
			if time.Since(ci.ariChecked) >= ariInterval {
				due = append(due, ci)
			}
		}
		m.mu.Unlock()
		for _, ci := range due {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			w, err := m.opts.Issuer.RenewalInfo(cctx, ci.leaf())
			cancel()
			m.mu.Lock()
			ci.ariChecked = time.Now()
			if err == nil {
				ci.renewAt = RenewAt(ci.leaf().NotBefore, ci.leaf().NotAfter, w, ci.jitter)
			}
			m.mu.Unlock()
			if err != nil {
				m.opts.Log.WithError(err).WithField("cert", ci.stored.Name).Debug("renewal info unavailable")
			}
		}
		if len(due) > 0 {
			m.poke()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Minute):
		}
	}
}

// ariInterval: RFC 9773 suggests polling a few times a day.
const ariInterval = 6 * time.Hour
