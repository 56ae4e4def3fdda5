// Package e2e holds berth's black-box tests: a real Docker engine, an
// unmodified nginx container, the berth image built from ./Dockerfile, and
// test backends, all talking through Docker networks the tests create.
// Assertions are HTTP results through nginx's published port on 127.0.0.1.
//
// Every test builds its own stack (network, volumes, nginx, berth) so that
// tests cannot see each other's state; a stack starts in about a second.
// The images are built once per machine by internal/testenv.
package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
)

// converge bounds how long berth and nginx may take to reflect a change in
// Docker. berth paces reloads (controller/pace.go): a change can wait up to
// its maximum gap of 10 s between reloads, plus about 0.3 s for nginx -t
// and the reload itself.
const converge = 12 * time.Second

// requestTimeout bounds one HTTP request; a request to a backend that nginx
// cannot reach would otherwise wait out proxy_connect_timeout.
const requestTimeout = 2 * time.Second

// Paths inside the nginx container, shared with berth at the same paths.
const (
	confDir    = "/etc/nginx/conf.d"
	webrootDir = "/var/www/acme"
	certsDir   = "/etc/nginx/certs"
	stateDir   = "/var/lib/berth"
)

var leftovers sync.Once

// stack is one nginx + berth pair on its own network, with the backends a
// test starts. Everything it creates is removed when the test ends.
type stack struct {
	t          testing.TB
	id         string
	network    string
	nginx      string
	berth      string
	backendImg string
	client     *http.Client

	mu         sync.Mutex           // guards the ports (read by watchers) and the lists below
	port       string               // nginx's port 80, published on 127.0.0.1
	tlsPort    string               // nginx's port 443, published on 127.0.0.1
	proxy      *testenv.DockerProxy // berth's only way to the engine, if stackOptions.dockerProxy
	containers []string
	networks   []string
	volumes    []string
}

// stackOptions vary a stack; the zero value is newStack's.
type stackOptions struct {
	// suite is the Debian suite of the nginx image; empty means bookworm
	// (nginx 1.22, the oldest supported).
	suite string
	// nginxArgs are extra `docker run` arguments for nginx (labels, say).
	nginxArgs []string
	// berth returns extra `docker run` arguments for berth (networks,
	// mounts, environment). It runs after nginx started and before berth
	// does. Without it berth runs with --network none and BERTH_ACME_CA=off.
	berth func(s *stack) []string
	// dockerProxy puts a testenv.DockerProxy (berth's allow-list) between
	// berth and the engine instead of mounting the engine's socket.
	dockerProxy bool
	// ipv6 makes the stack's network dual-stack (ipv6Subnet), so nginx and
	// the backends get IPv6 addresses next to their IPv4 ones.
	ipv6 bool
}

// newStack starts nginx 1.22 (Debian bookworm) and berth, and waits until
// berth has written its default server.
func newStack(t testing.TB) *stack { return newStackWith(t, stackOptions{}) }

