package controller

// Tests of the Swarm adapter (docker_swarm.go): the pure projection of a
// service and its tasks, and SwarmSource against a fake Docker API served
// on a unix socket to the real client.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
)

// overlayNet is an attachment to the overlay network name at the CIDR addresses.
func overlayNet(name string, addrs ...string) swarm.NetworkAttachment {
	n := swarm.Network{ID: "net-" + name, DriverState: swarm.Driver{Name: "overlay"}}
	n.Spec.Name = name
	return swarm.NetworkAttachment{Network: n, Addresses: addrs}
}

func ingressNet(addr string) swarm.NetworkAttachment {
	a := overlayNet("ingress", addr)
	a.Network.Spec.Ingress = true
	return a
}

func task(id, service string, slot int, node string, state swarm.TaskState, nets ...swarm.NetworkAttachment) swarm.Task {
	return swarm.Task{ID: id, ServiceID: service, Slot: slot, NodeID: node, DesiredState: swarm.TaskStateRunning,
		Status: swarm.TaskStatus{State: state}, NetworksAttachments: nets}
}

func service(id, name string, labels map[string]string) swarm.Service {
	s := swarm.Service{ID: id}
	s.Spec.Name, s.Spec.Labels = name, labels
	return s
}

// ended is t as Swarm keeps it in a service's history.
func ended(t swarm.Task) swarm.Task {
	t.DesiredState = swarm.TaskStateShutdown
	return t
}

// onlyReady is t as Swarm creates it when it must not start yet.
func onlyReady(t swarm.Task) swarm.Task {
	t.DesiredState = swarm.TaskStateReady
	return t
}

func global(s swarm.Service) swarm.Service {
	s.Spec.Mode.Global = &swarm.GlobalService{}
	return s
}

// fakeSwarmAPI serves services, nodes, tasks and events as a manager's
// engine would, and records which services' tasks were asked for.
type fakeSwarmAPI struct {
	mu           sync.Mutex
	services     []swarm.Service
	nodes        []swarm.Node
	tasks        []swarm.Task
	asked        []string // service filters of task lists
	networkLists int
	events       chan events.Message
	filters      filters.Args // of the last events subscription
}

func (f *fakeSwarmAPI) handler(t *testing.T) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/_ping", func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("Api-Version", "1.41") })
	reply := func(w http.ResponseWriter, v any) {
		if err := json.NewEncoder(w).Encode(v); err != nil {
			t.Error(err)
		}
	}
	mux.HandleFunc("/v1.41/services", func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		reply(w, f.services)
	})
	mux.HandleFunc("/v1.41/networks", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.networkLists++
		reply(w, []map[string]string{{"Id": "net-front", "Name": "front", "Driver": "overlay"}})
	})
	mux.HandleFunc("/v1.41/nodes", func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		reply(w, f.nodes)
	})
	mux.HandleFunc("/v1.41/tasks", func(w http.ResponseWriter, r *http.Request) {
		args, err := filters.FromJSON(r.URL.Query().Get("filters"))
		if err != nil {
			t.Error(err)
		}
		services := args.Get("service")
		if len(services) != 1 || args.Len() != 1 {
			t.Errorf("task list filters %v: want one service, and its history", r.URL.Query().Get("filters"))
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.asked = append(f.asked, services...)
		if !slices.ContainsFunc(f.services, func(s swarm.Service) bool { return s.ID == services[0] }) {
			http.Error(w, `{"message":"service `+services[0]+` not found"}`, http.StatusNotFound)
			return
		}
		var out []swarm.Task
		for _, tk := range f.tasks {
			if tk.ServiceID == services[0] {
				out = append(out, tk)
			}
		}
		reply(w, out)
	})
	mux.HandleFunc("/v1.41/events", func(w http.ResponseWriter, r *http.Request) {
		args, err := filters.FromJSON(r.URL.Query().Get("filters"))
		if err != nil {
			t.Error(err)
		}
		f.mu.Lock()
		f.filters = args
		f.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		enc := json.NewEncoder(w)
		for {
			select {
			case <-r.Context().Done():
				return
			case m := <-f.events:
				enc.Encode(m)
				w.(http.Flusher).Flush()
			}
		}
	})
	return mux
}

func newFakeSwarm(t *testing.T, f *fakeSwarmAPI) *SwarmSource {
	t.Helper()
	return newSwarmSource(serveDocker(t, f.handler(t)))
}

