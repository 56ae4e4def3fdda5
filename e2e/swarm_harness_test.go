package e2e

// The Swarm suite's fixture: a three-node Swarm in containers
// (testenv.StartSwarm), the repository's deploy/swarm/stack.yml deployed
// on it with `docker stack deploy` plus an override for the test (local
// images, Pebble as the CA, debug logs), Pebble and its DNS server as
// containers on the outer network the nodes are on. Traffic goes only
// through the 127.0.0.1 ports each node container publishes for the
// nodes' host-mode 80 and 443.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
)

const (
	// swarmStackName is the stack's name: its services are berth_nginx,
	// berth_agent and berth_berth.
	swarmStackName = "berth"
	swarmNginx     = swarmStackName + "_nginx"
	swarmAgent     = swarmStackName + "_agent"
	swarmBerth     = swarmStackName + "_berth"
	// swarmNetwork is the stack's overlay network (a fixed name in stack.yml).
	swarmNetwork = "berth-proxy"
	// swarmStackDir is where the stack files are copied inside node 0.
	swarmStackDir = "/root/berth-stack"
	// swarmRootsPath is where the berth service finds the CA of Pebble's
	// TLS certificate (a Docker config).
	swarmRootsPath = "/etc/berth-test/pebble-roots.pem"
	// swarmLeaderLabel is the lease's label that holds the acting
	// berth's task ID.
	swarmLeaderLabel = "berth.leader"
	// swarmLeaseConfig is the Swarm config that holds the lease's labels.
	swarmLeaseConfig = "berth-lease"
)

// swarmConverge bounds how long a change in Swarm may take to be served
// through every node: berth follows Swarm events plus a periodic resync,
// pushes to every agent, each runs nginx -t and reloads; tasks start on
// nested engines sharing two cores with other work.
const swarmConverge = 60 * time.Second

// swarmDeployTimeout bounds the stack's tasks starting on every node.
const swarmDeployTimeout = 3 * time.Minute

// swarmCmdTimeout bounds one docker command inside a node: a manager
// forwards most calls to the raft leader and waits up to 20 s for a dead
// one; a caller that polls retries after it.
const swarmCmdTimeout = "15s"

// swarmSuite is the Swarm and the deployed stack the subtests share.
type swarmSuite struct {
	t       testing.TB
	sw      *testenv.Swarm
	ca      *testenv.PebbleInContainers
	backend string // backend image
	berth   string // berth image
	nginx   string // nginx image
	pebble  string // Pebble's address on the nodes' network

	mu   sync.Mutex
	gone map[int]bool // nodes killed or gone from the Swarm
}

// newSwarmSuite builds the images, starts the Swarm and Pebble, deploys
// the stack and waits until nginx and the agent run on every node and
// berth's two replicas run on managers.
func newSwarmSuite(t testing.TB) *swarmSuite {
	t.Helper()
	testenv.RequireDocker(t)
	leftovers.Do(func() { testenv.CleanupLeftovers(t) })
	start := time.Now()
	// Images first: building them must not count against any deadline.
	w := &swarmSuite{t: t, gone: map[int]bool{},
		nginx: testenv.NginxImage(t, "bookworm"), berth: testenv.BerthImage(t), backend: testenv.BackendImage(t)}
	testenv.SwarmNodeImage(t)
	t.Logf("images ready after %v: nginx %s, berth %s, backend %s", since(start), w.nginx, w.berth, w.backend)

	w.sw = testenv.StartSwarm(t, testenv.SwarmOptions{Nodes: 3, Publish: []int{80, 443}})
	t.Cleanup(w.dumpOnFailure) // runs before the nodes are removed
	loaded := time.Now()
	w.sw.Load(t, w.nginx, w.berth, w.backend)
	t.Logf("images loaded into %d nodes in %v", len(w.sw.Nodes), since(loaded))

	// Pebble's DNS answers with node 0 for now; the certificate case
	// points it at a node that does not run the acting berth.
	w.ca = testenv.PebbleContainers(t, w.sw.Network, w.sw.Nodes[0].IP, testenv.PebbleOptions{})
	w.pebble = testenv.Docker(t, "inspect", "--format",
		`{{(index .NetworkSettings.Networks "`+w.sw.Network+`").IPAddress}}`, w.ca.Name)

	w.deploy()
	t.Logf("Swarm suite ready after %v", since(start))
	return w
}

