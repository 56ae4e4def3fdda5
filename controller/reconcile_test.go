package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/nginxconf"
)

// fakeEngine is the unit-layer stand-in for Docker: a container list, an
// nginx -t verdict and a record of signals.
type fakeEngine struct {
	mu         sync.Mutex
	containers []Container
	listErr    error
	validate   func(confDir string) (int, string) // nginx -t
	signalErr  error
	confDir    string
	execs      int
	signals    int
	signalled  []string         // container IDs, in order
	notNginx   map[string]bool  // containers where nginx -V fails
	execErr    map[string]error // containers where exec itself fails
	events     chan string      // nil: a stream that never sends
	eventErrs  chan error
	subscribed int
	nginxV     string // nginx -V output; "" is nginx 1.22.1
}

func (f *fakeEngine) List(context.Context) ([]Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Container(nil), f.containers...), f.listErr
}

func (f *fakeEngine) Events(ctx context.Context) (<-chan string, <-chan error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subscribed++
	if f.events == nil {
		return make(chan string), make(chan error)
	}
	return f.events, f.eventErrs
}

func (f *fakeEngine) set(cs ...Container) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers = append(slices.Clone(cs), testNginx)
}

func (f *fakeEngine) counts() (signals, subscribed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.signals, f.subscribed
}

func (f *fakeEngine) Exec(_ context.Context, id string, cmd []string) (int, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.execErr[id]; err != nil {
		return -1, "", err
	}
	if len(cmd) == 2 && cmd[1] == "-V" {
		if f.notNginx[id] {
			return 127, "exec: \"nginx\": executable file not found in $PATH", nil
		}
		if f.nginxV != "" {
			return 0, f.nginxV, nil
		}
		return 0, "nginx version: nginx/1.22.1\nconfigure arguments: --with-http_v2_module", nil
	}
	f.execs++
	if f.validate != nil {
		code, out := f.validate(f.confDir)
		return code, out, nil
	}
	return 0, "syntax is ok", nil
}

func (f *fakeEngine) Signal(_ context.Context, id, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.signalErr != nil {
		return f.signalErr
	}
	f.signals++
	f.signalled = append(f.signalled, id)
	return nil
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func newTestController(t *testing.T, cs ...Container) (*Controller, *fakeEngine) {
	dir := t.TempDir()
	eng := &fakeEngine{containers: append(cs, testNginx), confDir: dir}
	return newController(eng, Options{ConfDir: dir, Webroot: "/var/www/acme"}), eng
}

func newController(eng *fakeEngine, opts Options) *Controller {
	return New(eng, NewNginx(eng, opts.NginxName, "", ""), opts, quietLog())
}

// far apart enough that the reload pacer never holds a pass in these tests.
func passAt(c *Controller, i int) time.Duration {
	return c.reconcile(context.Background(), time.Now().Add(time.Duration(i)*time.Minute))
}

func TestUnchangedStateWritesAndReloadsNothing(t *testing.T) {
	c, eng := newTestController(t, svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80))
	passAt(c, 0)
	if eng.signals != 1 {
		t.Fatalf("first pass: %d reloads, want 1", eng.signals)
	}
	fi, _ := os.Stat(filepath.Join(c.opts.ConfDir, "berth-a.test.conf"))
	// A fresh controller, as after a berth restart, must find nothing to do.
	c2 := newController(eng, c.opts)
	passAt(c2, 1)
	passAt(c, 2)
	if eng.signals != 1 || eng.execs != 1 {
		t.Fatalf("after unchanged passes: %d reloads, %d validations; want 1 and 1", eng.signals, eng.execs)
	}
	fi2, _ := os.Stat(filepath.Join(c.opts.ConfDir, "berth-a.test.conf"))
	if !fi.ModTime().Equal(fi2.ModTime()) {
		t.Fatal("an unchanged file was rewritten")
	}
}