// newStackWith is newStack with options.
func newStackWith(t testing.TB, opts stackOptions) *stack {
	t.Helper()
	testenv.RequireDocker(t)
	leftovers.Do(func() { testenv.CleanupLeftovers(t) })
	if opts.suite == "" {
		opts.suite = "bookworm"
	}
	// Build (or find) the images first, so build time never counts against
	// a convergence deadline.
	nginxImg := testenv.NginxImage(t, opts.suite)
	berthImg := testenv.BerthImage(t)
	s := &stack{
		t:          t,
		id:         randomID(),
		backendImg: testenv.BackendImage(t),
		client:     newClient(requestTimeout),
	}
	t.Cleanup(s.teardown)

	var netArgs []string
	if opts.ipv6 {
		netArgs = []string{"--ipv6", "--subnet", ipv6Subnet(s.id)}
	}
	s.network = s.createNetwork("berth-e2e-"+s.id, netArgs...)
	conf, webroot, certs, state := s.createVolume("conf"), s.createVolume("webroot"), s.createVolume("certs"), s.createVolume("state")
	shared := []string{"-v", conf + ":" + confDir, "-v", webroot + ":" + webrootDir, "-v", certs + ":" + certsDir}

	s.nginx = "berth-e2e-nginx-" + s.id
	s.runContainer(s.nginx, slices.Concat(
		[]string{"--network", s.network, "-p", "127.0.0.1::80", "-p", "127.0.0.1::443"},
		shared, opts.nginxArgs, []string{nginxImg})...)

	// By default berth needs no network: it talks to the engine through
	// the socket. --network none and BERTH_ACME_CA=off also guarantee that
	// nothing, an ACME CA included, is contacted outside this machine.
	extra := []string{"--network", "none", "-e", "BERTH_ACME_CA=off"}
	if opts.berth != nil {
		extra = opts.berth(s)
	}
	docker := []string{"-v", "/var/run/docker.sock:/var/run/docker.sock"}
	if opts.dockerProxy {
		s.proxy = testenv.StartDockerProxy(t, s.nginx)
		docker = []string{"-v", s.proxy.Dir + ":/run/berth-docker", "-e", "DOCKER_HOST=unix:///run/berth-docker/" + testenv.ProxySocketName}
	}
	s.berth = "berth-e2e-berth-" + s.id
	s.runContainer(s.berth, slices.Concat(
		docker, []string{"-v", state + ":" + stateDir},
		shared,
		[]string{"-e", "BERTH_NGINX_CONTAINER=" + s.nginx, "-e", "BERTH_LOG_FORMAT=json", "-e", "BERTH_LOG_LEVEL=debug"},
		extra, []string{berthImg})...)

	s.refreshPort()
	start := time.Now()
	testenv.Eventually(t, converge, func() error {
		if err := s.noVhost("unknown.invalid"); err != nil {
			return fmt.Errorf("berth has not made nginx answer 503 for an unknown host: %w", err)
		}
		return nil
	})
	t.Logf("stack %s up; berth's default server answered after %v", s.id, since(start))
	return s
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

func randomID() string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// createNetwork creates a labelled network; extra are `docker network
// create` flags.
func (s *stack) createNetwork(name string, extra ...string) string {
	s.t.Helper()
	s.track(&s.networks, name)
	testenv.Docker(s.t, slices.Concat([]string{"network", "create"}, testenv.LabelArgs(), extra, []string{name})...)
	return name
}

func (s *stack) createVolume(role string) string {
	s.t.Helper()
	name := "berth-e2e-" + s.id + "-" + role
	s.track(&s.volumes, name)
	testenv.Docker(s.t, slices.Concat([]string{"volume", "create"}, testenv.LabelArgs(), []string{name})...)
	return name
}

// runContainer runs a detached, labelled container and records it for removal.
func (s *stack) runContainer(name string, args ...string) {
	s.t.Helper()
	s.track(&s.containers, name)
	testenv.Docker(s.t, slices.Concat([]string{"run", "-d", "--name", name}, testenv.LabelArgs(), args)...)
}

func (s *stack) track(list *[]string, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*list = append(*list, name)
}

// refreshPort reads nginx's published port 80, which changes when the
// container restarts.
func (s *stack) refreshPort() {
	s.t.Helper()
	if err := s.tryRefreshPort(); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) tryRefreshPort() error {
	port, err := publishedPort(s.nginx, "80/tcp")
	if err != nil {
		return err
	}
	tlsPort, err := publishedPort(s.nginx, "443/tcp")
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.port, s.tlsPort = port, tlsPort
	s.mu.Unlock()
	return nil
}

// publishedPort returns the port on 127.0.0.1 where Docker published a
// container's port.
func publishedPort(container, port string) (string, error) {
	out, err := testenv.TryDocker("port", container, port)
	if err != nil {
		return "", err
	}
	addr := strings.TrimSpace(strings.Split(out, "\n")[0])
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("docker port %s %s = %q: %w", container, port, out, err)
	}
	return p, nil
}

// ip returns a container's address on the stack's network.
func (s *stack) ip(container string) string {
	s.t.Helper()
	ip := testenv.Docker(s.t, "inspect", "--format",
		`{{with index .NetworkSettings.Networks "`+s.network+`"}}{{.IPAddress}}{{end}}`, container)
	if net.ParseIP(ip) == nil {
		s.t.Fatalf("address of %s on %s: %q", container, s.network, ip)
	}
	return ip
}

// backend describes one test backend container (see e2e/backend).
type backend struct {
	name    string   // NAME it answers with; also the end of the container name
	labels  []string // "key=value"; proxy.acme=off is added unless a proxy.acme label is given
	env     []string // "KEY=value", e.g. PORTS=8080,9090 or HEALTHY=0
	expose  []string // exposed ports; nil means 80 only
	health  bool     // keep the image's exec-form HEALTHCHECK (1 s interval)
	network string   // Docker network; empty means the stack's
}

// run starts a backend and returns its container name.
func (s *stack) run(b backend) string {
	s.t.Helper()
	name, err := s.start(b)
	if err != nil {
		s.t.Fatal(err)
	}
	return name
}

