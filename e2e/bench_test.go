package e2e

import (
	"bufio"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthproxy/berth/acme"
	"github.com/berthproxy/berth/internal/testenv"
)

// Benchmarks of what a user waits for, through the real engine, nginx and
// the berth image, one per arrival pattern of issue 8. One command runs
// them all and prints every figure (about 20 minutes on 2 cores):
//
//	BERTH_TESTENV_KEEP_IMAGES=1 go test ./e2e -run XXX -bench . -benchtime 1x -timeout 60m
//
// Each benchmark runs its whole scenario once per iteration and reports
// p50/p95/max as custom metrics, in milliseconds unless the unit says
// otherwise:
//
//   - BenchmarkTrickle: 20 services started 1.5 s apart (no quiet between
//     them), StartedAt → first 200 and `docker run` → first 200; reloads.
//   - BenchmarkBurst100: 100 services started by 8 parallel `docker run`
//     workers: per host StartedAt → served, reloads, and the failures of
//     a steady keep-alive load (startLoad) on a host served throughout.
//   - BenchmarkRemoval: `docker rm -f` → unrouted, at a 1.5 s cadence and
//     after quiet.
//   - BenchmarkReplicaChurn (bench_scale_test.go): replicas behind one
//     network alias under a steady load: 20 restarts, then 1 → 3 → 1
//     replicas; reloads and failed requests, on nginx 1.22 and the newest.
//   - BenchmarkScale1000 (bench_scale_test.go): 1,000 labelled containers:
//     berth's peak RSS, pass time, nginx reload time and memory.
//   - BenchmarkOnboardingAfterQuiet: one service after 4 s of quiet, with
//     where the time went; berth's best case, kept as the old baseline.
//   - BenchmarkHTTPSOnboarding and BenchmarkStartupWith200Certificates.
//
// The benchmarks never run in `go test ./...` (-bench is needed). They
// measure whatever code is in the tree: pacing, rendering and the Docker
// adapter are the subject, not a parameter.

// pollTimeout is the request timeout while measuring: a request that nginx
// still sends to a removed backend hangs until the connect fails (seconds),
// which with the tests' 2 s timeout would hide the moment the vhost is gone.
const pollTimeout = 250 * time.Millisecond

func newBenchStack(b *testing.B, opts stackOptions) *stack {
	s := newStackWith(b, opts)
	s.client = newClient(pollTimeout)
	return s
}

// quiet is how long berth must have reloaded nothing for the next change to
// go live at once: well over the pacer's gaps (minGap, burstGap), so the
// "after quiet" benchmarks measure berth with nothing held.
const quiet = 4 * time.Second

// waitQuiet stops the timer while berth's pacing history drains. It is a
// precondition of the measurement, not a synchronisation: there is nothing
// to observe but the passing of time.
func waitQuiet(b *testing.B) {
	b.StopTimer()
	<-time.After(quiet)
	b.StartTimer()
}

// logEntry is one JSON line of berth's log.
type logEntry struct {
	Time   time.Time
	Msg    string
	Fields map[string]any
}

// berthLog reads berth's JSON log lines since t.
func (s *stack) berthLog(since time.Time) []logEntry {
	s.t.Helper()
	out, err := logs(s.berth, "--since", since.Add(-time.Second).Format(time.RFC3339Nano))
	if err != nil {
		s.t.Fatal(err)
	}
	var entries []logEntry
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		ts, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(m["time"]))
		entries = append(entries, logEntry{Time: ts, Msg: fmt.Sprint(m["msg"]), Fields: m})
	}
	return entries
}

func (e logEntry) ms(field string) float64 {
	f, _ := strconv.ParseFloat(fmt.Sprint(e.Fields[field]), 64)
	return f
}

// breakdown is where one onboarding's time went, in milliseconds from
// `docker run` returning, as berth's log and the client saw it.
type breakdown struct {
	event, list, render, write, validate, signal, served, total float64
}

