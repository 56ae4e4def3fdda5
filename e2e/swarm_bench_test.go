package e2e

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// swarmBenchServices is how many services each arrival pattern of
// BenchmarkSwarmNewService creates per iteration.
const swarmBenchServices = 10

// BenchmarkSwarmNewService measures, on the three-node Swarm of TestSwarm
// (the stack of deploy/swarm/stack.yml), how long after `docker service
// create --detach` returns a new one-replica labelled service answers 200
// through the nginx of every node, for services created one after the
// other (sequential-*) and all at once, as a deploy script does (burst-*).
// The Swarm is started once, outside the timed loop:
//
//	BERTH_TESTENV_KEEP_IMAGES=1 go test ./e2e -run XXX -bench SwarmNewService -benchtime 1x -timeout 30m
func BenchmarkSwarmNewService(b *testing.B) {
	w := newSwarmSuite(b)
	all := w.alive()
	// afterRunning: from the task's switch to running (healthy) to 200
	// through every node, i.e. berth's share of the wait.
	var sequential, burst, afterRunning []float64
	lag := func(name string, served time.Time) {
		running, err := w.runningSince(name)
		if err != nil {
			b.Error(err)
			return
		}
		afterRunning = append(afterRunning, float64(served.Sub(running).Milliseconds()))
	}
	round := 0
	for b.Loop() {
		for k := range swarmBenchServices {
			name := fmt.Sprintf("seq%d-%d", round, k)
			d, err := w.timeNewService(all, name, name+".swarm.test")
			served := time.Now()
			if err != nil {
				b.Fatal(err)
			}
			sequential = append(sequential, float64(d.Milliseconds()))
			lag(name, served)
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for k := range swarmBenchServices {
			wg.Go(func() {
				name := fmt.Sprintf("burst%d-%d", round, k)
				d, err := w.timeNewService(all, name, name+".swarm.test")
				served := time.Now()
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					b.Error(err)
					return
				}
				burst = append(burst, float64(d.Milliseconds()))
				lag(name, served)
			})
		}
		wg.Wait()
		round++
	}
	b.Logf("new service → 200 through all %d nodes: sequential %s ms, burst of %d %s ms; task running → served %s ms", len(all),
		distString(sequential), swarmBenchServices, distString(burst), distString(afterRunning))
	reportDist(b, "sequential", sequential)
	reportDist(b, "burst", burst)
	reportDist(b, "after-running", afterRunning)
}
