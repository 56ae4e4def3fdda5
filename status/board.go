package status

import (
	"maps"
	"slices"
	"sync"
	"time"
)

// CertSource is the certificate manager's side: it reports on demand, so
// a snapshot always shows the orders in flight right now.
type CertSource interface {
	CertStatus(now time.Time) CertPart
}

// Board collects the producers' parts and assembles Snapshots. The
// controller's loop publishes a part after every pass; its event watcher
// counts events and stream breaks from another goroutine; readers (the
// socket, the HTTP server) take snapshots at any time. All methods are
// safe for concurrent use.
type Board struct {
	version string
	certs   CertSource

	mu       sync.Mutex
	part     ControllerPart
	havePart bool
	watching bool
	reloads  []Reload // newest first
	counters Counters
	// standby: a Swarm berth that does not hold the lease. It watches
	// nothing and runs no pass, and is healthy: Swarm must not replace
	// the replica that is ready to take over.
	standby bool
}

// Standby records whether this berth stands by (Swarm, without the lease)
// or leads. A new term starts from a clean slate: the previous term's
// passes and stream say nothing about this one.
func (b *Board) Standby(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.standby = on
	if !on {
		b.havePart, b.watching = false, false
	}
}

// NewBoard returns a board; certs may be nil (BERTH_ACME_CA=off).
func NewBoard(version string, certs CertSource) *Board {
	return &Board{version: version, certs: certs, counters: Counters{
		Reloads: map[string]uint64{ReloadOK: 0, ReloadRejected: 0, ReloadFailed: 0},
		Passes:  NewHistogram(PassBounds),
	}}
}

// Publish takes the controller's part after a pass.
func (b *Board) Publish(p ControllerPart) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.part, b.havePart = p, true
	b.counters.Passes.Observe(p.Pass.Seconds)
	if p.Reload != nil {
		b.counters.Reloads[p.Reload.Result]++
		if p.Reload.Result == ReloadOK {
			b.counters.LastReloadOK = p.Reload.Time
		}
		b.reloads = slices.Insert(b.reloads, 0, *p.Reload)
		if len(b.reloads) > MaxReloads {
			b.reloads = b.reloads[:MaxReloads]
		}
	}
}

// Event counts one Docker event.
func (b *Board) Event() {
	b.mu.Lock()
	b.counters.Events++
	b.mu.Unlock()
}

// Stream records that the event stream was subscribed (up) or broke. A
// subscription after a break counts as a reconnect.
func (b *Board) Stream(up bool, reconnect bool) {
	b.mu.Lock()
	b.watching = up
	if up && reconnect {
		b.counters.Reconnects++
	}
	b.mu.Unlock()
}

// Snapshot assembles the current state.
func (b *Board) Snapshot(now time.Time) Snapshot {
	var cp CertPart
	if b.certs != nil {
		cp = b.certs.CertStatus(now)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := assemble(now, b.version, b.part, b.havePart, b.watching, b.reloads, b.counters, cp)
	if b.standby {
		s.Standby, s.Healthy, s.HealthReason = true, true, ""
	}
	return s
}

// assemble merges the parts into one Snapshot. Pure; every slice is
// copied so the snapshot can be read while producers go on.
func assemble(now time.Time, version string, p ControllerPart, havePart, watching bool, reloads []Reload, c Counters, cp CertPart) Snapshot {
	s := Snapshot{Time: now, Version: version, Docker: Docker{Watching: watching},
		Nginx: p.Nginx, LastPass: p.Pass, Pending: p.Pending,
		Reloads:      orEmpty(slices.Clone(reloads)),
		Hosts:        orEmpty(slices.Clone(p.Hosts)),
		Containers:   orEmpty(slices.Clone(p.Containers)),
		Skipped:      orEmpty(slices.Clone(p.Skipped)),
		Warnings:     orEmpty(slices.Clone(p.Warnings)),
		Certificates: orEmpty(slices.Clone(cp.Certificates)),
		Orders:       orEmpty(slices.Clone(cp.Orders)),
		Failing:      orEmpty(slices.Clone(cp.Failing)),
	}
	if len(s.Reloads) > 0 {
		r := s.Reloads[0]
		s.Nginx.LastReload = &r
	}
	for i, h := range s.Hosts {
		if cert := certFor(s.Certificates, h.Host); cert != nil && h.Certificate == "" {
			s.Hosts[i].Certificate = cert.Name
		}
		s.Hosts[i].CertificateMismatch = slices.Contains(p.Mismatch, h.Host)
	}
	s.Counters = Counters{Reloads: maps.Clone(c.Reloads), Passes: c.Passes.clone(), Events: c.Events, Reconnects: c.Reconnects, LastReloadOK: c.LastReloadOK,
		Orders: maps.Clone(cp.OrderCounts), OrderDuration: cp.OrderDuration.clone()}
	if s.Counters.Orders == nil {
		s.Counters.Orders = map[string]uint64{}
	}
	for _, r := range []string{OrderOK, OrderFailed, OrderRateLimited} {
		s.Counters.Orders[r] += 0
	}
	if s.Counters.OrderDuration.Bounds == nil {
		s.Counters.OrderDuration = NewHistogram(OrderBounds)
	}
	s.Healthy, s.HealthReason = health(havePart, watching, p)
	return s
}

// health is the rule of /healthz and "berth health": berth watches Docker
// and has a confirmed nginx. A rejected reload is not unhealthy: nginx
// still serves the previous config, and restarting berth would not help.
func health(havePart, watching bool, p ControllerPart) (bool, string) {
	switch {
	case !havePart:
		return false, "no reconcile pass has finished yet"
	case !watching:
		return false, "not watching Docker events (the event stream is broken)"
	case !p.Pass.ListedOK:
		return false, "cannot list containers: " + p.Pass.Error
	case !p.Nginx.Confirmed:
		if p.Nginx.Error != "" {
			return false, "no confirmed nginx: " + p.Nginx.Error
		}
		return false, "no confirmed nginx"
	}
	return true, ""
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