// onboardBreakdown finds, in berth's log, the start event of container id
// and the reload that wrote host's file.
func onboardBreakdown(entries []logEntry, id, host string, ran, served time.Time) (breakdown, bool) {
	bd := breakdown{total: msSince(ran, served)}
	var eventSeen, reloaded bool
	for _, e := range entries {
		switch {
		case !eventSeen && e.Msg == "docker event" && strings.Contains(fmt.Sprint(e.Fields["event"]), "start "+id[:12]):
			bd.event, eventSeen = msSince(ran, e.Time), true
		case !reloaded && e.Msg == "nginx reloaded" && strings.Contains(fmt.Sprint(e.Fields["written"]), "berth-"+host+".conf"):
			bd.list, bd.render, bd.write = e.ms("list_ms"), e.ms("render_ms"), e.ms("write_ms")
			bd.validate, bd.signal = e.ms("validate_ms"), e.ms("signal_ms")
			bd.served, reloaded = msSince(e.Time, served), true
		}
	}
	return bd, eventSeen && reloaded
}

func msSince(from, to time.Time) float64 { return float64(to.Sub(from).Microseconds()) / 1000 }

// percentile of sorted-in-place values, nearest rank.
func percentile(vs []float64, p float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	slices.Sort(vs)
	i := int(p/100*float64(len(vs))+0.5) - 1
	return vs[max(0, min(i, len(vs)-1))]
}

func median(get func(breakdown) float64, bds []breakdown) float64 {
	vs := make([]float64, len(bds))
	for i, b := range bds {
		vs[i] = get(b)
	}
	return percentile(vs, 50)
}

func (s *stack) containerID(name string) string {
	s.t.Helper()
	return testenv.Docker(s.t, "inspect", "--format", "{{.Id}}", name)
}

// services is how many onboardings and removals the trickle measures.
const services = 20

// trickleGap is the cadence of the trickle: changes further apart than
// about a second are single changes, not a burst (issue 8).
const trickleGap = 1500 * time.Millisecond

// pollEvery is how often an arrivals watcher starts a check of each host
// it waits for when only a few are pending: the resolution of the
// trickle's and the removals' latencies.
const pollEvery = 10 * time.Millisecond

// burstPollEvery is the same for a burst, where 100 hosts are pending at
// once: every 50 ms each keeps the polling itself from loading the 2-core
// machine (the latencies measured there are seconds).
const burstPollEvery = 50 * time.Millisecond

// pollInFlight bounds the checks in flight for one host and for a whole
// watcher. A check of a host whose removed backend nginx still tries hangs
// until pollTimeout; checks overlap so that the moment the host turns 503
// is still seen within about pollEvery, not a pollTimeout later.
const (
	pollInFlightPerHost = 8
	pollInFlight        = 32
)

// arrivals is a watcher that polls hosts until a check passes for each
// and records when one first did (the moment its answer arrived). Hosts
// are added when the change that should make the check pass begins
// (`docker run`, `rm -f`), so the watcher sees the first moment, not a
// later poll of a loop.
type arrivals struct {
	s     *stack
	check func(host, name string) error
	every time.Duration
	stop  chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	pending  map[string]string // host → backend name
	launched map[string]time.Time
	inFlight map[string]int
	passed   map[string]time.Time
	last     map[string]error
}

// watchArrivals starts an arrivals watcher that runs check (nil once it
// passes) on each pending host every `every`.
func (s *stack) watchArrivals(check func(host, name string) error, every time.Duration) *arrivals {
	w := &arrivals{s: s, check: check, every: every, stop: make(chan struct{}), done: make(chan struct{}),
		pending: map[string]string{}, launched: map[string]time.Time{}, inFlight: map[string]int{},
		passed: map[string]time.Time{}, last: map[string]error{}}
	go w.loop()
	s.t.Cleanup(w.close)
	return w
}

func (s *stack) servedCheck(host, name string) error {
	_, err := s.servedBy(host, "/", name)
	return err
}

func (s *stack) unroutedCheck(host, _ string) error { return s.noVhost(host) }

// add starts watching host, answered by backend name.
func (w *arrivals) add(host, name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.passed, host)
	w.pending[host] = name
}

