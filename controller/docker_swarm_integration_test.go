package controller

// SwarmSource against a real three-node Swarm built from Debian's docker.io
// inside containers (internal/testenv StartSwarm). It imports the Docker
// client, so its name starts with docker like the adapter files'.
//
// The test reaches the inner manager's engine with the real Docker client
// through `docker exec -i NODE docker system dial-stdio`: the Docker CLI's
// own stdio proxy to its daemon (what `ssh://` DOCKER_HOSTs use), present
// in every node image since it ships with docker.io. Each connection of
// the client is one such exec, so nothing in the node listens on TCP and
// the harness needs no change; the client keeps connections alive, so the
// exec costs only the first call of each connection.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
	"github.com/docker/docker/client"
)

// stdioConn is a net.Conn over the stdin and stdout of a process. Deadlines
// are not supported; the HTTP transport ends a connection by closing it.
type stdioConn struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out io.ReadCloser
}

func (c *stdioConn) Read(b []byte) (int, error)  { return c.out.Read(b) }
func (c *stdioConn) Write(b []byte) (int, error) { return c.in.Write(b) }
func (c *stdioConn) Close() error {
	c.in.Close()
	c.cmd.Process.Kill()
	c.cmd.Wait()
	return nil
}
func (c *stdioConn) LocalAddr() net.Addr              { return stdioAddr{} }
func (c *stdioConn) RemoteAddr() net.Addr             { return stdioAddr{} }
func (c *stdioConn) SetDeadline(time.Time) error      { return nil }
func (c *stdioConn) SetReadDeadline(time.Time) error  { return nil }
func (c *stdioConn) SetWriteDeadline(time.Time) error { return nil }

type stdioAddr struct{}

func (stdioAddr) Network() string { return "stdio" }
func (stdioAddr) String() string  { return "stdio" }

// innerEngine returns a Docker client for the engine inside the node
// container, each connection a `docker system dial-stdio` in the node.
func innerEngine(t *testing.T, node string) *client.Client {
	t.Helper()
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		// Not CommandContext: the connection outlives the dial's context.
		cmd := exec.Command("docker", "exec", "-i", node, "docker", "system", "dial-stdio")
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("dial-stdio into %s: %w", node, err)
		}
		return &stdioConn{cmd: cmd, in: in, out: out}, nil
	}
	cli, err := client.NewClientWithOpts(client.WithHost("http://"+node), client.WithDialContext(dial),
		client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// eventually polls cond every 100 ms until it holds or the deadline
// passes, and returns how long it took.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	return eventuallyEvery(t, 100*time.Millisecond, within, what, cond)
}

func eventuallyEvery(t *testing.T, every, within time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(every)
	defer tick.Stop()
	last := ""
	for {
		ok, state := cond()
		if ok {
			return time.Since(start)
		}
		last = state
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s; last: %s", what, within, last)
		}
		<-tick.C
	}
}

// runningIn lists the running Containers and whether each has an address
// in subnet on network.
func runningIn(cs []Container, network string, subnet netip.Prefix) (running []Container, allIn bool) {
	allIn = true
	for _, c := range cs {
		if !c.Running {
			continue
		}
		running = append(running, c)
		a, err := netip.ParseAddr(c.Networks[network])
		allIn = allIn && err == nil && subnet.Contains(a)
	}
	return running, allIn
}

// shortTaskID is a task ID as `docker service ps -q` prints it.
func shortTaskID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func describe(cs []Container) string {
	var s []string
	for _, c := range cs {
		s = append(s, fmt.Sprintf("%s(%s %v)", c.Name, c.State, c.Networks))
	}
	return "[" + strings.Join(s, " ") + "]"
}

