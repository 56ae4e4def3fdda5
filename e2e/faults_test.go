package e2e

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
)

// The fault schedule of TestFaultsLoseNothing: how often each fault is
// injected while the containers come and go.
const (
	faultKills          = 10 // SIGKILL of berth (docker kill, then docker start)
	faultNginxRestarts  = 3  // docker restart of nginx
	faultCuts           = 3  // every connection between berth and the engine cut
	faultContainers     = 50 // labelled containers started during the faults
	faultCertHosts      = 3  // hosts with proxy.acme=on, issued before the faults
	faultRemoveFraction = 0.35
)

// faultSettle bounds the convergence after the last fault: berth restarted
// by then must start, resync and reload once; a change it saw before can
// still wait out a pacing gap (converge).
const faultSettle = 2 * converge

// faultCounts is what one run of the fault schedule did.
type faultCounts struct {
	kills, nginxRestarts, cuts, cutConns int
	started, removed                     int
	orders, reloads                      int
}

func (c faultCounts) String() string {
	return fmt.Sprintf("berth SIGKILLed %d times, nginx restarted %d times, Docker connection cut %d times (%d connections); "+
		"%d containers started, %d removed; %d Pebble orders; %d nginx reloads",
		c.kills, c.nginxRestarts, c.cuts, c.cutConns, c.started, c.removed, c.orders, c.reloads)
}

func TestFaultsLoseNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e fault injection; not a -short test")
	}
	c := runFaults(t)
	t.Log(c)
}

// BenchmarkFaults runs the fault schedule once per iteration and reports
// its counts: go test ./e2e -run XXX -bench Faults -benchtime 1x
func BenchmarkFaults(b *testing.B) {
	var c faultCounts
	for b.Loop() {
		c = runFaults(b)
	}
	b.Log(c)
	for name, v := range map[string]int{
		"kills": c.kills, "nginx-restarts": c.nginxRestarts, "cuts": c.cuts,
		"started": c.started, "removed": c.removed, "orders": c.orders, "reloads": c.reloads,
	} {
		b.ReportMetric(float64(v), name)
	}
}

// runFaults certifies a few hosts, then lets labelled containers come and
// go while berth is SIGKILLed, nginx restarted and berth's Docker
// connection cut at random moments, and checks that nothing was lost:
// nginx -t passes, exactly the desired sites answer, no temporary file is
// left, and no certificate was lost or ordered again.
func runFaults(t testing.TB) faultCounts {
	seed := faultSeed(t)
	s, ca := newPebbleStack(t, func(t testing.TB, o stackOptions) *stack {
		o.dockerProxy = true
		return newStackWith(t, o)
	})
	roots := ca.IssuerRoots(t)
	leaves := s.certifyHosts(t, roots)
	orders := ca.Orders(t)

	ch := &churn{s: s, rng: rand.New(rand.NewPCG(seed, 1)), removed: map[string]bool{}}
	var c faultCounts
	var wg sync.WaitGroup
	var churnErr, faultErr error
	wg.Add(2)
	go func() { defer wg.Done(); churnErr = ch.run() }()
	go func() { defer wg.Done(); faultErr = s.injectFaults(rand.New(rand.NewPCG(seed, 2)), &c) }()
	wg.Wait()
	if err := errors.Join(churnErr, faultErr); err != nil {
		t.Fatal(err)
	}
	c.started, c.removed = len(ch.started), len(ch.removed)
	s.refreshPort()

	settled := time.Now()
	testenv.Eventually(t, faultSettle, func() error {
		if out, err := s.exec("nginx -t 2>&1"); err != nil {
			return fmt.Errorf("nginx -t in the nginx container: %v %s", err, out)
		}
		if err := ch.desiredSitesAnswer(); err != nil {
			return err
		}
		return s.sameCertificates(leaves, roots)
	})
	t.Logf("every site right %v after the last fault and the last container change", since(settled))
	if out, err := s.exec(leftoverFiles(confDir, certsDir)); err != nil || out != "" {
		t.Errorf("temporary files or dangling links left in %s or %s: %q %v", confDir, certsDir, out, err)
	}
	// berth's state volume is not mounted in nginx: look with a helper.
	state := "berth-e2e-" + s.id + "-state"
	if out, err := testenv.TryDocker(slices.Concat([]string{"run", "--rm"}, testenv.LabelArgs(),
		[]string{"-v", state + ":" + stateDir, testenv.NginxImage(t, "bookworm"), "sh", "-c", leftoverFiles(stateDir)})...); err != nil || out != "" {
		t.Errorf("temporary files or dangling links left in berth's state directory: %q %v", out, err)
	}
	c.orders, c.reloads = ca.Orders(t)-orders, s.reloads()
	if c.orders != 0 {
		t.Errorf("Pebble received %d new orders during the faults; the %d certificates were ordered again", c.orders, faultCertHosts)
	}
	return c
}