// serveDocker serves h on a unix socket and returns the real client for it.
func serveDocker(t *testing.T, h http.Handler) *client.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// swarmWorld: "web" (replicated, s.test) with two running tasks, one
// starting and one that failed; "edge" (global, e.test, port label); and
// "plain", which has no proxy labels.
func swarmWorld() *fakeSwarmAPI {
	edge := global(service("svc-edge", "edge", map[string]string{"proxy.host": "e.test", "proxy.port": "8080"}))
	edge.Spec.EndpointSpec = &swarm.EndpointSpec{Ports: []swarm.PortConfig{{TargetPort: 9000, Protocol: "tcp"}}}
	failed := task("t-web-4", "svc-web", 4, "n2", swarm.TaskStateFailed, overlayNet("front", "10.0.1.9/24"))
	stopping := task("t-web-old", "svc-web", 1, "n2", swarm.TaskStateRunning, overlayNet("front", "10.0.1.4/24"))
	stopping.DesiredState = swarm.TaskStateShutdown // replaced by t-web-1, being stopped
	return &fakeSwarmAPI{
		events: make(chan events.Message),
		services: []swarm.Service{
			service("svc-web", "web", map[string]string{"proxy.host": "s.test"}),
			edge,
			service("svc-plain", "plain", map[string]string{"com.example": "x"}),
		},
		nodes: []swarm.Node{{ID: "n1", Status: swarm.NodeStatus{State: swarm.NodeStateReady}},
			{ID: "n2", Status: swarm.NodeStatus{State: swarm.NodeStateReady}}},
		tasks: []swarm.Task{
			task("t-web-1", "svc-web", 1, "n1", swarm.TaskStateRunning, ingressNet("10.0.0.5/24"), overlayNet("front", "10.0.1.5/24")),
			task("t-web-2", "svc-web", 2, "n2", swarm.TaskStateRunning, overlayNet("front", "10.0.1.6/24")),
			task("t-web-3", "svc-web", 3, "n2", swarm.TaskStateStarting, overlayNet("front", "10.0.1.7/24")),
			failed,
			stopping,
			task("t-edge-n1", "svc-edge", 0, "n1", swarm.TaskStateRunning, overlayNet("front", "10.0.1.20/24")),
			task("t-plain-1", "svc-plain", 1, "n1", swarm.TaskStateRunning, overlayNet("front", "10.0.1.30/24")),
		},
	}
}

// summary is what the tests compare of a projected task.
func summary(c Container) string {
	var nets []string
	for _, n := range sortedKeys(c.Networks) {
		nets = append(nets, n+"="+c.Networks[n])
	}
	return fmt.Sprintf("%s %s %s %s %v", c.ID, c.Name, c.State, strings.Join(nets, ","), c.Exposed)
}

func TestSwarmSourceListsTheWantedTasksOfOptedInServices(t *testing.T) {
	f := swarmWorld()
	src := newFakeSwarm(t, f)
	cs, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cs {
		got = append(got, summary(c))
		if c.Running != (c.State == "running") {
			t.Errorf("%s: Running %v with state %s", c.Name, c.Running, c.State)
		}
	}
	want := []string{
		"t-web-1 web.1 running front=10.0.1.5 [80]",        // ingress left out, prefix stripped, 80 by default
		"t-web-2 web.2 running front=10.0.1.6 [80]",        //
		"t-web-3 web.3 created front=10.0.1.7 [80]",        // starting: not routed, no 503 site
		"t-edge-n1 edge.n1 running front=10.0.1.20 [9000]", // global: named by node; published target port
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("List:\n got %q\nwant %q", got, want)
	}
	web1 := cs[slices.IndexFunc(cs, func(c Container) bool { return c.ID == "t-web-1" })]
	for k, v := range map[string]string{"proxy.host": "s.test", swarmTaskLabel: "t-web-1", swarmServiceNameLabel: "web"} {
		if web1.Labels[k] != v {
			t.Errorf("label %s = %q, want %q (labels %v)", k, web1.Labels[k], v, web1.Labels)
		}
	}
	if f.services[0].Spec.Labels[swarmTaskLabel] != "" {
		t.Error("the service's own label map was written to")
	}
	if slices.Contains(f.asked, "svc-plain") {
		t.Errorf("tasks of a service without proxy labels were listed: %v", f.asked)
	}
}

