package controller

import (
	"bytes"
	"strings"
	"time"

	"github.com/berthproxy/berth/nginxconf"
)

// Pacing. Passes are cheap (one list call and an in-memory render); nginx
// reloads are not: each one closes idle keep-alive connections and starts a
// new generation of workers while the old one drains. So passes run almost
// at once after an event, and only reloads are paced.
const (
	// coalesceDelay merges the events Docker sends for one action (create,
	// network connect, start) into one pass without adding visible latency.
	coalesceDelay = 20 * time.Millisecond
	// minGap: a change that comes at least this long after the last reload
	// goes live at once.
	minGap = time.Second
	// burstGap spaces reloads while changes keep coming faster than minGap.
	burstGap = 1250 * time.Millisecond
)

// reloadPacer decides how long a wanted reload must wait. The rule, whole:
//
//   - A change first wanted at least minGap (1 s) after the last reload
//     goes live at once. Changes that come more than about a second apart
//     (a deploy, a trickle of services every 1.5 s) therefore each reload
//     immediately, whatever came before them.
//   - A change wanted sooner waits until minGap after the last reload, and
//     every change that arrives meanwhile rides on that one reload: a burst
//     is coalesced, and nothing in it waits longer than the gap.
//   - While a burst goes on (the last reload had itself been held), that
//     gap is burstGap (1.25 s): 100 services started by 8 parallel
//     `docker run`s (27 s of runs on 2 cores) reloaded 23 times instead of
//     27, and no change waits more than 1.25 s. A change that comes a second after the burst's last
//     reload is a lone change again.
//
// The pacer reads no Docker events, only wanted reloads: an event that
// changes nothing (another project's container, an exec) costs no pacing.
// It holds only its own history; the clock is always passed in.
type reloadPacer struct {
	last  time.Time // last reload
	burst bool      // the last reload had been held
	since time.Time // when the change now waiting was first wanted; zero if none
	held  bool      // Wait has held the change now waiting
}

// Wait returns how long the reload wanted at now must be held. The first
// call for a change notes when it was wanted; Record or Cancel ends it.
func (p *reloadPacer) Wait(now time.Time) time.Duration {
	if p.since.IsZero() {
		p.since = now
	}
	if p.last.IsZero() || p.since.Sub(p.last) >= minGap {
		return 0
	}
	gap := minGap
	if p.burst {
		gap = burstGap
	}
	w := max(p.last.Add(gap).Sub(now), 0)
	if w > 0 {
		p.held = true
	}
	return w
}

// Record notes the reload of the waiting change at now.
func (p *reloadPacer) Record(now time.Time) {
	p.last, p.burst = now, p.held
	p.since, p.held = time.Time{}, false
}

// Cancel forgets the waiting change: it went away before its reload (a
// container started and removed again), so it neither waits nor counts
// as part of a burst.
func (p *reloadPacer) Cancel() { p.since, p.held = time.Time{}, false }

// resolvedLocations says, per "host path", whether each location of cfg is
// one nginx resolves by name itself (resolved.go). Pure.
func resolvedLocations(cfg nginxconf.Config) map[string]bool {
	out := map[string]bool{}
	for _, s := range cfg.Sites {
		for _, l := range s.Locations {
			out[s.Host+" "+l.Path] = l.Resolve
		}
	}
	return out
}

// leavesResolve reports whether a location nginx resolves by name in the
// applied config gets addresses in the desired one. berth switches back to
// addresses when a container that must not get traffic takes the name (a
// replica with a health check, another host's container); until the reload
// nginx keeps following the name and sends that container requests. Such a
// change is therefore never held by the pacer: it costs a reload inside a
// burst, which is rare (one per name joined), instead of up to burstGap of
// misrouted requests. Pure.
func leavesResolve(applied, desired map[string]bool) bool {
	for k, was := range applied {
		if now, ok := desired[k]; was && ok && !now {
			return true
		}
	}
	return false
}

// idleRemovalDelay is how long a change that only removes idle sites waits
// for another change to ride on (see idleRemoval).
const idleRemovalDelay = 5 * time.Second

// idleRemoval reports whether plan only removes sites that proxy to
// nothing: `docker rm -f` stops a container (die: its site now answers 503,
// one reload) and removes it (destroy) a moment later. Removing the site
// then changes nothing a client sees but a TLS handshake rejected instead
// of a 503 with the host's certificate, so it need not cost a reload of
// its own: it waits up to idleRemovalDelay and goes with the next change.
// A site with an upstream block still proxies somewhere and is removed at
// once. Pure.
func idleRemoval(plan nginxconf.Plan, current nginxconf.Files) bool {
	if len(plan.Write) > 0 || len(plan.Remove) == 0 {
		return false
	}
	for _, name := range plan.Remove {
		if strings.HasSuffix(name, nginxconf.FileSuffix) && bytes.Contains(current[name], []byte("\nupstream ")) {
			return false
		}
	}
	return true
}

// backoff returns the retry delay after n consecutive failures: 250ms
// doubling to 10s, so a restarting Docker engine or nginx is retried
// quickly at first and without hammering later.
func backoff(n int) time.Duration {
	d := 250 * time.Millisecond
	for i := 1; i < n && d < 10*time.Second; i++ {
		d *= 2
	}
	return min(d, 10*time.Second)
}
