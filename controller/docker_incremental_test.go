package controller

// The Docker adapter keeps its container list between passes and inspects
// only what events named: one change costs O(changed) Docker calls.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/client"
)

// fakeDockerAPI serves a list and inspects of containers and counts calls.
type fakeDockerAPI struct {
	mu         sync.Mutex
	containers map[string]string // ID → state ("running", "exited"); absent: gone
	lists      int
	inspects   map[string]int
	failing    string // ID whose inspect answers 500
}

func (f *fakeDockerAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/_ping", func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("Api-Version", "1.41") })
	mux.HandleFunc("/v1.41/containers/json", func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.lists++
		var entries []string
		for id, state := range f.containers {
			entries = append(entries, fmt.Sprintf(`{"Id":%q,"Names":["/%s"],"State":%q,"Labels":{"proxy.host":"%s.test"},
				"NetworkSettings":{"Networks":{"front":{"EndpointID":"e-%s","IPAddress":"172.18.0.2"}}}}`, id, id, state, id, id))
		}
		fmt.Fprint(w, "["+strings.Join(entries, ",")+"]")
	})
	mux.HandleFunc("/v1.41/containers/{id}/json", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		id := r.PathValue("id")
		f.inspects[id]++
		state, ok := f.containers[id]
		switch {
		case id == f.failing:
			http.Error(w, `{"message":"busy"}`, http.StatusInternalServerError)
		case !ok:
			http.Error(w, `{"message":"No such container: `+id+`"}`, http.StatusNotFound)
		default:
			fmt.Fprintf(w, `{"Id":%q,"Name":"/%s","Created":"2026-12-01T00:00:00Z","State":{"Status":%q,"Running":%v},
				"Config":{"Labels":{"proxy.host":"%s.test"},"ExposedPorts":{"80/tcp":{}}},
				"NetworkSettings":{"Networks":{"front":{"EndpointID":"e-%s","IPAddress":"172.18.0.2"}}}}`,
				id, id, state, state == "running", id, id)
		}
	})
	return mux
}

func (f *fakeDockerAPI) counts() (lists int, inspects map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	lists, inspects = f.lists, f.inspects
	f.lists, f.inspects = 0, map[string]int{}
	return lists, inspects
}

func newFakeDocker(t *testing.T, f *fakeDockerAPI) *DockerEngine {
	t.Helper()
	f.inspects = map[string]int{}
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f.handler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	return newDockerEngine(cli)
}

func states(t *testing.T, d *DockerEngine) map[string]string {
	t.Helper()
	cs, err := d.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range cs {
		out[c.Name] = c.State
	}
	return out
}

func TestOneChangeCostsOneInspectNotAList(t *testing.T) {
	f := &fakeDockerAPI{containers: map[string]string{}}
	for i := range 50 {
		f.containers[fmt.Sprintf("c%02d", i)] = "running"
	}
	d := newFakeDocker(t, f)
	d.subscribed = true // as Events does; no stream is needed here
	if got := states(t, d); len(got) != 50 {
		t.Fatalf("first list: %d containers", len(got))
	}
	if lists, inspects := f.counts(); lists != 1 || len(inspects) != 50 {
		t.Fatalf("first pass: %d lists, %d inspected; want 1 list and each container inspected once", lists, len(inspects))
	}
	event := func(typ events.Type, actor string, attrs map[string]string) {
		d.changed(events.Message{Type: typ, Actor: events.Actor{ID: actor, Attributes: attrs}})
	}
	// c07 stops (a container event) and c08 is disconnected (a network
	// event naming it): two inspects, no list.
	f.mu.Lock()
	f.containers["c07"] = "exited"
	f.mu.Unlock()
	event(events.ContainerEventType, "c07", nil)
	event(events.NetworkEventType, "net-id", map[string]string{"container": "c08"})
	if got := states(t, d); len(got) != 50 || got["c07"] != "exited" || got["c08"] != "running" {
		t.Fatalf("after the stop: %v", got)
	}
	if lists, inspects := f.counts(); lists != 0 || len(inspects) != 2 || inspects["c07"] != 1 || inspects["c08"] != 1 {
		t.Fatalf("a stop and a disconnect cost %d lists and inspects %v; want only c07 and c08 inspected", lists, inspects)
	}
	// A network connect of a container being started (not yet known) is
	// left to its start event: an inspect would wait for the start.
	f.mu.Lock()
	f.containers["new"] = "running"
	f.mu.Unlock()
	event(events.NetworkEventType, "net-id", map[string]string{"container": "new"})
	if got := states(t, d); got["new"] != "" {
		t.Fatalf("a container was read on the connect of its start: %v", got["new"])
	}
	event(events.ContainerEventType, "new", nil) // start
	if got := states(t, d); got["new"] != "running" {
		t.Fatalf("after its start event: %q", got["new"])
	}
	if _, inspects := f.counts(); len(inspects) != 1 || inspects["new"] != 1 {
		t.Fatalf("a start cost inspects %v, want one of the new container", inspects)
	}
	f.mu.Lock()
	delete(f.containers, "new")
	f.mu.Unlock()
	event(events.ContainerEventType, "new", nil)
	// c09 is removed: its inspect answers 404 and it leaves the list.
	f.mu.Lock()
	delete(f.containers, "c09")
	f.mu.Unlock()
	event(events.ContainerEventType, "c09", nil)
	if got := states(t, d); len(got) != 49 || got["c09"] != "" {
		t.Fatalf("after the removal: %d containers, c09 %q", len(got), got["c09"])
	}
	if lists, _ := f.counts(); lists != 0 {
		t.Fatalf("a removal cost %d lists", lists)
	}
	// A pass with no event costs nothing at all.
	states(t, d)
	if lists, inspects := f.counts(); lists != 0 || len(inspects) != 0 {
		t.Fatalf("a pass without events: %d lists, %d inspects", lists, len(inspects))
	}
	// An inspect that fails makes the pass list everything instead.
	f.mu.Lock()
	f.failing = "c10"
	f.mu.Unlock()
	event(events.ContainerEventType, "c10", nil)
	if got := states(t, d); len(got) != 49 {
		t.Fatalf("after a failed inspect: %d containers", len(got))
	}
	if lists, _ := f.counts(); lists != 1 {
		t.Fatalf("a failed inspect led to %d lists, want a full list", lists)
	}
	// A broken event stream (no subscription) means changes can be missed:
	// every pass lists until a stream is open again.
	d.mu.Lock()
	d.subscribed, d.complete = false, false
	d.mu.Unlock()
	states(t, d)
	states(t, d)
	if lists, _ := f.counts(); lists != 2 {
		t.Fatalf("without an event stream: %d lists for 2 passes, want 2", lists)
	}
}