func TestSwarmSourceFollowsAServiceOnARealSwarm(t *testing.T) {
	sw := testenv.StartSwarm(t, testenv.SwarmOptions{Nodes: 3})
	backend := testenv.BackendImage(t)
	sw.Load(t, backend)
	const mgr = 0 // node 0 created the swarm: a manager
	const network, subnet = "front", "10.77.0.0/24"
	sw.Docker(t, mgr, "network", "create", "--driver", "overlay", "--attachable", "--subnet", subnet, network)
	// Service labels (what deploy.labels sets), DNS round robin: no
	// virtual IP, which this kernel's missing IPVS could not serve anyway.
	sw.Docker(t, mgr, "service", "create", "--detach", "--name", "web", "--label", "proxy.host=s.test",
		"--endpoint-mode", "dnsrr", "--network", network, "--replicas", "2", "--env", "NAME=web", backend)
	// A service whose health check always fails: Swarm keeps its task
	// starting, then stops it at its first unhealthy result, fails it and
	// starts another; no task ever runs, and berth, which reads no task
	// health in API 1.41, never routes to one (docker_swarm.go). It stops
	// with SIGKILL: the 20.10 executor takes a container that exits 0
	// while it waits for health (the backend does on SIGTERM) for a task
	// that started, and reports it running until it sees the exit.
	sw.Docker(t, mgr, "service", "create", "--detach", "--name", "sick", "--label", "proxy.host=sick.test",
		"--endpoint-mode", "dnsrr", "--network", network, "--env", "HEALTHY=0", "--stop-signal", "SIGKILL", backend)

	// A global service: one task per node, named after the node's ID.
	sw.Docker(t, mgr, "service", "create", "--detach", "--name", "edge", "--mode", "global", "--label", "proxy.host=e.test",
		"--endpoint-mode", "dnsrr", "--network", network, backend)

	src := newSwarmSource(innerEngine(t, sw.Nodes[mgr].Name))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, errs := src.Events(ctx)
	// listOf lists the tasks of one service, and checks that the sick
	// service's are never running.
	listOf := func(service string) []Container {
		t.Helper()
		cs, err := src.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		var of []Container
		for _, c := range cs {
			if c.Labels[swarmServiceNameLabel] == "sick" && c.Running {
				t.Errorf("a task that never passed its health check is listed running: %s", describe(cs))
			}
			if c.Labels[swarmServiceNameLabel] == service {
				of = append(of, c)
			}
		}
		return of
	}
	list := func() []Container { t.Helper(); return listOf("web") }
	sub := netip.MustParsePrefix(subnet)
	var cs []Container
	took := eventually(t, 90*time.Second, "2 running tasks", func() (bool, string) {
		cs = list()
		running, in := runningIn(cs, network, sub)
		return len(running) == 2 && len(cs) == 2 && in, describe(cs)
	})
	t.Logf("2 tasks running after %s: %s", took.Round(time.Millisecond), describe(cs))

	// What nginx on the same overlay would be given: the two tasks.
	nginx := Container{ID: "nginx", Running: true, Networks: map[string]string{network: "10.77.0.250"}}
	cfg, _, ps := Desired(cs, Inputs{Nginx: nginx})
	var want []string
	for _, c := range cs {
		want = append(want, net.JoinHostPort(c.Networks[network], "80"))
	}
	slices.Sort(want)
	if len(cfg.Sites) != 1 || len(cfg.Sites[0].Locations) != 1 || !slices.Equal(cfg.Sites[0].Locations[0].Backends, want) || len(ps) != 0 {
		t.Errorf("Desired on the tasks: sites %+v problems %v, want s.test to %v", cfg.Sites, ps, want)
	}

	var wantEdge []string
	for _, n := range sw.Nodes {
		wantEdge = append(wantEdge, "edge."+n.ID)
	}
	slices.Sort(wantEdge)
	eventually(t, 60*time.Second, "a running task of edge on each node, named after it", func() (bool, string) {
		edge := listOf("edge")
		running, in := runningIn(edge, network, sub)
		var names []string
		for _, c := range running {
			names = append(names, c.Name)
		}
		slices.Sort(names)
		return slices.Equal(names, wantEdge) && in, fmt.Sprintf("%s, want names %v", describe(edge), wantEdge)
	})
	sw.Docker(t, mgr, "service", "rm", "edge")

	expectEvent := func(what string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case m := <-msgs:
				if m == what {
					return
				}
			case err := <-errs:
				t.Fatalf("events: %v", err)
			case <-deadline:
				t.Fatalf("no event %q", what)
			}
		}
	}

	sw.Docker(t, mgr, "service", "scale", "--detach", "web=3")
	expectEvent("service update web")
	took = eventually(t, 60*time.Second, "3 running tasks", func() (bool, string) {
		cs = list()
		running, in := runningIn(cs, network, sub)
		return len(running) == 3 && in, describe(cs)
	})
	t.Logf("3 tasks running %s after the scale: %s", took.Round(time.Millisecond), describe(cs))
	t.Logf("placement:\n%s", sw.Docker(t, mgr, "service", "ps", "--filter", "desired-state=running",
		"--format", "{{.Name}} {{.Node}} {{.CurrentState}}", "web"))

	var failed string
	eventually(t, 60*time.Second, "Swarm ends the unhealthy task", func() (bool, string) {
		list() // and sees it never running
		failed = sw.Docker(t, mgr, "service", "ps", "--filter", "desired-state=shutdown", "--format", "{{.CurrentState}} {{.Error}}", "sick")
		return failed != "", failed
	})
	t.Logf("Swarm ended the unhealthy task, never listed running: %s", strings.SplitN(failed, "\n", 2)[0])
	// The timing below is of one service.
	sw.Docker(t, mgr, "service", "rm", "sick")

	var times []time.Duration
	for range 20 {
		start := time.Now()
		list()
		times = append(times, time.Since(start))
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	t.Logf("List with 1 service × 3 tasks, 20 calls: median %s, max %s (through docker exec dial-stdio)",
		times[len(times)/2].Round(time.Microsecond), times[len(times)-1].Round(time.Microsecond))

	// A node dies (a power cut): its task must stop counting as running as
	// soon as the managers see the node down, before Swarm has replaced it.
	const victim = 2
	onVictim := map[string]bool{}
	for _, id := range strings.Fields(sw.Docker(t, mgr, "service", "ps", "-q", "--filter", "desired-state=running",
		"--filter", "node="+sw.Nodes[victim].ID, "web")) {
		onVictim[id] = true
	}
	if len(onVictim) == 0 {
		t.Fatalf("no task of web on node %d", victim)
	}
	sw.Kill(t, victim)
	var steps []string
	took = eventually(t, 60*time.Second, "the dead node's task not running", func() (bool, string) {
		cs = list()
		if d := describe(cs); len(steps) == 0 || steps[len(steps)-1] != d {
			steps = append(steps, d)
		}
		for _, c := range cs {
			if c.Running && (onVictim[c.ID] || onVictim[shortTaskID(c.ID)]) {
				return false, describe(cs)
			}
		}
		return true, describe(cs)
	})
	t.Logf("the task on the killed node is not running in List %s after the kill; each distinct List:\n%s",
		took.Round(time.Millisecond), strings.Join(steps, "\n"))
	took = eventually(t, 60*time.Second, "3 running tasks again", func() (bool, string) {
		cs = list()
		running, in := runningIn(cs, network, sub)
		return len(running) == 3 && in, describe(cs)
	})
	t.Logf("3 tasks running again %s later: %s", took.Round(time.Millisecond), describe(cs))

	// A rolling update of a single replica, stop-first (Swarm's default):
	// for the seconds between the old task stopping and the new one
	// running, the host must keep its site (503 with its certificate),
	// not vanish. Every List during the update is checked.
	sw.Docker(t, mgr, "service", "scale", "--detach", "web=1")
	eventually(t, 60*time.Second, "1 task", func() (bool, string) {
		cs = list()
		return len(cs) == 1 && cs[0].Running, describe(cs)
	})
	old := cs[0].ID
	sw.Docker(t, mgr, "service", "update", "--detach", "--update-order", "stop-first", "--env-add", "V=2", "web")
	var seen []string
	// Every 10 ms (a List takes a few), so that a gap of one pass shows.
	eventuallyEvery(t, 10*time.Millisecond, 60*time.Second, "the update done", func() (bool, string) {
		cs = list()
		cfg, _, _ := Desired(cs, Inputs{Nginx: nginx})
		step := fmt.Sprintf("%s sites=%d", describe(cs), len(cfg.Sites))
		if len(seen) == 0 || seen[len(seen)-1] != step {
			seen = append(seen, step)
		}
		if len(cfg.Sites) != 1 {
			t.Errorf("during the update, s.test has no site: %s", step)
		}
		return len(cs) == 1 && cs[0].Running && cs[0].ID != old, step
	})
	t.Logf("rolling update, each distinct List:\n%s", strings.Join(seen, "\n"))

	sw.Docker(t, mgr, "service", "rm", "web")
	expectEvent("service remove web")
	took = eventually(t, 30*time.Second, "no tasks", func() (bool, string) {
		cs = list()
		return len(cs) == 0, describe(cs)
	})
	t.Logf("no tasks listed %s after the removal", took.Round(time.Millisecond))
}