// start is run for other goroutines than the test's: it returns an error
// instead of failing the test.
func (s *stack) start(b backend) (string, error) {
	name := "berth-e2e-" + s.id + "-" + b.name
	network := b.network
	if network == "" {
		network = s.network
	}
	args := []string{"--network", network, "-e", "NAME=" + b.name}
	labels := b.labels
	if !slices.ContainsFunc(labels, func(l string) bool { return strings.HasPrefix(l, "proxy.acme=") }) {
		// No test here may reach out to an ACME CA.
		labels = append(slices.Clone(labels), "proxy.acme=off")
	}
	for _, l := range labels {
		args = append(args, "--label", l)
	}
	for _, e := range b.env {
		args = append(args, "-e", e)
	}
	expose := b.expose
	if expose == nil {
		expose = []string{"80"}
	}
	for _, p := range expose {
		args = append(args, "--expose", p)
	}
	if !b.health {
		args = append(args, "--no-healthcheck")
	}
	s.track(&s.containers, name)
	_, err := testenv.TryDocker(slices.Concat([]string{"run", "-d", "--name", name}, testenv.LabelArgs(), args, []string{s.backendImg})...)
	return name, err
}

// rm force-removes a container, as `docker rm -f` does to a running service.
func (s *stack) rm(name string) {
	s.t.Helper()
	testenv.Docker(s.t, "rm", "-f", name)
}

// exec runs a shell command in the nginx container.
func (s *stack) exec(script string) (string, error) {
	return testenv.TryDocker("exec", s.nginx, "sh", "-c", script)
}

// health returns a container's Docker health status.
func (s *stack) health(name string) string {
	s.t.Helper()
	return testenv.Docker(s.t, "inspect", "--format", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", name)
}

// logs returns a container's stdout and stderr; extra are `docker logs` flags.
func logs(name string, extra ...string) (string, error) {
	out, err := exec.Command("docker", slices.Concat([]string{"logs"}, extra, []string{name})...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker logs %s: %w: %s", name, err, out)
	}
	return string(out), nil
}

// logLineWith returns the first line of berth's log that contains every
// one of words, or an error that says which were missing.
func (s *stack) logLineWith(words ...string) (string, error) {
	out, err := logs(s.berth)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(line, w) }) {
			return line, nil
		}
	}
	return "", fmt.Errorf("no berth log line contains all of %q", words)
}

// reloads counts the reload signals in nginx's error log (its stderr):
// nginx logs "signal 1 (SIGHUP) received" once per reload.
func (s *stack) reloads() int {
	s.t.Helper()
	out, err := logs(s.nginx)
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.Count(out, "(SIGHUP) received")
}

// teardown dumps diagnostics if the test failed (or BERTH_E2E_LOGS=1),
// then removes the stack.
func (s *stack) teardown() {
	if s.t.Failed() || os.Getenv("BERTH_E2E_LOGS") == "1" {
		s.dump()
	}
	s.mu.Lock()
	containers, networks, volumes := s.containers, s.networks, s.volumes
	s.mu.Unlock()
	remove := func(args []string, names []string) {
		if len(names) == 0 {
			return
		}
		if _, err := testenv.TryDocker(append(args, names...)...); err != nil && !strings.Contains(err.Error(), "No such") {
			s.t.Logf("teardown: %v", err)
		}
	}
	remove([]string{"rm", "-f", "-v"}, containers)
	// Anything else still attached (a container whose docker run failed
	// half-way, say) would keep the network alive.
	for _, n := range networks {
		if ids, err := testenv.TryDocker("ps", "-aq", "--filter", "network="+n); err == nil && ids != "" {
			remove([]string{"rm", "-f", "-v"}, strings.Fields(ids))
		}
	}
	remove([]string{"network", "rm"}, networks)
	remove([]string{"volume", "rm", "-f"}, volumes)
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// dump logs what a failed test needs to be understood without rerunning it.
func (s *stack) dump() {
	t := s.t
	if out, err := testenv.TryDocker("ps", "-a", "--filter", "name=berth-e2e-.*"+s.id,
		"--format", "{{.Names}}\t{{.Status}}\t{{.Ports}}"); err == nil {
		t.Logf("containers of this test:\n%s", out)
	}
	if s.berth != "" {
		out, err := logs(s.berth, "--tail", "400")
		t.Logf("docker logs %s (last 400 lines):\n%s%v", s.berth, out, errOrEmpty(err))
	}
	if s.nginx != "" {
		// nginx's error log is its stderr, the access log its stdout.
		cmd := exec.Command("docker", "logs", "--tail", "100", s.nginx)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		t.Logf("nginx error log (stderr of %s, last 100 lines):\n%s%v", s.nginx, stderr.String(), errOrEmpty(err))
		out, err := logs(s.nginx, "--tail", "15")
		t.Logf("docker logs %s (last 15 lines):\n%s%v", s.nginx, out, errOrEmpty(err))
	}
	if s.nginx != "" {
		out, err := s.exec(`for f in ` + confDir + `/*; do echo "=== $f"; cat "$f"; done`)
		if err != nil {
			out += "\n" + err.Error()
		}
		t.Logf("files in %s:\n%s", confDir, out)
	}
}