func (w *arrivals) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *arrivals) loop() {
	var wg sync.WaitGroup
	defer func() { wg.Wait(); close(w.done) }()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	total := 0
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		now := time.Now()
		w.mu.Lock()
		for host, name := range w.pending {
			if total >= pollInFlight {
				break
			}
			if w.inFlight[host] >= pollInFlightPerHost || now.Sub(w.launched[host]) < w.every {
				continue
			}
			w.launched[host] = now
			w.inFlight[host]++
			total++
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := w.check(host, name)
				at := time.Now()
				w.mu.Lock()
				defer w.mu.Unlock()
				w.inFlight[host]--
				total--
				if _, still := w.pending[host]; !still {
					return
				}
				if err == nil {
					w.passed[host] = at
					delete(w.pending, host)
				}
				w.last[host] = err
			}()
		}
		w.mu.Unlock()
	}
}

// wait returns when each of hosts passed, failing the benchmark after
// timeout with the hosts still pending and their last error.
func (w *arrivals) wait(b *testing.B, hosts []string, timeout time.Duration) map[string]time.Time {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		var missing []string
		for _, h := range hosts {
			if _, ok := w.passed[h]; !ok {
				missing = append(missing, h)
			}
		}
		if len(missing) == 0 {
			got := make(map[string]time.Time, len(hosts))
			for _, h := range hosts {
				got[h] = w.passed[h]
			}
			w.mu.Unlock()
			return got
		}
		if time.Now().After(deadline) {
			first := missing[0]
			err := w.last[first]
			w.mu.Unlock()
			b.Fatalf("after %v, %d hosts never passed (%v…); last error for %s: %v", timeout, len(missing), missing[:min(5, len(missing))], first, err)
		}
		w.mu.Unlock()
		time.Sleep(pollEvery)
	}
}

// startedAt returns the engine's .State.StartedAt of each named container:
// the moment the container's process started, which is as early as any
// proxy can learn of it.
func (s *stack) startedAt(names []string) map[string]time.Time {
	s.t.Helper()
	got := map[string]time.Time{}
	for chunk := range slices.Chunk(names, 200) {
		out := testenv.Docker(s.t, slices.Concat([]string{"inspect", "--format", "{{.Name}} {{.State.StartedAt}}"}, chunk)...)
		for _, line := range strings.Split(out, "\n") {
			name, ts, ok := strings.Cut(strings.TrimSpace(line), " ")
			if !ok {
				continue
			}
			t, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				s.t.Fatalf("StartedAt of %s: %v", name, err)
			}
			got[strings.TrimPrefix(name, "/")] = t
		}
	}
	return got
}

// reportDist reports p50, p95 and max of vs (milliseconds) as name-p50-ms…
func reportDist(b *testing.B, name string, vs []float64) {
	b.Helper()
	if len(vs) == 0 {
		b.Errorf("no %s values", name)
		return
	}
	b.ReportMetric(percentile(vs, 50), name+"-p50-ms")
	b.ReportMetric(percentile(vs, 95), name+"-p95-ms")
	b.ReportMetric(slices.Max(vs), name+"-max-ms")
}

// distString is "p50 / p95 / max" of vs, for logs.
func distString(vs []float64) string {
	if len(vs) == 0 {
		return "none"
	}
	return fmt.Sprintf("%.0f / %.0f / %.0f ms (n=%d)", percentile(vs, 50), percentile(vs, 95), slices.Max(vs), len(vs))
}

// eventToReload finds, in berth's log, the start event of container id and
// the reload that wrote host's file: the time berth held the change plus
// its pass and nginx -t and SIGHUP.
func eventToReload(entries []logEntry, id, host string) (float64, bool) {
	var event time.Time
	for _, e := range entries {
		switch {
		case event.IsZero() && e.Msg == "docker event" && strings.Contains(fmt.Sprint(e.Fields["event"]), "start "+id[:12]):
			event = e.Time
		case !event.IsZero() && e.Msg == "nginx reloaded" && strings.Contains(fmt.Sprint(e.Fields["written"]), host):
			return msSince(event, e.Time), true
		}
	}
	return 0, false
}

