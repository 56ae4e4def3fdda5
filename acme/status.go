package acme

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berthproxy/berth/status"
)

// The manager's report for "berth status", the status page and /metrics:
// the stored certificates (never a key), the orders in flight and the
// failing names, and counters of orders by result with their durations.

// orderObs records orders as they run. It has its own lock: orders run in
// their own goroutines and a status request must never wait on the
// manager's lock for long.
type orderObs struct {
	mu       sync.Mutex
	inFlight map[string]status.Order
	counts   map[string]uint64
	took     status.Histogram
}

func (o *orderObs) start(j job, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.inFlight == nil {
		o.inFlight = map[string]status.Order{}
	}
	o.inFlight[j.cert] = status.Order{Name: j.cert, Names: slices.Clone(j.names), Started: now, Renewal: j.renewal}
}

func (o *orderObs) end(cert string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.inFlight, cert)
}

// placed counts one order placed at the CA and how long it took; stored
// says the certificate was stored (even if its names' state was not).
func (o *orderObs) placed(stored bool, err error, took time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.counts == nil {
		o.counts = map[string]uint64{}
		o.took = status.NewHistogram(status.OrderBounds)
	}
	if stored {
		err = nil
	}
	o.counts[orderResult(err)]++
	o.took.Observe(took.Seconds())
}

// orderResult is the result label of berth_acme_orders_total.
func orderResult(err error) string {
	var oe *OrderError
	switch {
	case err == nil:
		return status.OrderOK
	case errors.As(err, &oe) && oe.RateLimited:
		return status.OrderRateLimited
	}
	return status.OrderFailed
}

// CertStatus reports the certificates, orders and failing names
// (status.CertSource).
func (m *Manager) CertStatus(now time.Time) status.CertPart {
	var p status.CertPart
	m.mu.Lock()
	// The current version of each stored certificate: one entry (and one
	// metric series) per name. A retired predecessor still serving a name
	// the new one lacks is not listed; it expires on its own.
	for _, ci := range m.certs {
		p.Certificates = append(p.Certificates, certOf(ci, m.names))
	}
	// The user's own certificates that are served (copied and valid).
	for _, uc := range m.user {
		if uc.copied && current(uc.Leaf, now) == nil {
			p.Certificates = append(p.Certificates, status.Certificate{Name: userName(m.opts.UserDir, uc.File), Names: slices.Clone(uc.Names),
				Issuer: issuerName(uc.Leaf), Serial: uc.Leaf.SerialNumber.Text(16), NotBefore: uc.Leaf.NotBefore, NotAfter: uc.Leaf.NotAfter,
				Source: SourceUser})
		}
	}
	for _, n := range sortedNames(m.names) {
		if st := m.names[n]; st.Failures > 0 {
			p.Failing = append(p.Failing, status.Failing{Name: n, Failures: st.Failures, LastError: st.LastError, NextAttempt: st.NextAttempt})
		}
	}
	m.mu.Unlock()
	slices.SortFunc(p.Certificates, func(a, b status.Certificate) int { return strings.Compare(a.Name, b.Name) })
	m.obs.mu.Lock()
	for _, cert := range slices.Sorted(maps.Keys(m.obs.inFlight)) {
		p.Orders = append(p.Orders, m.obs.inFlight[cert])
	}
	p.OrderCounts = maps.Clone(m.obs.counts)
	p.OrderDuration = m.obs.took
	m.obs.mu.Unlock()
	return p
}

func certOf(ci *certInfo, names map[string]NameState) status.Certificate {
	leaf := ci.leaf()
	return status.Certificate{Name: ci.stored.Name, Names: slices.Clone(ci.stored.Meta.Domains), Issuer: ci.stored.Meta.Issuer,
		Serial: leaf.SerialNumber.Text(16), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, NextRenewal: ci.renewAt,
		Revoked: revoked(ci, names)}
}