// Desired works on the projected tasks as on containers: one site per
// service host, the running tasks' overlay addresses as backends, the
// starting task not among them, and the proxy.port label over the
// published port.
func TestDesiredRoutesTheRunningTasksOfAService(t *testing.T) {
	src := newFakeSwarm(t, swarmWorld())
	cs, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	nginx := Container{ID: "nginx-task", Name: "nginx.n1", Running: true, Networks: map[string]string{"front": "10.0.1.2"}}
	cfg, _, ps := Desired(cs, Inputs{Nginx: nginx, Webroot: "/var/www/acme"})
	if len(ps) != 0 {
		t.Errorf("problems: %v", ps)
	}
	if len(cfg.Sites) != 2 {
		t.Fatalf("sites: %+v", cfg.Sites)
	}
	s := site(t, cfg, "s.test")
	if len(s.Locations) != 1 || !slices.Equal(s.Locations[0].Backends, []string{"10.0.1.5:80", "10.0.1.6:80"}) || s.Locations[0].Resolve {
		t.Errorf("s.test locations: %+v", s.Locations)
	}
	if e := site(t, cfg, "e.test"); len(e.Locations) != 1 || !slices.Equal(e.Locations[0].Backends, []string{"10.0.1.20:8080"}) {
		t.Errorf("e.test locations: %+v", e.Locations)
	}
}

// A service removed between the service list and its task list is gone,
// not an error that fails the pass.
func TestSwarmSourceSkipsAServiceRemovedMeanwhile(t *testing.T) {
	f := swarmWorld()
	listed := f.services
	f.services = listed[1:] // web is gone by the time its tasks are asked for
	mux := http.NewServeMux()
	mux.HandleFunc("/v1.41/services", func(w http.ResponseWriter, _ *http.Request) { json.NewEncoder(w).Encode(listed) })
	mux.Handle("/", f.handler(t))
	cs, err := newSwarmSource(serveDocker(t, mux)).List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(cs) != 1 || cs[0].ID != "t-edge-n1" {
		t.Fatalf("List = %+v, want edge's task only", cs)
	}
}

// Swarm creates the task that replaces a single replica in a stop-first
// update before it allocates the task's network attachments. Until then
// the task takes the networks of the service's spec, by name, so the
// service keeps its host (503 with its certificate) instead of failing the
// scope rule. Only then does List read the network names.
func TestANewTaskOfAnUpdateHasTheServicesNetworksBeforeItsOwn(t *testing.T) {
	f := swarmWorld()
	src := newFakeSwarm(t, f)
	if _, err := src.List(context.Background()); err != nil || f.networkLists != 0 {
		t.Fatalf("List with no update under way: %v, %d network lists", err, f.networkLists)
	}
	web := &f.services[0]
	web.Spec.TaskTemplate.Networks = []swarm.NetworkAttachmentConfig{{Target: "net-front"}}
	f.tasks = []swarm.Task{ended(task("t-web-old", "svc-web", 1, "n1", swarm.TaskStateShutdown, overlayNet("front", "10.0.1.5/24"))),
		onlyReady(task("t-web-new", "svc-web", 1, "n1", swarm.TaskStateNew))}
	cs, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].State != StateTaskStarting || !mapsEqual(cs[0].Networks, map[string]string{"front": ""}) {
		t.Fatalf("List = %s", describeTasks(cs))
	}
	nginx := Container{ID: "nginx", Running: true, Networks: map[string]string{"front": "10.0.1.2"}}
	cfg, _, ps := Desired(cs, Inputs{Nginx: nginx})
	if s := site(t, cfg, "s.test"); len(s.Locations) != 1 || len(s.Locations[0].Backends) != 0 || len(ps) != 0 {
		t.Errorf("s.test: %+v, problems %v", s.Locations, ps)
	}
}

func describeTasks(cs []Container) string {
	var s []string
	for _, c := range cs {
		s = append(s, summary(c))
	}
	return "[" + strings.Join(s, "; ") + "]"
}

