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
		c.pacer.Event(now)
		c.pacer.Event(now)
		eng.containers = append(eng.containers, svc("s"+string(rune('a'+i)), 10+i, map[string]string{"proxy.host": string(rune('a'+i)) + ".test"}, 80))
		c.reconcile(context.Background(), now)
	}
	if eng.signals > 1 {
		t.Fatalf("%d reloads for 10 changes within one second of a burst, want 1", eng.signals)
	}
}

func TestPacerHoldsOnlyBurstsAndGrowsWithThem(t *testing.T) {
	var p reloadPacer
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	if p.Wait(t0) != 0 {
		t.Fatal("the first reload must not wait")
	}
	p.Record(t0, false)
	// Single changes a few seconds apart (deploy, remove, disconnect) each
	// reload at once.
	for i := 1; i <= 5; i++ {
		now := at(float64(2 * i))
		p.Event(now)
		if w := p.Wait(now); w != 0 {
			t.Fatalf("single change %d waits %v", i, w)
		}
		p.Record(now, false)
	}
	// A burst: 10 events a second for 19 s (100 containers started
	// together); a reload is wanted whenever an event came after the last.
	var reloads []time.Time
	lastEvent, lastReload, held := time.Time{}, at(10), false
	for ms := 20_000; ms < 60_000; ms += 10 {
		now := t0.Add(time.Duration(ms) * time.Millisecond)
		if ms < 39_000 && ms%100 == 0 {
			p.Event(now)
			lastEvent = now
		}
		if !lastEvent.After(lastReload) {
			continue
		}
		if p.Wait(now) > 0 {
			held = true
			continue
		}
		p.Record(now, held)
		reloads, lastReload, held = append(reloads, now), now, false
	}
	if len(reloads) > 5 {
		t.Fatalf("a burst of 19 s cost %d reloads at %v, want at most 5", len(reloads), reloads)
	}
	// The last change is applied once the burst is quiet, not a full gap later.
	if end := reloads[len(reloads)-1].Sub(at(39)); end < quietAfter-100*time.Millisecond || end > quietAfter+100*time.Millisecond {
		t.Fatalf("the last change of the burst was applied %v after the last event, want %v", end, quietAfter)
	}
	// After the burst a single change reloads at once again.
	p.Event(at(70))
	if w := p.Wait(at(70)); w != 0 {
		t.Fatalf("after the burst a single change waits %v", w)
	}
	// Two quick changes raise the gap; a change after a quiet spell must
	// not inherit it, even though its own event is brand new.
	var q reloadPacer
	q.Event(at(100))
	q.Record(at(100), false)
	q.Event(at(100.2))
	q.Record(at(100.2).Add(q.Wait(at(100.2))), true)
	q.Event(at(101.1))
	q.Record(at(101.1).Add(q.Wait(at(101.1))), true)
	if q.level == 0 {
		t.Fatal("held reloads did not raise the gap")
	}
	q.Event(at(108.5))
	if w := q.Wait(at(108.5)); w != 0 {
		t.Fatalf("a change after 7 s of quiet waits %v", w)
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
