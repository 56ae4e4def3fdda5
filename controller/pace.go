package controller

import "time"

// Pacing. Passes are cheap (one list call and an in-memory render); nginx
// reloads are not: each one starts new workers and drains the old ones. So
// passes run almost at once after an event, and only reloads are paced.
const (
	// coalesceDelay merges the events Docker sends for one action (e.g.
	// network connect + start) into one pass without adding visible latency.
	coalesceDelay = 20 * time.Millisecond
	// minGap keeps even unrelated single changes a second apart, so nginx
	// never has several generations of workers draining at once. Changes
	// further apart than this reload at once.
	minGap = time.Second
	// quietAfter: a burst is over once Docker has sent no event for this
	// long; the change still held is then applied at once.
	quietAfter = 3 * time.Second
)

// burstGaps pace reloads while a burst goes on: each reload that had to
// wait moves to the next gap. 100 containers started together (about 19 s
// of events here) reload at 0, 1, 4, 10 s and once more when the burst is
// over: five reloads instead of a hundred, and no change waits more than
// the last gap.
var burstGaps = []time.Duration{minGap, 3 * time.Second, 6 * time.Second, 12 * time.Second}

// reloadPacer decides how long a wanted reload must wait. It holds only its
// own history; the clock is always passed in.
type reloadPacer struct {
	last      time.Time // last reload
	lastEvent time.Time // last Docker event
	level     int       // index into burstGaps
}

// Event notes a Docker event at now. An event after a quiet spell starts
// afresh: the burst before it is over.
func (p *reloadPacer) Event(now time.Time) {
	if now.Sub(p.lastEvent) >= quietAfter {
		p.level = 0
	}
	p.lastEvent = now
}

// Wait returns how long a reload wanted at now must be held: until the
// current gap since the last reload has passed or the burst has gone
// quiet, whichever comes first (but never under minGap).
func (p *reloadPacer) Wait(now time.Time) time.Duration {
	if p.last.IsZero() {
		return 0
	}
	if now.Sub(p.lastEvent) >= quietAfter {
		p.level = 0
	}
	at := p.last.Add(burstGaps[p.level])
	if quiet := p.lastEvent.Add(quietAfter); quiet.Before(at) {
		at = quiet
	}
	if floor := p.last.Add(minGap); at.Before(floor) {
		at = floor
	}
	return max(at.Sub(now), 0)
}

// Record notes a reload at now; waited says whether Wait had held it.
// A held reload means a burst: the next gap is longer.
func (p *reloadPacer) Record(now time.Time, waited bool) {
	if waited && p.level < len(burstGaps)-1 && now.Sub(p.lastEvent) < quietAfter {
		p.level++
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