func TestProjectTasksStates(t *testing.T) {
	web := service("svc-web", "web", map[string]string{"proxy.host": "s.test"})
	front := overlayNet("front", "10.0.1.5/24")
	old := ended(task("old", "", 1, "n1", swarm.TaskStateShutdown, front)) // the service has served before
	cases := []struct {
		name    string
		svc     swarm.Service
		tasks   []swarm.Task
		down    map[string]bool
		want    []string // state of each listed task, by name
		running []bool
	}{
		{"running tasks are routed", web, []swarm.Task{task("a", "", 1, "n1", swarm.TaskStateRunning, front)},
			nil, []string{"running"}, []bool{true}},
		{"tasks on their way are created, not running", web, []swarm.Task{
			task("a", "", 1, "n1", swarm.TaskStatePending), task("b", "", 2, "n1", swarm.TaskStatePreparing),
			task("c", "", 3, "n1", swarm.TaskStateAssigned), task("d", "", 4, "n1", swarm.TaskStateStarting)},
			nil, []string{"created", "created", "created", "created"}, []bool{false, false, false, false}},
		{"ended tasks are left out", web, []swarm.Task{
			task("a", "", 1, "n1", swarm.TaskStateFailed), task("b", "", 2, "n1", swarm.TaskStateShutdown),
			task("c", "", 3, "n1", swarm.TaskStateRejected), task("d", "", 4, "n1", swarm.TaskStateComplete),
			task("e", "", 5, "n1", swarm.TaskStateOrphaned)},
			nil, nil, nil},
		{"a service that has served and runs nothing keeps its host with its starting task", web,
			[]swarm.Task{old, task("a", "", 1, "n1", swarm.TaskStateStarting)}, nil, []string{StateTaskStarting}, []bool{false}},
		{"a service that has served and runs a task leaves the new one created", web,
			[]swarm.Task{old, task("a", "", 1, "n1", swarm.TaskStateRunning, front), task("b", "", 1, "n2", swarm.TaskStatePreparing)},
			nil, []string{"running", "created"}, []bool{true, false}},
		{"a task that ended is history, not listed, even while it still runs", web,
			[]swarm.Task{ended(task("a", "", 1, "n1", swarm.TaskStateRunning, front))}, nil, nil, nil},
		{"a task Swarm wants only ready is on its way, whatever it says", web,
			[]swarm.Task{onlyReady(task("a", "", 1, "n1", swarm.TaskStateReady, front)), onlyReady(task("b", "", 2, "n1", swarm.TaskStateRunning, front))},
			nil, []string{"created", "created"}, []bool{false, false}},
		{"the new task of a stop-first update of one replica keeps the host", web,
			[]swarm.Task{old, onlyReady(task("a", "", 1, "n2", swarm.TaskStateReady, front))}, nil, []string{StateTaskStarting}, []bool{false}},
		{"a running task on a node that is down is not running", web,
			[]swarm.Task{task("a", "", 1, "n1", swarm.TaskStateRunning, front)}, map[string]bool{"n1": true},
			[]string{StateTaskNodeDown}, []bool{false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cs := projectTasks(tc.svc, tc.tasks, tc.down, nil)
			var states []string
			var running []bool
			for _, c := range cs {
				states, running = append(states, c.State), append(running, c.Running)
			}
			if !slices.Equal(states, tc.want) || !slices.Equal(running, tc.running) {
				t.Fatalf("states %v running %v, want %v %v", states, running, tc.want, tc.running)
			}
		})
	}
}

// Which tasks that cannot answer keep their service's host (503 with its
// certificate): one on a node that is down, and a new one of a service
// that has served and runs nothing (an update, a restart); but not the
// first tasks of a new service, which would reload nginx for a 503 site
// about to work.
func TestWhichTasksThatCannotAnswerKeepTheHost(t *testing.T) {
	web := service("svc-web", "web", map[string]string{"proxy.host": "s.test"})
	nginx := Container{ID: "nginx", Running: true, Networks: map[string]string{"front": "10.0.1.2"}}
	lone := projectTasks(web, []swarm.Task{task("a", "", 1, "n1", swarm.TaskStateRunning, overlayNet("front", "10.0.1.5/24"))},
		map[string]bool{"n1": true}, nil)
	cfg, _, _ := Desired(lone, Inputs{Nginx: nginx})
	if s := site(t, cfg, "s.test"); len(s.Locations) != 1 || len(s.Locations[0].Backends) != 0 {
		t.Errorf("lone task on a down node: %+v", s.Locations)
	}
	// Swarm allocates a task's network attachments before it assigns it to a node.
	next := task("b", "", 1, "n2", swarm.TaskStateStarting, overlayNet("front", "10.0.1.6/24"))
	old := ended(task("a", "", 1, "n1", swarm.TaskStateFailed, overlayNet("front", "10.0.1.5/24")))
	cfg, _, _ = Desired(projectTasks(web, []swarm.Task{old, next}, nil, nil), Inputs{Nginx: nginx})
	if len(cfg.Sites) != 1 {
		t.Errorf("a service that has served lost its host while its next task starts: %+v", cfg.Sites)
	}
	created := projectTasks(web, []swarm.Task{next}, nil, nil)
	if cfg, _, _ = Desired(created, Inputs{Nginx: nginx}); len(cfg.Sites) != 0 {
		t.Errorf("a new service's starting task got a site: %+v", cfg.Sites)
	}
}