// secretValue is a random secret for a Docker secret of the stack.
func secretValue() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// overrideFile is the test's second compose file: the local images,
// Pebble as the CA (its roots as a Docker config, its name resolved to its
// address on the nodes' network, which the berth task reaches through its
// node's NAT), debug logs.
func (w *swarmSuite) overrideFile() string {
	return fmt.Sprintf(`version: "3.8"
services:
  nginx:
    image: %[1]s
  agent:
    image: %[2]s
    environment:
      BERTH_LOG_LEVEL: debug
  berth:
    image: %[2]s
    environment:
      BERTH_ACME_CA: %[3]s
      BERTH_ACME_CA_ROOTS: %[4]s
      BERTH_LOG_LEVEL: debug
    configs:
      - source: pebble-roots
        target: %[4]s
        mode: 0444
    extra_hosts:
      - "%[5]s:%[6]s"
configs:
  pebble-roots:
    file: ./pebble-roots.pem
`, w.nginx, w.berth, w.ca.DirectoryURL, swarmRootsPath, w.ca.Name, w.pebble)
}

// deploy creates the stack's secrets, copies stack.yml, the override and
// Pebble's roots into node 0 and runs `docker stack deploy` there.
func (w *swarmSuite) deploy() {
	t := w.t
	t.Helper()
	for _, name := range []string{"berth-agent", "berth-store-key"} {
		w.pipe(0, secretValue(), "docker", "secret", "create", name, "-")
	}
	stack, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "deploy", "swarm", "stack.yml"))
	if err != nil {
		t.Fatal(err)
	}
	w.pipe(0, "", "mkdir", "-p", swarmStackDir)
	w.pipe(0, string(stack), "sh", "-c", "cat > "+swarmStackDir+"/stack.yml")
	w.pipe(0, w.overrideFile(), "sh", "-c", "cat > "+swarmStackDir+"/test-override.yml")
	w.pipe(0, string(w.ca.RootsPEM), "sh", "-c", "cat > "+swarmStackDir+"/pebble-roots.pem")
	start := time.Now()
	out, err := w.stackDeploy()
	if err != nil {
		t.Fatalf("docker stack deploy: %v\n%s", err, out)
	}
	t.Logf("docker stack deploy:\n%s", out)

	all := w.alive()
	testenv.Eventually(t, swarmDeployTimeout, func() error {
		for _, svc := range []string{swarmNginx, swarmAgent} {
			if err := w.runningOn(svc, all); err != nil {
				return err
			}
		}
		if tasks, err := w.wanted(swarmBerth); err != nil {
			return err
		} else if len(tasks) != 2 || tasks[0].node == tasks[1].node {
			return fmt.Errorf("%s has %+v, want 2 tasks on 2 nodes", swarmBerth, tasks)
		}
		_, _, err := w.leader()
		return err
	})
	t.Logf("nginx and the agent run on every node, berth on two with a leader, %v after the deploy", since(start))
	w.checkPebbleReachable()
}

// stackDeploy runs `docker stack deploy` of stack.yml and the override in
// node 0, with the variables stack.yml reads set for the test.
func (w *swarmSuite) stackDeploy() (string, error) {
	return testenv.TryDocker("exec", "-w", swarmStackDir,
		"-e", "NGINX_IMAGE="+w.nginx, "-e", "BERTH_IMAGE="+w.berth, "-e", "BERTH_LOG_LEVEL=debug",
		w.sw.Nodes[0].Name, "docker", "stack", "deploy", "--resolve-image", "never",
		"-c", "stack.yml", "-c", "test-override.yml", swarmStackName)
}

// checkPebbleReachable fetches Pebble's directory from a container on the
// stack's overlay network inside node 0, as the berth task does: through
// the node's NAT to the outer network.
func (w *swarmSuite) checkPebbleReachable() {
	t := w.t
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() error {
		_, err := w.sw.TryDocker(0, "run", "--rm", "--network", swarmNetwork,
			"--add-host", w.ca.Name+":"+w.pebble, "-v", swarmStackDir+"/pebble-roots.pem:/roots.pem:ro",
			w.nginx, "curl", "-sSf", "--max-time", "5", "--cacert", "/roots.pem", "-o", "/dev/null", w.ca.DirectoryURL)
		return err
	})
	t.Logf("Pebble's directory %s answers from the overlay network inside a node", w.ca.DirectoryURL)
}