// BenchmarkTrickle: 20 services started 1.5 s apart, each `docker run`
// begun on the cadence whatever the previous one is doing. Per service:
// StartedAt → first 200 through nginx (what issue 8 compares across
// proxies), `docker run` begun → first 200, and from berth's log the
// start event → the reload that carried it; reloads over the trickle.
func BenchmarkTrickle(b *testing.B) {
	s := newBenchStack(b, stackOptions{})
	w := s.watchArrivals(s.servedCheck, pollEvery)
	var fromStart, fromRun, held []float64
	reloads := 0
	for i := 0; b.Loop(); i++ {
		waitQuiet(b) // start from a quiet berth, as after any earlier activity
		before, logFrom := s.reloads(), time.Now()
		hosts, names, ran := make([]string, services), make([]string, services), make([]time.Time, services)
		ids := make([]string, services)
		var wg sync.WaitGroup
		errs := make(chan error, services)
		tick := time.NewTicker(trickleGap)
		for j := range services {
			if j > 0 {
				<-tick.C
			}
			hosts[j], names[j] = fmt.Sprintf("tr%d-%d.test", i, j), fmt.Sprintf("tr%d-%d", i, j)
			ran[j] = time.Now()
			w.add(hosts[j], names[j])
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := s.start(backend{name: names[j], labels: []string{"proxy.host=" + hosts[j]}})
				if err != nil {
					errs <- err
				}
				ids[j] = c
			}()
		}
		tick.Stop()
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		served := w.wait(b, hosts, 3*converge)
		reloads += s.reloads() - before
		b.StopTimer()
		started := s.startedAt(ids)
		entries := s.berthLog(logFrom)
		for j, h := range hosts {
			fromStart = append(fromStart, msSince(started[ids[j]], served[h]))
			fromRun = append(fromRun, msSince(ran[j], served[h]))
			if ms, ok := eventToReload(entries, s.containerID(ids[j]), h); ok {
				held = append(held, ms)
			}
		}
		b.StartTimer()
	}
	reportDist(b, "started-to-200", fromStart)
	reportDist(b, "run-to-200", fromRun)
	reportDist(b, "event-to-reload", held)
	b.ReportMetric(float64(reloads)/float64(b.N), "reloads")
	b.Logf("trickle of %d at %v: StartedAt → 200 %s; docker run → 200 %s; event → reload %s; %d reloads",
		services, trickleGap, distString(fromStart), distString(fromRun), distString(held), reloads/b.N)
}

// burstSize is the burst of the issue: 100 labelled containers started at
// once, as a large `docker compose up` would.
const burstSize = 100

// burstWorkers is how many `docker run`s run at once in the burst.
const burstWorkers = 8

// loadConns is the number of keep-alive connections of the steady loads.
const loadConns = 4

