package controller

import "time"

// Pacing. Passes are cheap (one list call and an in-memory render); nginx
// reloads are not: each one starts new workers and drains the old ones. So
// passes run almost at once after an event, and only reloads are paced.
const (
	// coalesceDelay merges the events Docker sends for one action (e.g.
	// network connect + start) into one pass without adding visible latency.
	coalesceDelay = 20 * time.Millisecond
	// reloadWindow is how far back reloads count towards the pacing.
	reloadWindow = 30 * time.Second
	// reloadBaseGap / reloadMaxGap bound the wait between reloads: the first
	// reload after a quiet spell is immediate, then each further reload in
	// the window doubles the gap, so a burst of 100 container starts over
	// ~15 s costs about five reloads instead of a hundred.
	reloadBaseGap = 1 * time.Second
	reloadMaxGap  = 8 * time.Second
)

// reloadPacer remembers recent reloads and says how long the next must wait.
// Pure apart from its own history; now is always passed in.
type reloadPacer struct {
	history []time.Time
}

// Wait returns how long to hold a reload that is wanted at now.
func (p *reloadPacer) Wait(now time.Time) time.Duration {
	p.prune(now)
	n := len(p.history)
	if n == 0 {
		return 0
	}
	gap := reloadBaseGap << (n - 1)
	if gap > reloadMaxGap || gap <= 0 {
		gap = reloadMaxGap
	}
	wait := p.history[n-1].Add(gap).Sub(now)
	if wait < 0 {
		return 0
	}
	return wait
}

// Record notes a reload at now.
func (p *reloadPacer) Record(now time.Time) {
	p.prune(now)
	p.history = append(p.history, now)
}

func (p *reloadPacer) prune(now time.Time) {
	i := 0
	for i < len(p.history) && now.Sub(p.history[i]) > reloadWindow {
		i++
	}
	p.history = p.history[i:]
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
