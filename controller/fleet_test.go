package controller

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/nginxconf"
)

// fakeFleet records what a Swarm manager's loop hands over.
type fakeFleet struct {
	mu      sync.Mutex
	applies []nginxconf.Files
	err     error
}

func (f *fakeFleet) Nginx(context.Context) (Container, string, error) {
	n := testNginx
	n.Networks = map[string]string{"front": ""}
	return n, "nginx version: nginx/1.22.1", nil
}

func (f *fakeFleet) Apply(_ context.Context, files nginxconf.Files, _ *logrus.Entry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies = append(f.applies, files)
	return f.err
}

func TestAFleetGetsEveryPassWithoutExecOrSignal(t *testing.T) {
	dir := t.TempDir()
	eng := &fakeEngine{containers: []Container{svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80)}, confDir: dir}
	fleet := &fakeFleet{}
	c := New(eng, nil, Options{ConfDir: dir, Webroot: "/var/www/acme", Fleet: fleet}, quietLog())
	passAt(c, 0)
	if len(fleet.applies) != 1 || !strings.Contains(string(fleet.applies[0]["berth-a.test.conf"]), "172.18.0.2") {
		t.Fatalf("first pass handed over %d file sets; want one routing a.test to its address", len(fleet.applies))
	}
	passAt(c, 1)
	if len(fleet.applies) != 2 || !nginxconf.Diff(fleet.applies[0], fleet.applies[1]).Empty() {
		t.Fatal("an unchanged pass must hand the same files over again, so lagging nodes catch up")
	}
	eng.containers = []Container{svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80), svc("b", 3, map[string]string{"proxy.host": "b.test"}, 80)}
	passAt(c, 2)
	if last := fleet.applies[len(fleet.applies)-1]; last["berth-b.test.conf"] == nil || last["berth-a.test.conf"] == nil {
		t.Fatalf("a new service is not in the files handed over: %v", last)
	}
	if eng.execs != 0 || eng.signals != 0 {
		t.Fatalf("the manager ran %d execs and %d signals; each node's agent does that", eng.execs, eng.signals)
	}
	if files, _ := nginxconf.ReadOwned(dir); len(files) != 0 {
		t.Fatalf("the manager wrote %d files to its own conf dir; nothing there is served", len(files))
	}
}

func TestAFleetThatFailsIsRetriedWithTheSameFiles(t *testing.T) {
	dir := t.TempDir()
	eng := &fakeEngine{containers: []Container{svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80)}, confDir: dir}
	fleet := &fakeFleet{err: errors.New("agent on node n2 unreachable")}
	c := New(eng, nil, Options{ConfDir: dir, Webroot: "/var/www/acme", Fleet: fleet}, quietLog())
	if again := passAt(c, 0); again <= 0 {
		t.Fatal("a failed push must schedule a retry")
	}
	fleet.err = nil
	passAt(c, 1)
	if len(fleet.applies) != 2 || fleet.applies[1]["berth-a.test.conf"] == nil {
		t.Fatalf("the retry handed over %d sets; want the same files again", len(fleet.applies))
	}
}