// BenchmarkBurst100 starts 100 labelled containers with 8 parallel
// `docker run` workers, while a steady keep-alive load runs against a host
// that is served before and throughout. It reports per host StartedAt →
// served, the time until all are served, nginx's reloads during the burst,
// the load's failures (counted as wrk counts them) and berth's CPU time.
func BenchmarkBurst100(b *testing.B) {
	s := newBenchStack(b, stackOptions{})
	s.run(backend{name: "steady", labels: []string{"proxy.host=steady.test"}})
	s.expectServed("steady.test", "/", "steady")
	berthID := s.containerID(s.berth)
	w := s.watchArrivals(s.servedCheck, burstPollEvery)
	var perHost, untilAll []float64
	var reloads int
	var cpu time.Duration
	var load loadResult
	for i := 0; b.Loop(); i++ {
		waitQuiet(b)
		before, cpuBefore := s.reloads(), cpuUsage(b, berthID)
		l := s.startLoad("steady.test", loadConns)
		start := time.Now()
		hosts, ids := make([]string, burstSize), make([]string, burstSize)
		jobs := make(chan int)
		errs := make(chan error, burstSize)
		var wg sync.WaitGroup
		for range burstWorkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					name := fmt.Sprintf("burst%d-%d", i, j)
					hosts[j] = name + ".test"
					w.add(hosts[j], name)
					c, err := s.start(backend{name: name, labels: []string{"proxy.host=" + hosts[j]}})
					if err != nil {
						errs <- err
					}
					ids[j] = c
				}
			}()
		}
		for j := range burstSize {
			jobs <- j
		}
		close(jobs)
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		ranAll := time.Since(start)
		served := w.wait(b, hosts, 5*converge)
		res := l.Stop()
		last := slices.MaxFunc(slices.Collect(maps.Values(served)), time.Time.Compare)
		untilAll = append(untilAll, msSince(start, last))
		reloads += s.reloads() - before
		cpu += cpuUsage(b, berthID) - cpuBefore
		load.Requests, load.Errors, load.BadStatus = load.Requests+res.Requests, load.Errors+res.Errors, load.BadStatus+res.BadStatus
		b.StopTimer()
		started := s.startedAt(ids)
		for j, h := range hosts {
			perHost = append(perHost, msSince(started[ids[j]], served[h]))
		}
		b.Logf("burst %d: docker run of %d containers took %v; all served %v after the first docker run; load on steady.test: %v",
			i, burstSize, ranAll.Round(time.Millisecond), last.Sub(start).Round(time.Millisecond), res)
		b.Logf("burst %d stages: %s", i, reloadStages(s.berthLog(start)))
		b.StartTimer()
	}
	reportDist(b, "started-to-served", perHost)
	b.ReportMetric(percentile(untilAll, 50), "ms-until-all-served")
	b.ReportMetric(float64(reloads)/float64(b.N), "reloads")
	b.ReportMetric(float64(load.Errors)/float64(b.N), "load-errors")
	b.ReportMetric(float64(load.BadStatus)/float64(b.N), "load-bad-status")
	b.ReportMetric(float64(load.Requests)/float64(b.N), "load-requests")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "berth-cpu-ms")
	b.Logf("burst of %d: per host StartedAt → served %s; %d reloads; load %d requests, %d errors, %d bad status",
		burstSize, distString(perHost), reloads/b.N, load.Requests/b.N, load.Errors/b.N, load.BadStatus/b.N)
}

// reloadStages summarises berth's reloads in a log: what bounds a burst's
// latency is the time between reloads, and that is the pacer's gap or the
// pass itself (list, nginx -t), whichever is longer.
func reloadStages(entries []logEntry) string {
	var list, validate, signal, gaps, held []float64
	var last time.Time
	for _, e := range entries {
		switch e.Msg {
		case "nginx reloaded":
			list, validate, signal = append(list, e.ms("list_ms")), append(validate, e.ms("validate_ms")), append(signal, e.ms("signal_ms"))
			if !last.IsZero() {
				gaps = append(gaps, msSince(last, e.Time))
			}
			last = e.Time
		case "change waits for reload pacing":
			held = append(held, e.ms("retry_in")/1e6)
		}
	}
	return fmt.Sprintf("%d reloads; per reload (p50 / p95 / max ms) list %s, nginx -t %s, SIGHUP %s; between reloads %s; %d pacer holds of %s",
		len(list), distString(list), distString(validate), distString(signal), distString(gaps), len(held), distString(held))
}

// BenchmarkRemoval: `docker rm -f` of a served container → nginx answers
// 503 for its host. "cadence" removes 20 services 1.5 s apart (each rm
// begun on the cadence); "after-quiet" removes 10 one at a time after 4 s
// of quiet. Both report from the rm begun and from it returning.
func BenchmarkRemoval(b *testing.B) {
	b.Run("cadence", func(b *testing.B) { benchRemoval(b, services, true) })
	b.Run("after-quiet", func(b *testing.B) { benchRemoval(b, services/2, false) })
}

