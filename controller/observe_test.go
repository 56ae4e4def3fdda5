package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berthproxy/berth/status"
)

func observed(t *testing.T, cs ...Container) (*Controller, *fakeEngine, *status.Board) {
	t.Helper()
	c, eng := newTestController(t, cs...)
	b := status.NewBoard("test", nil)
	c.opts.Observer = b
	return c, eng, b
}

func TestPassPublishesHostsBackendsAndWhyAContainerIsSkipped(t *testing.T) {
	web := svc("web", 2, map[string]string{"proxy.host": "a.test", "proxy.port": "8080", "proxy.basic-auth": "bob:" + bcryptHash}, 80, 8080)
	bad := svc("bad", 3, map[string]string{"proxy.host": "b.test", "proxy.port": "http"}, 80)
	only := svc("only", 4, map[string]string{"proxy.host": "c.test"}, 3000)
	c, _, b := observed(t, web, bad, only)
	passAt(c, 0)
	s := b.Snapshot(time.Now())

	if len(s.Hosts) != 2 || s.Hosts[0].Host != "a.test" {
		t.Fatalf("hosts = %+v", s.Hosts)
	}
	be := s.Hosts[0].Paths[0].Backends
	if len(be) != 1 || be[0] != (status.Backend{Container: "web", Address: "172.18.0.2:8080", Health: status.HealthNone, Ready: true}) {
		t.Errorf("backends = %+v", be)
	}
	if len(s.Skipped) != 1 || s.Skipped[0].Container != "bad" || s.Skipped[0].Label != "proxy.port" {
		t.Errorf("skipped = %+v", s.Skipped)
	}
	if s.Nginx.Version != "1.22.1" || !s.Nginx.Confirmed || s.Nginx.LastReload == nil || s.Nginx.LastReload.Result != status.ReloadOK {
		t.Errorf("nginx = %+v", s.Nginx)
	}
	why := map[string]string{}
	for _, name := range []string{"web", "only", "bad"} {
		lines, err := status.Why(s, name)
		if err != nil {
			t.Fatal(err)
		}
		why[name] = strings.Join(lines, "\n")
	}
	for name, want := range map[string]string{
		"web":  "Port 8080: set by proxy.port.",
		"only": "Port 3000: the only port the image exposes.",
		"bad":  `Skipped: label proxy.port="http"`,
	} {
		if !strings.Contains(why[name], want) {
			t.Errorf("why %s lacks %q:\n%s", name, want, why[name])
		}
	}
	if !strings.Contains(why["web"], "Network front: the first network (by name) that nginx is on too.") {
		t.Errorf("why web does not say why front:\n%s", why["web"])
	}
	data, _ := json.Marshal(s)
	if strings.Contains(string(data), bcryptHash[7:]) {
		t.Error("the snapshot shows a basic-auth hash")
	}
}

func TestRejectedReloadIsCountedAsRejected(t *testing.T) {
	c, eng, b := observed(t, svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80))
	eng.validate = func(string) (int, string) {
		return 1, "nginx: [emerg] unknown directive in /etc/nginx/conf.d/berth-a.test.conf:3"
	}
	passAt(c, 0)
	s := b.Snapshot(time.Now())
	if s.Counters.Reloads[status.ReloadRejected] != 1 || s.Counters.Reloads[status.ReloadOK] != 0 {
		t.Errorf("reloads = %v", s.Counters.Reloads)
	}
	if r := s.Nginx.LastReload; r == nil || r.Result != status.ReloadRejected || !strings.Contains(r.Error, "unknown directive") {
		t.Errorf("last reload = %+v", r)
	}
}

func TestPacedChangeIsPending(t *testing.T) {
	c, eng, b := observed(t, svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80))
	now := time.Now()
	c.reconcile(context.Background(), now)
	eng.set(svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80), svc("b", 3, map[string]string{"proxy.host": "b.test"}, 80))
	c.reconcile(context.Background(), now.Add(100*time.Millisecond))
	s := b.Snapshot(time.Now())
	if s.Pending == nil || !strings.Contains(strings.Join(s.Pending.Changes, ","), "berth-b.test.conf") {
		t.Fatalf("pending = %+v", s.Pending)
	}
	if s.LastPass.Error != "" {
		t.Errorf("a paced pass reads as an error: %q", s.LastPass.Error)
	}
}

func TestMissingNginxIsUnhealthy(t *testing.T) {
	c, eng, b := observed(t)
	eng.set()
	eng.containers = eng.containers[:0]
	b.Stream(true, false)
	passAt(c, 0)
	s := b.Snapshot(time.Now())
	if s.Healthy || !strings.Contains(s.HealthReason, "nginx") {
		t.Errorf("healthy=%v reason=%q", s.Healthy, s.HealthReason)
	}
}

// BenchmarkPublish1000 measures what publishing costs a pass over 1,000
// labelled containers: building the status part from the pass's view and
// handing it to the board, plus a snapshot as a scrape would take it.
func BenchmarkPublish1000(b *testing.B) {
	var cs []Container
	for i := range 1000 {
		cs = append(cs, svc(fmt.Sprintf("s%d", i), 2+i%250, map[string]string{"proxy.host": fmt.Sprintf("h%d.test", i)}, 80))
	}
	cfg, wants, problems := Desired(cs, Inputs{Nginx: testNginx})
	v := passView{listed: true, cs: cs, nginx: testNginx, cfg: cfg, wants: wants, problems: problems}
	board := status.NewBoard("bench", nil)
	var took []time.Duration
	for b.Loop() {
		start := time.Now()
		board.Publish(controllerPart(v, 1, start, time.Millisecond, nil, time.Time{}, nil))
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	q := func(p float64) float64 { return float64(took[int(p*float64(len(took)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.95), "p95-ms")
	b.ReportMetric(q(1), "max-ms")
	start := time.Now()
	s := board.Snapshot(time.Now())
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "snapshot-ms")
	if len(s.Hosts) != 1000 {
		b.Fatalf("%d hosts", len(s.Hosts))
	}
}
