package controller

import "time"

// Pacing. Passes are cheap (one list call and an in-memory render); nginx
// reloads are not: each one starts new workers and drains the old ones. So
// passes run almost at once after an event, and only reloads are paced.
const (
	// coalesceDelay merges the events Docker sends for one action (e.g.
	// network connect + start) into one pass without adding visible latency.
	coalesceDelay = 20 * time.Millisecond
	// reloadBaseGap and reloadMaxGap bound the pacing of reloads. A change
	// that arrives after the current gap has passed reloads at once, so
	// services deployed a few seconds apart are each live in well under a
	// second. Only when a change had to wait (a burst) does the gap double:
	// 2, 4, 8, 10 s, so 100 containers started together (about 17 s of
	// events here) cost five reloads instead of a hundred, and the last
	// container waits at most reloadMaxGap.
	reloadBaseGap = 2 * time.Second
	reloadMaxGap  = 10 * time.Second
)

// reloadPacer decides how long a wanted reload must wait. It holds only its
// own history; the clock is always passed in.
type reloadPacer struct {
	last  time.Time // last reload
	level int       // 0: never reloaded; n: the gap is gap(n)
}

func gap(level int) time.Duration {
	g := reloadBaseGap
	for i := 1; i < level && g < reloadMaxGap; i++ {
		g *= 2
	}
	return min(g, reloadMaxGap)
}

// Wait returns how long a reload wanted at now must be held.
func (p *reloadPacer) Wait(now time.Time) time.Duration {
	if p.level == 0 {
		return 0
	}
	return max(p.last.Add(gap(p.level)).Sub(now), 0)
}

// Record notes a reload at now; waited says whether it had been held by
// Wait. Held reloads mean a burst and raise the gap; a reload long after
// the previous one means the burst is over and resets it.
func (p *reloadPacer) Record(now time.Time, waited bool) {
	switch {
	case p.level == 0:
		p.level = 1
	case waited:
		if gap(p.level) < reloadMaxGap {
			p.level++
		}
	case now.Sub(p.last) >= 2*gap(p.level):
		p.level = 1
	}
	p.last = now
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
