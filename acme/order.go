package acme

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/internal/atomicfile"
)

// orderer places one order and publishes the result. The daemon's Manager
// and the CLI's RenewHost both order through it, so what is checked before
// an order and what is written after it cannot drift apart.
type orderer struct {
	store  Store
	issuer Issuer
	// update changes names.json (the daemon also adopts the result).
	update func(names []string, fn func(NameState) NameState) error
}

// bookUpdate is an orderer's update for a process that keeps no view.
func bookUpdate(b nameBook) func([]string, func(NameState) NameState) error {
	return func(names []string, fn func(NameState) NameState) error {
		_, _, err := b.update(names, fn)
		return err
	}
}

// place checks that cert's path is berth's, orders names, publishes the
// certificate under cert and clears the names' failures. The meta records
// the profile and challenge it was ordered with, as asked ("" for the
// issuer's default, whatever that is): a change of what is asked renews,
// and "berth renew" orders it the same way.
func (o orderer) place(ctx context.Context, cert string, names []string, opts OrderOptions, now time.Time) (*Stored, error) {
	if err := o.store.Check(cert); err != nil {
		return nil, err
	}
	issued, err := o.issuer.Obtain(ctx, names, opts)
	if err != nil {
		return nil, err
	}
	leaf, err := leafOf(issued.ChainPEM)
	if err != nil {
		return nil, fmt.Errorf("CA returned an unreadable certificate: %w", err)
	}
	meta := Meta{Domains: leafNames(leaf), Issuer: issuerName(leaf), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
		CertURL: issued.CertURL, Profile: opts.Profile, Challenge: challengeOf(names, opts.Challenge), Obtained: now.UTC()}
	version, err := o.store.save(cert, issued.ChainPEM, issued.KeyPEM, meta)
	if err != nil {
		return nil, err
	}
	st, err := o.store.loadVersion(cert, version)
	if err != nil {
		return nil, err
	}
	if err := o.update(names, cleared); err != nil {
		return st, fmt.Errorf("certificate stored, but its names' backoff was not cleared: %w", err)
	}
	return st, nil
}

// run places one order for the daemon, after the self-check, retrying
// without the names that fail so they do not hold back the others, unless
// a valid certificate already covers the rest: a renewal never shrinks
// what a valid certificate covers (see closeToExpiry).
func (m *Manager) run(ctx context.Context, j job) {
	defer func() {
		m.mu.Lock()
		delete(m.running, j.cert)
		m.mu.Unlock()
	}()
	m.obs.start(j, time.Now())
	defer m.obs.end(j.cert)
	log := m.opts.Log.WithFields(logrus.Fields{"cert": j.cert, "hosts": strings.Join(j.names, ",")})
	if err := m.opts.Store.Check(j.cert); err != nil {
		m.fail(j.names, err, 0, log, true)
		return
	}
	names := j.names
	if challengeOf(names, j.order.Challenge) == ChallengeHTTP01 {
		names = m.selfCheck(ctx, names, log) // DNS-01 names are not reached over HTTP at all
	}
	opts := j.order
	if j.replaces != nil && covers(names, j.replaces.stored.Meta.Domains) {
		opts.Replaces = ariReplaces(j.replaces.stored)
	}
	for len(names) > 0 && ctx.Err() == nil {
		if len(names) < len(j.names) && m.stillCovered(names, time.Now()) {
			log.WithField("remaining", strings.Join(names, ",")).Info("keeping the valid certificate that covers the remaining names; no order without the failing ones")
			return
		}
		log.WithFields(logrus.Fields{"renewal": j.renewal, "challenge": challengeOf(names, opts.Challenge), "profile": opts.Profile}).Info("ordering certificate")
		began := time.Now()
		st, err := m.order.place(ctx, j.cert, names, opts, began)
		m.obs.placed(st != nil, err, time.Since(began))
		if st != nil {
			m.adopt(st, log)
			if err != nil {
				log.WithError(err).Error("cannot persist state")
			}
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
			m.fail(names, err, retry, log, false)
			return
		}
		m.fail(oe.Failed, err, 0, log, false)
		names = without(names, oe.Failed)
		opts.Replaces = nil
	}
}

