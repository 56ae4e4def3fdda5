package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Swarm is a Docker Swarm of real engines (Debian's docker.io 20.10), one
// per container of the outer engine, on a network of their own. The host
// reaches the nodes only through the ports SwarmOptions.Publish puts on
// 127.0.0.1.
//
// This kernel has no IPVS: service virtual IPs and the ingress routing
// mesh do not work. Services must run with --endpoint-mode dnsrr (or be
// reached at their tasks' addresses) and publish with mode=host. Overlay
// networks across the nodes work. There is no registry either: Load every
// image a service uses into the nodes first.
type Swarm struct {
	Network string      // the outer engine's network of the nodes
	Nodes   []SwarmNode // in the order they joined; node 0 created the swarm
}

// SwarmNode is one engine of a Swarm.
type SwarmNode struct {
	Name    string // the container's name on the outer engine, and the node's hostname
	IP      string // its IPv4 address on Swarm.Network
	ID      string // its Swarm node ID
	Manager bool
	addrs   map[int]string // published inner port → 127.0.0.1:PORT
}

// SwarmOptions shape StartSwarm's cluster.
type SwarmOptions struct {
	// Nodes is how many engines to start; 0 means 3.
	Nodes int
	// Managers is how many of them (the first) are managers; 0 means all.
	// A raft quorum outlives the loss of a manager only with at least three
	// of them: with every node a manager by default, a test may kill any
	// one node (the one running the ordering berth, say) and the others
	// still schedule, answer `docker node ls` and hold the cluster's
	// secrets and configs.
	Managers int
	// Publish lists the ports inside the nodes (a host-mode published port
	// of a service) that each node publishes on 127.0.0.1 at a port of its
	// own; Addr finds them.
	Publish []int
}

// swarmEngineTimeout bounds how long a node's inner engine may take to
// answer: about 5 s alone, longer while three start together on two cores.
const swarmEngineTimeout = 90 * time.Second

// swarmReadyTimeout bounds how long the joined nodes may take to show as
// Ready (and managers as Reachable) in `docker node ls`.
const swarmReadyTimeout = 90 * time.Second

// swarmHeartbeat is the dispatcher heartbeat period. A manager declares a
// node Down a few periods after its last heartbeat; the default (5 s) would
// keep a killed node Ready, and its tasks running in Swarm's view, for about
// 15 s of every test that kills one.
const swarmHeartbeat = "1s"

// swarmPollTimeout bounds one poll of a manager. A manager forwards most
// calls to the leader, and right after the leader dies it waits 20 s for
// the dead one; a poll that gives up sooner sees the new leader (about
// 10 s: raft's election timeout) as soon as there is one.
const swarmPollTimeout = "5s"

// StartSwarm starts a Swarm of opts.Nodes engines and waits until every
// node is Ready. It removes the nodes, their storage and their network in
// t.Cleanup, logging each engine's last output first if the test failed.
// Without a kernel that lets an engine run in a container it skips the
// test (fails it under CI=true).
func StartSwarm(t testing.TB, opts SwarmOptions) *Swarm {
	t.Helper()
	RequireDocker(t)
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Managers == 0 || opts.Managers > opts.Nodes {
		opts.Managers = opts.Nodes
	}
	if _, err := os.Stat("/sys/fs/cgroup"); err != nil {
		unavailable(t, "a Swarm node needs the host's /sys/fs/cgroup: %v", err)
	}
	img := SwarmNodeImage(t)
	start := time.Now()
	s := &Swarm{Network: fmt.Sprintf("berth-test-swarm-%x", time.Now().UnixNano())}
	Docker(t, append(append([]string{"network", "create"}, LabelArgs()...), s.Network)...)
	t.Cleanup(func() { TryDocker("network", "rm", s.Network) })
	for i := range opts.Nodes {
		s.Nodes = append(s.Nodes, s.startNode(t, img, i, i < opts.Managers, opts.Publish))
	}
	for i := range s.Nodes {
		s.waitForEngine(t, i)
	}
	engines := time.Since(start)
	s.form(t)
	driver, _ := s.TryDocker(0, "info", "--format", "{{.Driver}}")
	t.Logf("a Swarm of %d nodes (%d managers, storage driver %s) is ready after %v (engines %v)", opts.Nodes, opts.Managers,
		driver, time.Since(start).Round(100*time.Millisecond), engines.Round(100*time.Millisecond))
	return s
}

// swarmNodeArgs let an engine run inside a container. --privileged would
// be simpler, but it asks for CAP_SYS_RESOURCE, which the host lacks.
var swarmNodeArgs = []string{
	"--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
	"--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
	"--tmpfs", "/run", "--tmpfs", "/var/run", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
}

// startNode runs node i's container and registers its removal.
func (s *Swarm) startNode(t testing.TB, img string, i int, manager bool, publish []int) SwarmNode {
	t.Helper()
	n := SwarmNode{Name: fmt.Sprintf("%s-%d", s.Network, i), Manager: manager, addrs: map[int]string{}}
	args := append([]string{"run", "-d", "--name", n.Name, "--hostname", n.Name, "--network", s.Network}, LabelArgs()...)
	args = append(args, swarmNodeArgs...)
	// The inner engine's images and containers live on an anonymous volume
	// (labelled, so that CleanupLeftovers finds a stray one), where it can
	// use overlay2 (see swarmNodeImageConfig).
	args = append(args, "--mount", "type=volume,dst=/var/lib/docker,"+volumeLabels())
	for _, port := range publish {
		args = append(args, "-p", fmt.Sprintf("127.0.0.1::%d/tcp", port))
	}
	Docker(t, append(args, img)...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Swarm node %s:\n%s", n.Name, containerTail(n.Name))
		}
		TryDocker("rm", "-f", "-v", n.Name)
	})
	n.IP = Docker(t, "inspect", "--format", `{{(index .NetworkSettings.Networks "`+s.Network+`").IPAddress}}`, n.Name)
	if ip := net.ParseIP(n.IP); ip == nil || ip.To4() == nil {
		t.Fatalf("address of %s on network %s: %q", n.Name, s.Network, n.IP)
	}
	for _, port := range publish {
		n.addrs[port] = publishedAddr(t, n.Name, port)
	}
	return n
}