func TestTaskNames(t *testing.T) {
	if got := taskName("web", swarm.Task{Slot: 3, NodeID: "n1"}); got != "web.3" {
		t.Errorf("replicated: %s", got)
	}
	if got := taskName("edge", swarm.Task{NodeID: "n1abc"}); got != "edge.n1abc" {
		t.Errorf("global: %s", got)
	}
}

func TestServicePorts(t *testing.T) {
	spec := func(ports ...swarm.PortConfig) swarm.ServiceSpec {
		return swarm.ServiceSpec{EndpointSpec: &swarm.EndpointSpec{Ports: ports}}
	}
	cases := []struct {
		name string
		spec swarm.ServiceSpec
		want []int
	}{
		{"no endpoint spec: 80", swarm.ServiceSpec{}, []int{80}},
		{"one published port: its target", spec(swarm.PortConfig{TargetPort: 8080, PublishedPort: 8082}), []int{8080}},
		{"several: all targets, so proxy.port must choose", spec(swarm.PortConfig{TargetPort: 9000, Protocol: "tcp"},
			swarm.PortConfig{TargetPort: 8080, Protocol: "tcp"}), []int{8080, 9000}},
		{"UDP only: 80", spec(swarm.PortConfig{TargetPort: 53, Protocol: "udp"}), []int{80}},
	}
	for _, tc := range cases {
		if got := servicePorts(tc.spec); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestTaskAddresses(t *testing.T) {
	bridge := overlayNet("local", "172.20.0.5/16")
	bridge.Network.DriverState.Name = "bridge"
	dual := overlayNet("dual", "10.0.2.5/24", "fd00::5/64")
	v4, v6 := taskAddresses([]swarm.NetworkAttachment{ingressNet("10.0.0.5/24"), overlayNet("front", "10.0.1.5/24"),
		bridge, dual, overlayNet("pending")})
	want4 := map[string]string{"front": "10.0.1.5", "dual": "10.0.2.5", "pending": ""}
	if !mapsEqual(v4, want4) || !mapsEqual(v6, map[string]string{"dual": "fd00::5"}) {
		t.Errorf("v4 %v v6 %v", v4, v6)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Events subscribes to service and node events, and pokes on its own
// while the last List saw a task starting (Swarm sends no task events),
// and not otherwise.
func TestSwarmEventsPokeOnServiceEventsAndWhileTasksStart(t *testing.T) {
	f := swarmWorld()
	src := newFakeSwarm(t, f)
	src.settlePoll = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, errs := src.Events(ctx)
	next := func() string {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case err := <-errs:
			t.Fatalf("events: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
		return ""
	}
	f.events <- events.Message{Type: events.ServiceEventType, Action: "update", Actor: events.Actor{ID: "svc-web", Attributes: map[string]string{"name": "web"}}}
	if m := next(); m != "service update web" {
		t.Fatalf("first message %q", m)
	}
	f.mu.Lock()
	types := f.filters.Get("type")
	f.mu.Unlock()
	slices.Sort(types)
	if !slices.Equal(types, []string{"node", "service"}) {
		t.Errorf("subscribed to types %v", types)
	}
	if _, err := src.List(ctx); err != nil { // sees web.3 starting
		t.Fatal(err)
	}
	if m := next(); m != "swarm tasks starting" {
		t.Fatalf("while a task starts: %q", m)
	}
	f.mu.Lock()
	f.tasks[2].Status.State = swarm.TaskStateRunning
	f.mu.Unlock()
	if _, err := src.List(ctx); err != nil {
		t.Fatal(err)
	}
	// Drain a poke already under way, then nothing more: the node event
	// is the next message.
	go func() {
		f.events <- events.Message{Type: events.NodeEventType, Action: "update", Actor: events.Actor{ID: "n2", Attributes: map[string]string{"name": "node2"}}}
	}()
	for m := next(); m != "node update node2"; m = next() {
		if m != "swarm tasks starting" {
			t.Fatalf("unexpected %q", m)
		}
	}
	select {
	case m := <-msgs:
		t.Fatalf("poke with nothing starting: %q", m)
	case <-time.After(10 * src.settlePoll):
	}
}