func TestRejectedConfigIsRolledBackAndOnlyTheBadHostIsHeldBack(t *testing.T) {
	c, eng := newTestController(t, svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80))
	passAt(c, 0)
	good, _ := os.ReadFile(filepath.Join(c.opts.ConfDir, "berth-a.test.conf"))
	// nginx now rejects any a.test file that mentions port 81.
	eng.validate = func(dir string) (int, string) {
		b, _ := os.ReadFile(filepath.Join(dir, "berth-a.test.conf"))
		if strings.Contains(string(b), ":81;") {
			return 1, `nginx: [emerg] something in /etc/nginx/conf.d/berth-a.test.conf:5`
		}
		return 0, "ok"
	}
	eng.containers = []Container{testNginx,
		svc("a", 2, map[string]string{"proxy.host": "a.test", "proxy.port": "81"}, 80),
		svc("b", 3, map[string]string{"proxy.host": "b.test"}, 80)}
	if again := passAt(c, 1); again == 0 {
		t.Fatal("a rejected pass should be retried")
	}
	now, _ := os.ReadFile(filepath.Join(c.opts.ConfDir, "berth-a.test.conf"))
	if string(now) != string(good) {
		t.Fatal("rejected file was not rolled back")
	}
	if _, err := os.Stat(filepath.Join(c.opts.ConfDir, "berth-b.test.conf")); !os.IsNotExist(err) {
		t.Fatal("the rejected pass left b.test written without validation")
	}
	passAt(c, 2) // retry: a.test keeps its old file, b.test lands
	if _, err := os.Stat(filepath.Join(c.opts.ConfDir, "berth-b.test.conf")); err != nil {
		t.Fatal("b.test was held back by a.test's rejected file")
	}
	now, _ = os.ReadFile(filepath.Join(c.opts.ConfDir, "berth-a.test.conf"))
	if string(now) != string(good) {
		t.Fatal("quarantined file was written again")
	}
	if eng.signals != 2 {
		t.Fatalf("%d reloads, want 2 (initial, then b.test)", eng.signals)
	}
}

func TestNothingIsWrittenWhileNginxIsDown(t *testing.T) {
	c, eng := newTestController(t, svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80))
	eng.containers = eng.containers[:1] // nginx gone
	passAt(c, 0)
	if files, _ := nginxconf.ReadOwned(c.opts.ConfDir); len(files) != 0 || eng.signals != 0 {
		t.Fatalf("wrote %d files and sent %d signals with nginx down", len(files), eng.signals)
	}
	eng.containers = append(eng.containers, testNginx)
	passAt(c, 1)
	if files, _ := nginxconf.ReadOwned(c.opts.ConfDir); len(files) != 3 || eng.signals != 1 {
		t.Fatalf("after nginx is back: %d files, %d reloads", len(files), eng.signals)
	}
}

func TestDockerErrorNeverRemovesSites(t *testing.T) {
	c, eng := newTestController(t, svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80))
	passAt(c, 0)
	eng.listErr = errors.New("connection refused")
	if again := passAt(c, 1); again == 0 {
		t.Fatal("a failed list should be retried with backoff")
	}
	if _, err := os.Stat(filepath.Join(c.opts.ConfDir, "berth-a.test.conf")); err != nil {
		t.Fatal("a Docker error removed a site")
	}
}

func TestReloadsArePacedInABurst(t *testing.T) {
	c, eng := newTestController(t)
	start := time.Now()
	for i := range 10 {
		now := start.Add(time.Duration(i) * 100 * time.Millisecond)
		eng.containers = append(eng.containers, svc("s"+string(rune('a'+i)), 10+i, map[string]string{"proxy.host": string(rune('a'+i)) + ".test"}, 80))
		c.reconcile(context.Background(), now)
	}
	if eng.signals > 1 {
		t.Fatalf("%d reloads for 10 changes within one second of a burst, want 1", eng.signals)
	}
}