// leftoverFiles is a shell command that prints the temporary files (berth's
// writers all put ".tmp" in their names) and dangling symbolic links
// (a certificate whose version is gone) under dirs.
func leftoverFiles(dirs ...string) string {
	return "find " + strings.Join(dirs, " ") + ` -name '*.tmp*' -o -xtype l`
}

// faultSeed is BERTH_FAULTS_SEED, to replay a failed run, or a new one.
func faultSeed(t testing.TB) uint64 {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("BERTH_FAULTS_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("BERTH_FAULTS_SEED=%q: %v", v, err)
		}
	}
	t.Logf("fault schedule seed %d (replay with BERTH_FAULTS_SEED=%d)", seed, seed)
	return seed
}

// certifyHosts starts the proxy.acme=on backends and returns the leaf each
// one serves once its certificate is issued.
func (s *stack) certifyHosts(t testing.TB, roots *x509.CertPool) map[string]*x509.Certificate {
	leaves := map[string]*x509.Certificate{}
	for i := range faultCertHosts {
		name := fmt.Sprintf("tls%d", i)
		s.run(backend{name: name, labels: []string{"proxy.host=" + name + ".faults.test", "proxy.acme=on"}})
	}
	for i := range faultCertHosts {
		name := fmt.Sprintf("tls%d", i)
		testenv.Eventually(t, certDeadline, func() error {
			cs, err := s.servedTLS(name+".faults.test", name, roots)
			if err == nil {
				leaves[name] = cs.PeerCertificates[0]
			}
			return err
		})
	}
	return leaves
}

// sameCertificates is nil when every certified host serves its backend
// with the very certificate it had before the faults.
func (s *stack) sameCertificates(leaves map[string]*x509.Certificate, roots *x509.CertPool) error {
	for name, leaf := range leaves {
		cs, err := s.servedTLS(name+".faults.test", name, roots)
		if err != nil {
			return err
		}
		if got := cs.PeerCertificates[0]; !got.Equal(leaf) {
			return fmt.Errorf("%s.faults.test serves serial %s, had %s before the faults", name, got.SerialNumber, leaf.SerialNumber)
		}
	}
	return nil
}

// injectFaults runs the fault schedule in a random order with random gaps.
func (s *stack) injectFaults(rng *rand.Rand, c *faultCounts) error {
	var plan []string
	for kind, n := range map[string]int{"kill": faultKills, "nginx": faultNginxRestarts, "cut": faultCuts} {
		for range n {
			plan = append(plan, kind)
		}
	}
	rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	for _, kind := range plan {
		<-time.After(time.Duration(300+rng.IntN(2000)) * time.Millisecond) // a random moment, not a synchronisation
		var err error
		switch kind {
		case "kill":
			c.kills++
			if _, err = testenv.TryDocker("kill", s.berth); err == nil {
				_, err = testenv.TryDocker("start", s.berth)
			}
		case "nginx":
			c.nginxRestarts++
			_, err = testenv.TryDocker("restart", s.nginx)
		case "cut":
			c.cuts++
			c.cutConns += s.proxy.Cut()
		}
		if err != nil {
			return fmt.Errorf("fault %s: %w", kind, err)
		}
	}
	return nil
}

// churn starts the labelled containers one after another and removes a
// random running one after some of the starts, as deploys do.
type churn struct {
	s       *stack
	rng     *rand.Rand
	started []string
	running []string
	removed map[string]bool
}

func (ch *churn) run() error {
	for i := range faultContainers {
		<-time.After(time.Duration(ch.rng.IntN(400)) * time.Millisecond) // arrival pattern, not a synchronisation
		name := fmt.Sprintf("c%02d", i)
		if _, err := ch.s.start(backend{name: name, labels: []string{"proxy.host=" + name + ".faults.test"}}); err != nil {
			return err
		}
		ch.started = append(ch.started, name)
		ch.running = append(ch.running, name)
		if ch.rng.Float64() >= faultRemoveFraction {
			continue
		}
		k := ch.rng.IntN(len(ch.running))
		gone := ch.running[k]
		ch.running = append(ch.running[:k], ch.running[k+1:]...)
		if _, err := testenv.TryDocker("rm", "-f", "berth-e2e-"+ch.s.id+"-"+gone); err != nil {
			return err
		}
		ch.removed[gone] = true
	}
	return nil
}

// desiredSitesAnswer is nil when every running container's host answers
// 200 from it and every removed one's 503.
func (ch *churn) desiredSitesAnswer() error {
	var errs []string
	for _, name := range ch.started {
		var err error
		if ch.removed[name] {
			err = ch.s.noVhost(name + ".faults.test")
		} else {
			_, err = ch.s.servedBy(name+".faults.test", "/", name)
		}
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d sites wrong:\n%s", len(errs), len(ch.started), strings.Join(errs, "\n"))
	}
	return nil
}
