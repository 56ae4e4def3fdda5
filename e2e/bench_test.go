package e2e

import (
	"bufio"
	"crypto/x509"
	"encoding/json"
	"fmt"
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

// Benchmarks of what a user waits for, through the real engine and nginx:
//
//	go test ./e2e -run XXX -bench . -benchtime 1x -timeout 30m
//
// Each benchmark runs its whole scenario once per iteration and reports
// percentiles as custom metrics. berth paces reloads by Docker event rate
// (controller/pace.go): single changes reload at once, at most one a
// second; bursts get growing gaps. The latency benchmarks therefore leave
// berth quiet before each measured change (waitQuiet), and
// BenchmarkBurst100 measures a burst.

// pollTimeout is the request timeout while measuring: a request that nginx
// still sends to a removed backend hangs until the connect fails (seconds),
// which with the tests' 2 s timeout would hide the moment the vhost is gone.
const pollTimeout = 250 * time.Millisecond

func newBenchStack(b *testing.B, opts stackOptions) *stack {
	s := newStackWith(b, opts)
	s.client = newClient(pollTimeout)
	return s
}

// quiet is how long berth must have seen no event to treat the next change
// as a single change: its burst window (3 s) plus its minimum reload gap.
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

// services is how many onboardings and removals each iteration measures.
const services = 20

// BenchmarkOnboarding: `docker run` of a labelled container returns → the
// first 200 from it through nginx, over 20 services, with where the time
// went (from berth's log: event, list, render, write, nginx -t, SIGHUP;
// and from the client: SIGHUP → first 200).
func BenchmarkOnboarding(b *testing.B) {
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
	b.ReportMetric(percentile(totals, 50), "p50-ms")
	b.ReportMetric(percentile(totals, 95), "p95-ms")
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
	b.Logf("onboarding over %d services: p50 %.0f ms, p95 %.0f ms (breakdown from %d of them; event is relative to docker run returning)",
		len(totals), percentile(totals, 50), percentile(totals, 95), len(bds))
}

// BenchmarkRemoval: `docker rm -f` of a served container returns → nginx
// answers 503 for its host, over 20 services.
func BenchmarkRemoval(b *testing.B) {
	s := newBenchStack(b, stackOptions{})
	var totals []float64
	for i := 0; b.Loop(); i++ {
		for j := range services {
			b.StopTimer()
			host, name := fmt.Sprintf("off%d-%d.test", i, j), fmt.Sprintf("off%d-%d", i, j)
			c := s.run(backend{name: name, labels: []string{"proxy.host=" + host}})
			s.expectServed(host, "/", name)
			waitQuiet(b) // restarts the timer
			s.rm(c)
			removed := time.Now()
			testenv.Eventually(b, converge, func() error { return s.noVhost(host) })
			totals = append(totals, msSince(removed, time.Now()))
			b.Logf("%s: 503 %.0f ms after docker rm -f returned (at %s)", host, totals[len(totals)-1], removed.Format("15:04:05.000"))
		}
	}
	b.ReportMetric(percentile(totals, 50), "p50-ms")
	b.ReportMetric(percentile(totals, 95), "p95-ms")
}

// burstSize is the burst of the issue: 100 labelled containers started at
// once, as a large `docker compose up` would.
const burstSize = 100

// BenchmarkBurst100 starts 100 labelled containers together and reports
// how long until every one is served, how many reloads nginx went through,
// and the CPU time berth used meanwhile.
func BenchmarkBurst100(b *testing.B) {
	s := newBenchStack(b, stackOptions{})
	berthID := s.containerID(s.berth)
	var total time.Duration
	var reloads int
	var cpu time.Duration
	for i := 0; b.Loop(); i++ {
		waitQuiet(b)
		before, cpuBefore := s.reloads(), cpuUsage(b, berthID)
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, burstSize)
		for j := range burstSize {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("burst%d-%d", i, j)
				if _, err := s.start(backend{name: name, labels: []string{"proxy.host=" + name + ".test"}}); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		started := time.Since(start)
		for j := range burstSize {
			name := fmt.Sprintf("burst%d-%d", i, j)
			testenv.Eventually(b, 3*converge, func() error {
				_, err := s.servedBy(name+".test", "/", name)
				return err
			})
		}
		total += time.Since(start)
		reloads += s.reloads() - before
		cpu += cpuUsage(b, berthID) - cpuBefore
		b.Logf("burst %d: docker run of %d containers took %v; all served after %v", i, burstSize, started.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-until-all-served")
	b.ReportMetric(float64(reloads)/float64(b.N), "reloads")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "berth-cpu-ms")
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