// stillCovered: a valid certificate covers names and is not close to expiry.
func (m *Manager) stillCovered(names []string, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	ci := covering(m.certs, m.names, names, "", now)
	return ci != nil && !closeToExpiry(ci.leaf(), now)
}

// adopt takes a certificate this process published into the inventory.
// A certificate it replaces that is still valid for names the new one
// lacks (a name split off close to expiry) keeps serving those names.
func (m *Manager) adopt(st *Stored, log *logrus.Entry) {
	m.mu.Lock()
	if old := m.certs[st.Name]; old != nil && usable(old, m.names, time.Now()) && !covers(st.Meta.Domains, old.stored.Meta.Domains) {
		m.retired = append(m.retired, old)
	}
	m.certs[st.Name] = newCertInfo(st)
	m.mu.Unlock()
	log.WithFields(logrus.Fields{"not_after": st.Leaf.NotAfter.UTC().Format(time.RFC3339), "issuer": st.Meta.Issuer}).
		Info("certificate stored")
	m.signalIfChanged(time.Now())
}

// ariReplaces is the certificate an order may name as the one it
// replaces (ARI): not an imported one, which another account or another CA
// issued, and which the CA would refuse to see replaced by this account.
func ariReplaces(st *Stored) *x509.Certificate {
	if st.Meta.Source == SourceImport {
		return nil
	}
	return st.Leaf
}

// challengeOf is the challenge an order for names uses: DNS-01 when asked
// or when a name is a wildcard, else HTTP-01.
func challengeOf(names []string, asked string) string {
	if asked == ChallengeDNS01 || slices.ContainsFunc(names, IsWildcard) {
		return ChallengeDNS01
	}
	return ChallengeHTTP01
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
		m.fail(names, fmt.Errorf("self-check: %w", err), 0, log, false)
		return nil
	}
	if err := atomicfile.Write(file, []byte(token), 0o644); err != nil {
		m.fail(names, fmt.Errorf("self-check: %w", err), 0, log, false)
		return nil
	}
	defer os.Remove(file)
	var ok []string
	for _, n := range names {
		body, err := m.opts.Probe.Probe(ctx, n, "/.well-known/acme-challenge/"+token)
		if err == nil && strings.TrimSpace(body) != token {
			err = fmt.Errorf("got %q instead of the probe file", truncate(body, 80))
		}
		if err != nil {
			m.fail([]string{n}, fmt.Errorf("self-check: http://%s/.well-known/acme-challenge/ does not serve the webroot through nginx: %w", n, err), 0, log, false)
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

// fail backs each name off and persists the reason. once logs an error
// that stays the same across retries (a path in the way) only the first
// time.
func (m *Manager) fail(names []string, err error, caRetry time.Duration, log *logrus.Entry, once bool) {
	now := time.Now()
	uerr := m.updateNames(names, func(st NameState) NameState {
		st.Failures++
		st.NextAttempt = RetryAfter(now, st.Failures, caRetry)
		st.LastError = err.Error()
		return st
	})
	m.mu.Lock()
	for _, n := range names {
		st := m.names[n]
		key := "fail " + n + " " + err.Error()
		if once && m.reported[key] {
			continue
		}
		m.reported[key] = once
		log.WithFields(logrus.Fields{"host": n, "attempt": st.Failures, "retry_in": st.NextAttempt.Sub(now).Round(time.Second)}).
			WithError(err).Error("certificate order failed")
	}
	m.mu.Unlock()
	if uerr != nil {
		log.WithError(uerr).Error("cannot persist backoff state")
	}
}

// updateNames changes names.json through the one owner and adopts the
// result, so this process's view never lags its own writes.
func (m *Manager) updateNames(names []string, fn func(NameState) NameState) error {
	m.bookMu.Lock()
	defer m.bookMu.Unlock()
	all, stamp, err := m.book.update(names, fn)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.names, m.namesStamp = all, stamp
	m.mu.Unlock()
	return nil
}