// pipe runs argv inside node with stdin and fails the test on error.
func (w *swarmSuite) pipe(node int, stdin string, argv ...string) string {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", slices.Concat([]string{"exec", "-i", w.sw.Nodes[node].Name}, argv)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Fatalf("in %s: %s: %v\n%s", w.sw.Nodes[node].Name, strings.Join(argv, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// alive returns the indexes of the nodes that are still in the Swarm.
func (w *swarmSuite) alive() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	var nodes []int
	for i := range w.sw.Nodes {
		if !w.gone[i] {
			nodes = append(nodes, i)
		}
	}
	return nodes
}

func (w *swarmSuite) markGone(node int) {
	w.mu.Lock()
	w.gone[node] = true
	w.mu.Unlock()
}

// manager returns a live manager to run Swarm commands on.
func (w *swarmSuite) manager() int {
	for _, i := range w.alive() {
		if w.sw.Nodes[i].Manager {
			return i
		}
	}
	w.t.Fatal("no live manager left")
	return -1
}

// docker runs the docker CLI on a live manager, bounded by swarmCmdTimeout.
func (w *swarmSuite) docker(args ...string) (string, error) {
	return w.dockerOn(w.manager(), args...)
}

// dockerOn runs the docker CLI on node, bounded by swarmCmdTimeout.
func (w *swarmSuite) dockerOn(node int, args ...string) (string, error) {
	return testenv.TryDocker(slices.Concat([]string{"exec", w.sw.Nodes[node].Name, "timeout", swarmCmdTimeout, "docker"}, args)...)
}

// containerLogs returns the last lines of a container's stdout and
// stderr (berth logs to stderr) on node.
func (w *swarmSuite) containerLogs(node int, id string, lines int) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script := fmt.Sprintf("docker logs --tail %d %s 2>&1", lines, id)
	out, err := exec.CommandContext(ctx, "docker", "exec", w.sw.Nodes[node].Name, "sh", "-c", script).CombinedOutput()
	return string(out), err
}

// berthLog returns the lines of the log of the berth task on node that
// match re.
func (w *swarmSuite) berthLog(node int, re *regexp.Regexp) string {
	c, err := w.nodeContainer(node, swarmBerth)
	if err != nil {
		return err.Error()
	}
	out, err := w.containerLogs(node, c, 100000)
	if err != nil {
		return err.Error()
	}
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		if re.MatchString(line) {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "\n")
}

// mustDocker is docker that fails the test, after retrying for a while: a
// manager may be waiting for a new raft leader.
func (w *swarmSuite) mustDocker(args ...string) string {
	w.t.Helper()
	var out string
	testenv.Eventually(w.t, time.Minute, func() (err error) {
		out, err = w.docker(args...)
		return err
	})
	return out
}

// nodeIndex maps a node's hostname to its index.
func (w *swarmSuite) nodeIndex(hostname string) int {
	for i, n := range w.sw.Nodes {
		if n.Name == hostname {
			return i
		}
	}
	return -1
}

// swarmTask is one task of a service that Swarm wants running.
type swarmTask struct {
	id, name string
	node     int
	state    string // CurrentState: "Running 3 seconds ago", "Starting …"
}

// tasks returns the tasks of service that Swarm wants running and that
// are running now (healthy, if the image has a health check).
func (w *swarmSuite) tasks(service string) ([]swarmTask, error) {
	all, err := w.wanted(service)
	return slices.DeleteFunc(all, func(t swarmTask) bool { return !strings.HasPrefix(t.state, "Running") }), err
}

// wanted returns the tasks of service that Swarm wants running, whatever
// their current state.
func (w *swarmSuite) wanted(service string) ([]swarmTask, error) {
	out, err := w.docker("service", "ps", "--no-trunc", "--filter", "desired-state=running",
		"--format", "{{.ID}}\t{{.Name}}\t{{.Node}}\t{{.CurrentState}}", service)
	if err != nil {
		return nil, err
	}
	var tasks []swarmTask
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			continue
		}
		tasks = append(tasks, swarmTask{id: f[0], name: f[1], node: w.nodeIndex(f[2]), state: f[3]})
	}
	sort.Slice(tasks, func(i, j int) bool { return tasks[i].name < tasks[j].name })
	return tasks, nil
}

