package acme

import (
	"context"
	"time"
)

// ARI: the CA's suggested renewal windows move renewal times.

// ariInterval: RFC 9773 suggests polling a few times a day.
const ariInterval = 6 * time.Hour

// ariTick is how often the manager looks for certificates whose window is
// due a recheck (new ones at once, the rest every ariInterval).
const ariTick = time.Minute

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
		timer := time.NewTimer(ariTick)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}