// paced replays changes arriving at the given times through the pacer, as
// the loop does (a held change is retried when its wait ends and carries
// every change that arrived meanwhile), and returns the reload times and
// each change's wait.
func paced(p *reloadPacer, changes []time.Time) (reloads []time.Time, waits []time.Duration) {
	pending := 0 // first change not yet applied
	for pending < len(changes) {
		now := changes[pending]
		if len(reloads) > 0 && reloads[len(reloads)-1].After(now) {
			now = reloads[len(reloads)-1]
		}
		// Later changes ask again before the wait is over, as passes on
		// their events do; they must not shorten it.
		w := p.Wait(now)
		for next := pending + 1; w > 0 && next < len(changes) && changes[next].Before(now.Add(w)); next++ {
			if w2 := p.Wait(changes[next]); changes[next].Add(w2) != now.Add(w) {
				panic(fmt.Sprintf("a pass at %v moved the held reload from %v to %v", changes[next], now.Add(w), changes[next].Add(w2)))
			}
		}
		now = now.Add(w)
		p.Record(now)
		reloads = append(reloads, now)
		for pending < len(changes) && !changes[pending].After(now) {
			waits = append(waits, now.Sub(changes[pending]))
			pending++
		}
	}
	return reloads, waits
}

func every(start time.Time, gap time.Duration, n int) []time.Time {
	var ts []time.Time
	for i := range n {
		ts = append(ts, start.Add(time.Duration(i)*gap))
	}
	return ts
}

func TestPacerLetsATrickleThroughAndCoalescesOnlyBursts(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var p reloadPacer
	// A trickle: a service every 1.5 s (or every 1 s) each goes live at once.
	for _, gap := range []time.Duration{1500 * time.Millisecond, time.Second} {
		reloads, waits := paced(&p, every(t0, gap, 20))
		if len(reloads) != 20 || slices.Max(waits) != 0 {
			t.Fatalf("a trickle every %v: %d reloads, longest wait %v; want 20 and none", gap, len(reloads), slices.Max(waits))
		}
		t0 = t0.Add(time.Minute)
	}
	// A burst: 100 services over 19 s (8 parallel docker runs here).
	// The first change reloads at once, the next after minGap, the rest
	// one per burstGap.
	reloads, waits := paced(&p, every(t0, 190*time.Millisecond, 100))
	if most := 3 + int((19*time.Second-minGap)/burstGap); len(reloads) > most || slices.Max(waits) > burstGap {
		t.Fatalf("a 19 s burst: %d reloads, longest wait %v; want at most %d and %v", len(reloads), slices.Max(waits), most, burstGap)
	}
	// 10 changes within one second: one reload for all but the first.
	reloads, _ = paced(&p, every(t0.Add(time.Minute), 100*time.Millisecond, 10))
	if len(reloads) != 2 {
		t.Fatalf("10 changes within a second: %d reloads, want 2", len(reloads))
	}
	// After a burst, a lone change a second after the last reload goes live at once.
	last := reloads[len(reloads)-1]
	if w := p.Wait(last.Add(minGap)); w != 0 {
		t.Fatalf("after the burst, a change %v later waits %v", minGap, w)
	}
}

func TestProbeTriesEachNginxAddressAndNeverFollowsRedirects(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "moved.test" {
			http.Redirect(w, r, "https://moved.test"+r.URL.Path, http.StatusMovedPermanently)
			return
		}
		fmt.Fprintf(w, "%s %s", r.Host, r.URL.Path)
	}))
	defer srv.Close()
	c, _ := newTestController(t)
	n := c.nginx
	// 127.0.0.2 refuses: an address berth cannot reach, as on a network it does not share.
	n.addrs = []string{"127.0.0.2", "127.0.0.1"}
	n.httpPort = strings.TrimPrefix(srv.URL, "http://127.0.0.1:")
	body, err := n.Probe(context.Background(), "a.test", "/.well-known/acme-challenge/x")
	if err != nil || body != "a.test /.well-known/acme-challenge/x" {
		t.Fatalf("Probe = %q, %v", body, err)
	}
	if _, err := n.Probe(context.Background(), "moved.test", "/x"); err == nil || !strings.Contains(err.Error(), "301") {
		t.Fatalf("a redirected challenge path passed the self-check: %v", err)
	}
}