// volumeLabels is LabelArgs as volume-label options of a --mount.
func volumeLabels() string {
	var opts []string
	for _, arg := range LabelArgs() {
		if arg != "--label" {
			opts = append(opts, "volume-label="+arg)
		}
	}
	return strings.Join(opts, ",")
}

// waitForEngine waits until node i's inner engine answers. An engine that
// cannot start at all means this host cannot run nested engines: a
// missing prerequisite, not a failure of the code under test.
func (s *Swarm) waitForEngine(t testing.TB, i int) {
	t.Helper()
	name := s.Nodes[i].Name
	alive := func() error { return containersRunning(name) }
	answers := func() error {
		_, err := s.TryDocker(i, "version", "--format", "{{.Server.Version}}")
		return err
	}
	if err := waitUntil(swarmEngineTimeout, alive, answers); err != nil {
		unavailable(t, "the Docker engine inside Swarm node %s did not start (it needs cgroups, "+
			"iptables and the vxlan module of the host's kernel): %v\n%s", name, err, containerTail(name))
	}
}

// form makes node 0 create the swarm and the others join it one at a
// time (managers join through a raft membership change each, which the
// leader makes one at a time anyway), then waits until all are Ready and
// records their IDs.
func (s *Swarm) form(t testing.TB) {
	t.Helper()
	s.Docker(t, 0, "swarm", "init", "--advertise-addr", s.Nodes[0].IP, "--dispatcher-heartbeat", swarmHeartbeat)
	tokens := map[bool]string{
		true:  s.Docker(t, 0, "swarm", "join-token", "-q", "manager"),
		false: s.Docker(t, 0, "swarm", "join-token", "-q", "worker"),
	}
	join := net.JoinHostPort(s.Nodes[0].IP, "2377")
	for i := 1; i < len(s.Nodes); i++ {
		s.Docker(t, i, "swarm", "join", "--advertise-addr", s.Nodes[i].IP, "--token", tokens[s.Nodes[i].Manager], join)
	}
	alive := func() error { return containersRunning(s.names()...) }
	err := waitUntil(swarmReadyTimeout, alive, func() error {
		nodes, err := s.nodeList(0)
		if err != nil {
			return err
		}
		for _, n := range s.Nodes {
			got, ok := nodes[n.Name]
			if !ok || got.status != "Ready" || n.Manager != (got.manager == "Leader" || got.manager == "Reachable") {
				return fmt.Errorf("node ls: %s is %+v, want Ready (manager %v)", n.Name, got, n.Manager)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Swarm %s: %v", s.Network, err)
	}
	nodes, err := s.nodeList(0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range s.Nodes {
		s.Nodes[i].ID = nodes[s.Nodes[i].Name].id
	}
}

// swarmNodeState is one row of `docker node ls`.
type swarmNodeState struct {
	id, status, manager string // manager: "Leader", "Reachable", "Unreachable" or "" for a worker
}

// nodeList runs `docker node ls` on node from (a manager) and returns its
// rows by hostname.
func (s *Swarm) nodeList(from int) (map[string]swarmNodeState, error) {
	out, err := TryDocker("exec", s.Nodes[from].Name, "timeout", swarmPollTimeout,
		"docker", "node", "ls", "--format", "{{.Hostname}}\t{{.ID}}\t{{.Status}}\t{{.ManagerStatus}}")
	if err != nil {
		return nil, err
	}
	nodes := map[string]swarmNodeState{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			return nil, fmt.Errorf("node ls: unexpected line %q", line)
		}
		nodes[f[0]] = swarmNodeState{id: f[1], status: f[2], manager: f[3]}
	}
	return nodes, nil
}

func (s *Swarm) names() []string {
	names := make([]string, len(s.Nodes))
	for i, n := range s.Nodes {
		names[i] = n.Name
	}
	return names
}

// Addr returns the 127.0.0.1:PORT where the host reaches port (one of
// SwarmOptions.Publish) of node. Asking for another port is a bug in the
// test, and panics.
func (s *Swarm) Addr(node, port int) string {
	addr, ok := s.Nodes[node].addrs[port]
	if !ok {
		panic(fmt.Sprintf("Swarm.Addr: port %d of node %d is not in SwarmOptions.Publish", port, node))
	}
	return addr
}

// Docker runs the docker CLI inside node against its engine and returns
// the trimmed stdout; it fails the test if the command fails.
func (s *Swarm) Docker(t testing.TB, node int, args ...string) string {
	t.Helper()
	out, err := s.TryDocker(node, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TryDocker is Docker for calls whose failure the caller handles.
func (s *Swarm) TryDocker(node int, args ...string) (string, error) {
	return TryDocker(append([]string{"exec", s.Nodes[node].Name, "docker"}, args...)...)
}

// Kill kills node's container, as a power cut would: its engine stops
// without leaving the swarm, and the managers find out only when its
// heartbeats stop (Down a few seconds later, see swarmHeartbeat; 10-20 s
// more when it was the leader, for the election). Its Addr then refuses
// connections, and Load passes it by.
func (s *Swarm) Kill(t testing.TB, node int) {
	t.Helper()
	Docker(t, "kill", s.Nodes[node].Name)
}

// Load copies images from the outer engine into every running node that
// lacks them (by image ID), the nodes in parallel: a task is rejected
// ("No such image") on a node without its image, because there is no
// registry to pull from.
func (s *Swarm) Load(t testing.TB, images ...string) {
	t.Helper()
	dir := t.TempDir()
	for _, img := range images {
		id := Docker(t, "image", "inspect", "--format", "{{.Id}}", img)
		var missing []int
		for i, n := range s.Nodes {
			if containersRunning(n.Name) != nil {
				continue // killed
			}
			if got, err := s.TryDocker(i, "image", "inspect", "--format", "{{.Id}}", img); err != nil || got != id {
				missing = append(missing, i)
			}
		}
		if len(missing) == 0 {
			continue
		}
		// One docker save for all nodes: it is the slow half of a copy.
		tar := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(img)+".tar")
		Docker(t, "save", "-o", tar, img)
		if err := s.loadInto(missing, tar); err != nil {
			t.Fatalf("load %s into the Swarm: %v", img, err)
		}
		os.Remove(tar)
	}
}

// loadInto runs `docker load` of the tar file in each of nodes at once.
func (s *Swarm) loadInto(nodes []int, tar string) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for k, i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(tar)
			if err != nil {
				errs[k] = err
				return
			}
			defer f.Close()
			cmd := exec.Command("docker", "exec", "-i", s.Nodes[i].Name, "docker", "load", "-q")
			cmd.Stdin = f
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[k] = fmt.Errorf("node %s: %w: %s", s.Nodes[i].Name, err, out)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
