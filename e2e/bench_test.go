package e2e

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
)

// Benchmarks of what a user waits for, through the real engine and nginx:
//
//	go test ./e2e -run XXX -bench . -benchtime 1x -timeout 30m
//
// berth paces reloads by contention (controller/pace.go): a change that
// arrives while berth is idle reloads at once, changes that arrive during
// a burst wait for a growing gap. The latency benchmarks therefore let berth
// become idle before each measured change (idleAfterReload), and
// BenchmarkReloadBurst measures the contended case.

// pollTimeout is the request timeout while measuring: a request that nginx
// still sends to a removed backend hangs until the connect fails (seconds),
// which with the tests' 2 s timeout would hide the moment the vhost is gone.
const pollTimeout = 250 * time.Millisecond

// newBenchStack is newStack with the short request timeout.
func newBenchStack(b *testing.B) *stack {
	s := newStack(b)
	s.client = newClient(pollTimeout)
	return s
}

// idleAfterReload is how long after its last reload berth counts as idle:
// twice its base reload gap of 2 s, after which the pacer resets.
const idleAfterReload = 4 * time.Second

// waitIdle lets berth's reload pacing reset, with the timer stopped. This
// is a precondition of the measurement, not a synchronisation: there is
// nothing to observe but the passing of time.
func waitIdle(b *testing.B) {
	b.StopTimer()
	<-time.After(idleAfterReload)
	b.StartTimer()
}

// BenchmarkOnboardingLatency: from `docker run` of a labelled container to
// nginx answering 200 from it.
func BenchmarkOnboardingLatency(b *testing.B) {
	s := newBenchStack(b)
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		waitIdle(b)
		start := time.Now()
		host := fmt.Sprintf("on%d.test", i)
		s.run(backend{name: fmt.Sprintf("on%d", i), labels: []string{"proxy.host=" + host}})
		testenv.Eventually(b, converge, func() error {
			_, err := s.servedBy(host, "/", fmt.Sprintf("on%d", i))
			return err
		})
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/onboard")
}

// BenchmarkRemovalLatency: from `docker rm -f` of a served container to
// nginx answering 503 for its host.
func BenchmarkRemovalLatency(b *testing.B) {
	s := newBenchStack(b)
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		host, name := fmt.Sprintf("off%d.test", i), fmt.Sprintf("off%d", i)
		c := s.run(backend{name: name, labels: []string{"proxy.host=" + host}})
		s.expectServed(host, "/", name)
		waitIdle(b)
		start := time.Now()
		s.rm(c)
		testenv.Eventually(b, converge, func() error { return s.noVhost(host) })
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/remove")
}

// burstSize is how many containers BenchmarkReloadBurst starts at once, as
// a `docker compose up` of a small stack would.
const burstSize = 20

// BenchmarkReloadBurst: burstSize labelled containers started together;
// reports the time until every one is served and how many reloads nginx
// went through meanwhile.
func BenchmarkReloadBurst(b *testing.B) {
	s := newBenchStack(b)
	var total time.Duration
	var reloads int
	for i := 0; b.Loop(); i++ {
		waitIdle(b)
		before := s.reloads()
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
		for j := range burstSize {
			name := fmt.Sprintf("burst%d-%d", i, j)
			testenv.Eventually(b, 3*converge, func() error {
				_, err := s.servedBy(name+".test", "/", name)
				return err
			})
		}
		total += time.Since(start)
		reloads += s.reloads() - before
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/burst")
	b.ReportMetric(float64(reloads)/float64(b.N), "reloads/burst")
}