// docker rm -f: the container dies (its site answers 503 at once: one
// reload) and is destroyed a moment later. Dropping the idle site waits for
// the next change instead of costing a reload of its own; a site that still
// proxies somewhere is removed at once.
func TestRemovingAnIdleSiteRidesOnTheNextChange(t *testing.T) {
	a := svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80)
	b := svc("b", 3, map[string]string{"proxy.host": "b.test"}, 80)
	c, eng := newTestController(t, a, b)
	t0 := time.Now()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	exists := func(host string) bool {
		_, err := os.Stat(filepath.Join(c.opts.ConfDir, "berth-"+host+".conf"))
		return err == nil
	}
	c.reconcile(context.Background(), at(0))
	stopped := a
	stopped.Running, stopped.State, stopped.Networks = false, "exited", map[string]string{"front": ""}
	eng.containers = []Container{stopped, b, testNginx}
	c.reconcile(context.Background(), at(10)) // die
	if eng.signals != 2 || !exists("a.test") {
		t.Fatalf("after the die: %d reloads, a.test kept %v; want 2 and kept (503)", eng.signals, exists("a.test"))
	}
	eng.containers = []Container{b, testNginx}
	if again := c.reconcile(context.Background(), at(11.5)); again <= 0 { // destroy, after the pacer's gap
		t.Fatalf("the idle removal asked for no retry (%v)", again)
	}
	if eng.signals != 2 || !exists("a.test") {
		t.Fatalf("the destroy of a stopped container reloaded at once (%d reloads)", eng.signals)
	}
	// The next change (b removed while running) goes at once and takes a.test along.
	eng.containers = []Container{testNginx}
	c.reconcile(context.Background(), at(13))
	if eng.signals != 3 || exists("a.test") || exists("b.test") {
		t.Fatalf("after removing a running container: %d reloads, a.test %v, b.test %v; want 3 and both gone", eng.signals, exists("a.test"), exists("b.test"))
	}
	// Alone, an idle removal is applied once the delay is over.
	eng.containers = []Container{stopped, testNginx}
	c.reconcile(context.Background(), at(20))
	eng.containers = []Container{testNginx}
	c.reconcile(context.Background(), at(20.1))
	c.reconcile(context.Background(), at(20.1).Add(idleRemovalDelay))
	if exists("a.test") || eng.signals != 5 {
		t.Fatalf("after the delay: a.test %v, %d reloads; want removed with the 5th reload", exists("a.test"), eng.signals)
	}
}

// A replica with a health check joining the name nginx resolves must not
// get requests while it starts: the switch back to addresses goes live at
// once, even right after another reload, where a change is otherwise held.
func TestLeavingResolveIsNeverPaced(t *testing.T) {
	c, eng := newTestController(t, replica("web-1", 2, "web"))
	eng.nginxV = "nginx version: nginx/1.30.6\n"
	t0 := time.Now()
	c.reconcile(context.Background(), t0)
	if conf := readConf(t, c, "a.test"); !strings.Contains(conf, "server web:80 resolve") {
		t.Fatalf("the lone replica should be resolved by name:\n%s", conf)
	}
	starting := replica("web-2", 3, "web")
	starting.Health, starting.Healthcheck = HealthStarting, true
	eng.set(replica("web-1", 2, "web"), starting)
	if again := c.reconcile(context.Background(), t0.Add(300*time.Millisecond)); again > 0 || eng.signals != 2 {
		t.Fatalf("switching to addresses was paced (retry in %v, %d reloads); want a reload at once", again, eng.signals)
	}
	if conf := readConf(t, c, "a.test"); strings.Contains(conf, " resolve") {
		t.Fatalf("a.test still resolved by name:\n%s", conf)
	}
	// Any other change this soon is still paced.
	eng.set(replica("web-1", 2, "web"), starting, svc("b", 4, map[string]string{"proxy.host": "b.test"}, 80))
	if again := c.reconcile(context.Background(), t0.Add(400*time.Millisecond)); again <= 0 || eng.signals != 2 {
		t.Fatalf("a new host right after a reload was not paced (retry in %v, %d reloads)", again, eng.signals)
	}
}

func readConf(t *testing.T, c *Controller, host string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.opts.ConfDir, "berth-"+host+".conf"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