// runningOn is nil when service has a running task on each of nodes.
func (w *swarmSuite) runningOn(service string, nodes []int) error {
	tasks, err := w.tasks(service)
	if err != nil {
		return err
	}
	for _, i := range nodes {
		if !slices.ContainsFunc(tasks, func(t swarmTask) bool { return t.node == i }) {
			return fmt.Errorf("%s has no running task on %s: %+v", service, w.sw.Nodes[i].Name, tasks)
		}
	}
	return nil
}

// taskAddr returns a task's address on the stack's overlay network.
func (w *swarmSuite) taskAddr(taskID string) (string, error) {
	out, err := w.docker("inspect", "--type", "task", "--format",
		`{{range .NetworksAttachments}}{{if eq .Network.Spec.Name "`+swarmNetwork+`"}}{{range .Addresses}}{{.}} {{end}}{{end}}{{end}}`, taskID)
	if err != nil {
		return "", err
	}
	ip, _, err := net.ParseCIDR(strings.TrimSpace(strings.Fields(out + " x")[0]))
	if err != nil {
		return "", fmt.Errorf("address of task %s on %s: %q", taskID, swarmNetwork, out)
	}
	return ip.String(), nil
}

// leader returns the task ID of the acting berth and the node it runs on,
// from the lease's berth.leader label: on the Swarm config berth-lease
// (where the lease lives), or on the berth service (where it first lived).
func (w *swarmSuite) leader() (string, int, error) {
	label, err := w.docker("config", "inspect", "--format", `{{index .Spec.Labels "`+swarmLeaderLabel+`"}}`, swarmLeaseConfig)
	if err != nil || label == "" || label == "<no value>" {
		label, err = w.docker("service", "inspect", "--format", `{{index .Spec.Labels "`+swarmLeaderLabel+`"}}`, swarmBerth)
	}
	if err != nil {
		return "", -1, err
	}
	if label == "" || label == "<no value>" {
		return "", -1, fmt.Errorf("neither the config %s nor the service %s has a %s label", swarmLeaseConfig, swarmBerth, swarmLeaderLabel)
	}
	tasks, err := w.wanted(swarmBerth)
	if err != nil {
		return "", -1, err
	}
	for _, task := range tasks {
		if strings.Contains(label, task.id) {
			return task.id, task.node, nil
		}
	}
	return "", -1, fmt.Errorf("%s=%q names none of the running berth tasks %+v", swarmLeaderLabel, label, tasks)
}

// runningSince returns when the one task of service that Swarm wants
// running last changed state (to running, once it runs).
func (w *swarmSuite) runningSince(service string) (time.Time, error) {
	tasks, err := w.tasks(service)
	if err != nil {
		return time.Time{}, err
	}
	if len(tasks) != 1 {
		return time.Time{}, fmt.Errorf("%s has %d running tasks, want 1", service, len(tasks))
	}
	out, err := w.docker("inspect", "--type", "task", "--format", "{{.Status.Timestamp.UnixNano}}", tasks[0].id)
	if err != nil {
		return time.Time{}, err
	}
	var ns int64
	if _, err := fmt.Sscan(out, &ns); err != nil {
		return time.Time{}, fmt.Errorf("timestamp of task %s: %q", tasks[0].id, out)
	}
	return time.Unix(0, ns), nil
}

// nodeContainer returns the ID of the container of service's task on node.
func (w *swarmSuite) nodeContainer(node int, service string) (string, error) {
	out, err := w.dockerOn(node, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+service)
	if err != nil {
		return "", err
	}
	ids := strings.Fields(out)
	if len(ids) != 1 {
		return "", fmt.Errorf("%d running containers of %s on %s", len(ids), service, w.sw.Nodes[node].Name)
	}
	return ids[0], nil
}

// renderedConfig returns the berth-* files in the conf.d of node's nginx.
func (w *swarmSuite) renderedConfig(node int) (string, error) {
	c, err := w.nodeContainer(node, swarmNginx)
	if err != nil {
		return "", err
	}
	return w.dockerOn(node, "exec", c, "sh", "-c", `for f in /etc/nginx/conf.d/berth-*; do echo "=== $f"; cat "$f"; done`)
}

// createService creates a backend service labelled for host, on the
// stack's network, each replica on its own node, answering as
// <name>.<slot>@<node>. extra are more `docker service create` flags.
func (w *swarmSuite) createService(name, host string, replicas int, extra ...string) {
	w.t.Helper()
	if err := w.tryCreateService(name, host, replicas, extra...); err != nil {
		w.t.Fatal(err)
	}
}