func benchRemoval(b *testing.B, n int, cadence bool) {
	s := newBenchStack(b, stackOptions{})
	up, down := s.watchArrivals(s.servedCheck, burstPollEvery), s.watchArrivals(s.unroutedCheck, pollEvery)
	var fromRm, fromReturn []float64
	reloads := 0
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		hosts, names := make([]string, n), make([]string, n)
		var wg sync.WaitGroup
		sem := make(chan struct{}, burstWorkers)
		for j := range n {
			hosts[j], names[j] = fmt.Sprintf("off%d-%d.test", i, j), fmt.Sprintf("off%d-%d", i, j)
			up.add(hosts[j], names[j])
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				if _, err := s.start(backend{name: names[j], labels: []string{"proxy.host=" + hosts[j]}}); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		up.wait(b, hosts, 3*converge)
		b.StartTimer()
		before := s.reloads()
		begun, returned := make([]time.Time, n), make([]time.Time, n)
		var tick *time.Ticker
		if cadence {
			waitQuiet(b)
			tick = time.NewTicker(trickleGap)
		}
		for j := range n {
			if !cadence {
				waitQuiet(b)
			} else if j > 0 {
				<-tick.C
			}
			begun[j] = time.Now()
			down.add(hosts[j], names[j])
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := testenv.TryDocker("rm", "-f", "berth-e2e-"+s.id+"-"+names[j]); err != nil {
					b.Error(err)
				}
				returned[j] = time.Now()
			}()
			if !cadence {
				wg.Wait()
				down.wait(b, hosts[j:j+1], converge)
			}
		}
		if tick != nil {
			tick.Stop()
		}
		wg.Wait()
		gone := down.wait(b, hosts, 3*converge)
		reloads += s.reloads() - before
		for j, h := range hosts {
			fromRm = append(fromRm, msSince(begun[j], gone[h]))
			fromReturn = append(fromReturn, msSince(returned[j], gone[h]))
		}
	}
	reportDist(b, "rm-to-503", fromRm)
	reportDist(b, "rm-returned-to-503", fromReturn)
	b.ReportMetric(float64(reloads)/float64(b.N), "reloads")
	b.Logf("removal of %d (cadence %v): rm -f begun → 503 %s; rm -f returned → 503 %s; %d reloads",
		n, cadence, distString(fromRm), distString(fromReturn), reloads/b.N)
}

// BenchmarkOnboardingAfterQuiet: one service at a time, each after 4 s of
// quiet (berth's best case, and the shape of the benchmarks before issue
// 8): `docker run` returned → the first 200, over 20 services, with where
// the time went (from berth's log: event, list, render, write, nginx -t,
// SIGHUP; and from the client: SIGHUP → first 200).
func BenchmarkOnboardingAfterQuiet(b *testing.B) {
	s := newBenchStack(b, stackOptions{})
	var totals []float64
	var bds []breakdown
	for i := 0; b.Loop(); i++ {
		for j := range services {
			waitQuiet(b)
			host, name := fmt.Sprintf("on%d-%d.test", i, j), fmt.Sprintf("on%d-%d", i, j)
			start := time.Now()
			c := s.run(backend{name: name, labels: []string{"proxy.host=" + host}})
			ran := time.Now()
			testenv.Eventually(b, converge, func() error {
				_, err := s.servedBy(host, "/", name)
				return err
			})
			served := time.Now()
			totals = append(totals, msSince(ran, served))
			b.StopTimer()
			if bd, ok := onboardBreakdown(s.berthLog(start), s.containerID(c), host, ran, served); ok {
				bds = append(bds, bd)
			}
			b.StartTimer()
		}
	}
	reportDist(b, "run-returned-to-200", totals)
	reportBreakdown(b, bds)
	b.Logf("onboarding after quiet over %d services: %s (breakdown from %d of them; event is relative to docker run returning)",
		len(totals), distString(totals), len(bds))
}

// reportBreakdown reports the median of each stage of bds.
func reportBreakdown(b *testing.B, bds []breakdown) {
	for _, m := range []struct {
		unit string
		get  func(breakdown) float64
	}{
		{"event-ms", func(x breakdown) float64 { return x.event }},
		{"list-ms", func(x breakdown) float64 { return x.list }},
		{"render-ms", func(x breakdown) float64 { return x.render }},
		{"write-ms", func(x breakdown) float64 { return x.write }},
		{"validate-ms", func(x breakdown) float64 { return x.validate }},
		{"signal-ms", func(x breakdown) float64 { return x.signal }},
		{"signal-to-200-ms", func(x breakdown) float64 { return x.served }},
	} {
		b.ReportMetric(median(m.get, bds), "median-"+m.unit)
	}
}

