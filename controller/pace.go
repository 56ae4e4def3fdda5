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
	// never has several generations of workers draining at once.
	minGap = time.Second
	// burstWindow and burstEvents define a burst: more than burstEvents
	// Docker events within burstWindow. One deploy, restart or removal
	// sends two or three; 100 containers started together send about a
	// dozen a second for as long as the burst lasts.
	burstWindow = 3 * time.Second
	burstEvents = 8
	// reloadBaseGap and reloadMaxGap pace reloads during a burst: each
	// reload that had to wait doubles the gap (2, 4, 8, 10 s), so 100
	// containers started together (about 17 s of events here) cost five
	// reloads instead of a hundred, and the last one waits at most
	// reloadMaxGap. Once the burst is over the gap falls back to minGap.
	reloadBaseGap = 2 * time.Second
	reloadMaxGap  = 10 * time.Second
)

// reloadPacer decides how long a wanted reload must wait. It holds only its
// own history; the clock is always passed in.
type reloadPacer struct {
	last   time.Time   // last reload
	level  int         // reloads held in the current burst; the gap is gap(level+1)
	events []time.Time // Docker events within burstWindow
}

func gap(level int) time.Duration {
	g := reloadBaseGap
	for i := 1; i < level && g < reloadMaxGap; i++ {
		g *= 2
	}
	return min(g, reloadMaxGap)
}

// Event notes a Docker event at now.
func (p *reloadPacer) Event(now time.Time) {
	p.prune(now)
	p.events = append(p.events, now)
}

func (p *reloadPacer) prune(now time.Time) {
	i := 0
	for i < len(p.events) && now.Sub(p.events[i]) > burstWindow {
		i++
	}
	p.events = p.events[i:]
}

func (p *reloadPacer) busy(now time.Time) bool {
	p.prune(now)
	return len(p.events) > burstEvents
}

// Wait returns how long a reload wanted at now must be held.
func (p *reloadPacer) Wait(now time.Time) time.Duration {
	if p.last.IsZero() {
		return 0
	}
	g := minGap
	if p.busy(now) {
		g = gap(p.level + 1)
	} else {
		p.level = 0
	}
	return max(p.last.Add(g).Sub(now), 0)
}

// Record notes a reload at now; waited says whether Wait had held it.
// Held reloads during a burst raise the gap.
func (p *reloadPacer) Record(now time.Time, waited bool) {
	if waited && p.busy(now) && gap(p.level+1) < reloadMaxGap {
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