// tryCreateService is createService for other goroutines than the test's.
func (w *swarmSuite) tryCreateService(name, host string, replicas int, extra ...string) error {
	args := slices.Concat([]string{"service", "create", "--detach", "--name", name,
		"--replicas", fmt.Sprint(replicas), "--replicas-max-per-node", "1", "--network", swarmNetwork,
		"--label", "proxy.host=" + host, "--label", "proxy.port=80",
		"--env", "NAME=" + name + ".{{.Task.Slot}}@{{.Node.Hostname}}"}, extra, []string{w.backend})
	if !slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "proxy.acme=") }) {
		args = slices.Insert(args, len(args)-1, "--label", "proxy.acme=off")
	}
	if out, err := w.docker(args...); err != nil {
		return fmt.Errorf("docker service create %s: %v %s", name, err, out)
	}
	return nil
}

// addr returns the 127.0.0.1 address of node's published port.
func (w *swarmSuite) addr(node, port int) string { return w.sw.Addr(node, port) }

// get sends GET http://host/path through node's published port 80.
func (w *swarmSuite) get(node int, host, path string) (reply, error) {
	client := newClient(requestTimeout)
	defer client.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, "http://"+w.addr(node, 80)+path, nil)
	if err != nil {
		return reply{}, err
	}
	req.Host = host
	return do(client, req)
}

// getTLS sends GET https://host/path through node's published port 443,
// with SNI host, trusting only roots.
func (w *swarmSuite) getTLS(node int, host, path string, roots *x509.CertPool) (reply, *tls.ConnectionState, error) {
	return getTLSAt(w.addr(node, 443), host, path, roots)
}

func do(client *http.Client, req *http.Request) (reply, error) {
	resp, err := client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return reply{}, fmt.Errorf("read body of %s%s: %w", req.Host, req.URL.Path, err)
	}
	return reply{status: resp.StatusCode, body: string(body), header: resp.Header}, nil
}

// servedVia is nil when host answers 200 from a replica of service through
// node, and returns the replica's name.
func (w *swarmSuite) servedVia(node int, host, service string) (string, error) {
	r, err := w.get(node, host, "/")
	if err != nil {
		return "", fmt.Errorf("through %s: %w", w.sw.Nodes[node].Name, err)
	}
	if r.status != http.StatusOK || !strings.HasPrefix(r.backend(), service+".") {
		return "", fmt.Errorf("GET http://%s/ through %s = %v, want 200 from a replica of %s", host, w.sw.Nodes[node].Name, r, service)
	}
	return r.backend(), nil
}

// servedEverywhere is nil when host answers 200 from service through each
// of nodes.
func (w *swarmSuite) servedEverywhere(nodes []int, host, service string) error {
	for _, i := range nodes {
		if _, err := w.servedVia(i, host, service); err != nil {
			return err
		}
	}
	return nil
}

// dumpOnFailure logs what a failed Swarm test needs to be understood
// without rerunning it (or always, with BERTH_E2E_LOGS=1).
func (w *swarmSuite) dumpOnFailure() {
	t := w.t
	if !t.Failed() && os.Getenv("BERTH_E2E_LOGS") != "1" {
		return
	}
	if m := w.manager(); m >= 0 {
		out, _ := w.dockerOn(m, "service", "ls")
		t.Logf("docker service ls:\n%s", out)
		out, _ = w.dockerOn(m, "service", "ps", "--no-trunc", swarmBerth, swarmAgent, swarmNginx)
		t.Logf("stack tasks:\n%s", out)
		out, _ = w.dockerOn(m, "config", "inspect", "--format", "{{json .Spec.Labels}}", swarmLeaseConfig)
		t.Logf("labels of the config %s: %s", swarmLeaseConfig, out)
	}
	for _, i := range w.alive() {
		name := w.sw.Nodes[i].Name
		for _, svc := range []string{swarmBerth, swarmAgent, swarmNginx} {
			ids, _ := w.dockerOn(i, "ps", "-aq", "--filter", "label=com.docker.swarm.service.name="+svc)
			for _, id := range strings.Fields(ids)[:min(2, len(strings.Fields(ids)))] { // the newest two
				out, err := w.containerLogs(i, id, 150)
				t.Logf("%s on %s, container %s (last 150 lines):\n%s%s", svc, name, id, out, errOrEmpty(err))
			}
		}
		conf, err := w.renderedConfig(i)
		t.Logf("berth files of nginx on %s:\n%s%s", name, conf, errOrEmpty(err))
	}
}