// cpuUsage reads a container's CPU time from its cgroup (v1 or v2).
func cpuUsage(b *testing.B, id string) time.Duration {
	b.Helper()
	for _, p := range []string{"/sys/fs/cgroup/cpuacct/docker/" + id + "/cpuacct.usage", "/sys/fs/cgroup/cpu,cpuacct/docker/" + id + "/cpuacct.usage"} {
		if raw, err := os.ReadFile(p); err == nil {
			ns, _ := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
			return time.Duration(ns)
		}
	}
	for _, p := range []string{"/sys/fs/cgroup/system.slice/docker-" + id + ".scope/cpu.stat", "/sys/fs/cgroup/docker/" + id + "/cpu.stat"} {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
				us, _ := strconv.ParseInt(v, 10, 64)
				return time.Duration(us) * time.Microsecond
			}
		}
	}
	b.Fatalf("no cgroup CPU accounting found for container %s", id)
	return 0
}

// BenchmarkHTTPSOnboarding: `docker run` of a labelled service returns →
// the first HTTPS 200 through nginx with a chain that verifies against
// Pebble's root (Pebble with PEBBLE_VA_NOSLEEP=1), over 10 services.
func BenchmarkHTTPSOnboarding(b *testing.B) {
	s, ca := newPebbleStack(b, newBenchStack)
	roots := ca.IssuerRoots(b)
	var totals []float64
	for i := 0; b.Loop(); i++ {
		for j := range 10 {
			waitQuiet(b)
			host, name := fmt.Sprintf("tls%d-%d.test", i, j), fmt.Sprintf("tls%d-%d", i, j)
			s.run(backend{name: name, labels: []string{"proxy.host=" + host, "proxy.acme=on"}})
			ran := time.Now()
			testenv.Eventually(b, certDeadline, func() error {
				_, err := s.servedTLS(host, name, roots)
				return err
			})
			totals = append(totals, msSince(ran, time.Now()))
		}
	}
	b.ReportMetric(percentile(totals, 50), "p50-ms")
	b.ReportMetric(percentile(totals, 95), "p95-ms")
}

// BenchmarkStartupWith200Certificates: `docker start` of berth with 200
// stored certificates and 200 labelled services → nginx serves them over
// HTTPS. The CA is unreachable (berth has no network): stored
// certificates must be served without it.
func BenchmarkStartupWith200Certificates(b *testing.B) {
	const n = 200
	s := newBenchStack(b, stackOptions{berth: func(*stack) []string {
		return []string{"--network", "none", "-e", "BERTH_ACME_CA=https://ca.invalid/directory"}
	}})
	store := acme.Store{Dir: b.TempDir()}
	pool := x509.NewCertPool()
	for j := range n {
		host := fmt.Sprintf("st%d.test", j)
		chain, key, cert := testenv.SelfSigned(b, host, time.Now().Add(-time.Hour), time.Now().Add(60*24*time.Hour))
		if err := store.Save(host, chain, key, acme.Meta{}); err != nil {
			b.Fatal(err)
		}
		pool.AddCert(cert)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for j := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			name := fmt.Sprintf("st%d", j)
			if _, err := s.start(backend{name: name, labels: []string{"proxy.host=" + name + ".test", "proxy.acme=on"}}); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	var totals []float64
	for b.Loop() {
		b.StopTimer()
		testenv.Docker(b, "stop", s.berth)
		testenv.Docker(b, "cp", filepath.Clean(store.Dir)+"/.", s.berth+":"+certsDir)
		waitQuiet(b)
		start := time.Now()
		testenv.Docker(b, "start", s.berth)
		// berth writes all 200 sites in one pass and nginx loads them in
		// one reload, so the first one served over HTTPS times them all;
		// every one is then checked with the timer stopped.
		testenv.Eventually(b, converge, func() error {
			_, err := s.servedTLS("st199.test", "st199", pool)
			return err
		})
		totals = append(totals, msSince(start, time.Now()))
		b.StopTimer()
		for j := range n {
			if _, err := s.servedTLS(fmt.Sprintf("st%d.test", j), fmt.Sprintf("st%d", j), pool); err != nil {
				b.Fatalf("after start-up: %v", err)
			}
		}
		b.StartTimer()
	}
	b.ReportMetric(percentile(totals, 50), "ms-until-all-200-served")
}
