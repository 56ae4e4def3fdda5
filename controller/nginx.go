package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Nginx is the one place that knows which container is berth's nginx: it
// finds it (by name, or by label preferring the one that shares a network
// with berth itself), confirms with `nginx -V` that it really is nginx before
// its `nginx -t` is trusted or it is signalled, reads its build, and knows
// its addresses for the challenge self-check and the served-certificate
// check.
//
// Find, Build and the fields it guards run on the reconcile goroutine only;
// Probe and VerifyServed may be called from others, so the addresses sit
// behind mu.
type Nginx struct {
	engine Engine
	name   string // BERTH_NGINX_CONTAINER; "" finds it by label
	self   string // berth's own container ID (or a prefix of it); "" outside a container
	// probeAddr overrides where Probe sends requests ("" = nginx's addresses).
	probeAddr string
	// Ports of nginx's HTTP and HTTPS servers; tests move them.
	httpPort, httpsPort string

	verdicts map[string]nginxVerdict // container ID → what `nginx -V` said
	current  string                  // ID of the nginx in use
	reported map[string]bool         // messages logged once
	state    string                  // last logged lookup outcome

	mu    sync.Mutex
	addrs []string // nginx's IPs, one per network
}

// nginxVerdict is what `nginx -V` in a candidate container showed.
type nginxVerdict struct {
	nginx bool
	build string // the output, for the HTTP/2 mode
}

// NewNginx returns the nginx locator. self is berth's own container ID
// (see SelfID); probeAddr overrides the self-check address.
func NewNginx(engine Engine, name, self, probeAddr string) *Nginx {
	return &Nginx{engine: engine, name: name, self: self, probeAddr: probeAddr, httpPort: "80", httpsPort: "443",
		verdicts: map[string]nginxVerdict{}, reported: map[string]bool{}}
}

// Find picks berth's nginx among cs and returns it with its `nginx -V`
// output. A labelled container that is not nginx is reported once and never
// trusted; when several confirmed nginx containers remain, the one in use
// so far is kept (said once), else the pass fails as ambiguous.
func (n *Nginx) Find(ctx context.Context, cs []Container, log *logrus.Entry) (Container, string, error) {
	var confirmed []Container
	var unknown error // a candidate that could not be asked this pass
	for _, c := range NginxCandidates(cs, n.name, n.self) {
		v, err := n.verdict(ctx, c, log)
		switch {
		case err != nil:
			unknown = errors.Join(unknown, err)
		case v.nginx:
			confirmed = append(confirmed, c)
		}
	}
	if len(confirmed) == 0 && unknown != nil {
		// Docker failed, not the candidates: retry with backoff rather
		// than wait for an event as for a missing nginx.
		return Container{}, "", unknown
	}
	chosen, state, err := chooseNginx(confirmed, n.current)
	n.logState(state, chosen, confirmed, log)
	if err != nil {
		return Container{}, "", err
	}
	n.current = chosen.ID
	n.setAddrs(chosen)
	return chosen, n.verdicts[chosen.ID].build, nil
}

// NginxCandidates lists the running containers that may be berth's nginx:
// the named one when name is set; else those labelled proxy.nginx=true
// (never berth itself), and among them, when berth runs in a container,
// those that share a network with it, so several berth + nginx pairs can
// share one engine without settings. Pure.
func NginxCandidates(cs []Container, name, self string) []Container {
	var labelled []Container
	var me *Container
	for i, c := range cs {
		if self != "" && strings.HasPrefix(c.ID, self) {
			me = &cs[i]
		}
		if !c.Running {
			continue
		}
		if name != "" {
			if c.Name == name || strings.HasPrefix(c.ID, name) {
				return []Container{c}
			}
			continue
		}
		if c.Labels[LabelNginx] == "true" && (self == "" || !strings.HasPrefix(c.ID, self)) {
			labelled = append(labelled, c)
		}
	}
	if me == nil || len(labelled) < 2 {
		return labelled
	}
	var near []Container
	for _, c := range labelled {
		if slices.ContainsFunc(sortedKeys(c.Networks), func(net string) bool { _, ok := me.Networks[net]; return ok }) {
			near = append(near, c)
		}
	}
	if len(near) == 0 {
		return labelled
	}
	return near
}

// chooseNginx decides among confirmed nginx containers. Pure.
func chooseNginx(confirmed []Container, current string) (Container, string, error) {
	switch {
	case len(confirmed) == 1:
		return confirmed[0], "found", nil
	case len(confirmed) == 0:
		return Container{}, "missing", errNginxMissing
	}
	if i := slices.IndexFunc(confirmed, func(c Container) bool { return c.ID == current }); i >= 0 {
		return confirmed[i], "ambiguous-kept", nil
	}
	return Container{}, "ambiguous", fmt.Errorf("%d running nginx containers carry %s=true and none shares a network with berth alone; set BERTH_NGINX_CONTAINER (candidates: %s)",
		len(confirmed), LabelNginx, containerNames(confirmed))
}

func containerNames(cs []Container) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return strings.Join(out, ", ")
}

// verdict runs `nginx -V` once per container. A container where it fails
// to run or prints no nginx version is not nginx: berth never sends it
// `nginx -t` or a signal. An error of the exec call itself (Docker down, a
// socket proxy that refuses exec there) is returned and not remembered, so
// the container is asked again next pass rather than judged; meanwhile the
// other candidates decide.
func (n *Nginx) verdict(ctx context.Context, c Container, log *logrus.Entry) (nginxVerdict, error) {
	if v, ok := n.verdicts[c.ID]; ok {
		return v, nil
	}
	code, out, err := n.engine.Exec(ctx, c.ID, []string{"nginx", "-V"})
	if err != nil && !isNoSuchCommand(err) {
		return nginxVerdict{}, fmt.Errorf("confirm nginx in %s: %w", c.Name, err)
	}
	v := nginxVerdict{nginx: err == nil && code == 0 && nginxVersion.MatchString(out), build: out}
	n.verdicts[c.ID] = v
	if v.nginx {
		log.WithFields(logrus.Fields{"container": c.Name, "nginx_version": nginxVersion.FindString(out), "http2": HTTP2Mode(out)}).Info("nginx build detected")
	} else {
		log.WithFields(logrus.Fields{"container": c.Name, "exit": code}).WithError(err).
			Error("container is labelled or named as berth's nginx but `nginx -V` does not show nginx; it is never validated against or signalled")
	}
	return v, nil
}

// isNoSuchCommand tells an exec that could not start the binary (not
// nginx) from a failure of Docker itself.
func isNoSuchCommand(err error) bool {
	s := err.Error()
	return strings.Contains(s, "executable file not found") || strings.Contains(s, "no such file or directory")
}

// Forget drops what is known of containers that are gone, so a new
// container reusing nothing of an old one is confirmed afresh.
func (n *Nginx) Forget(cs []Container) {
	for id := range n.verdicts {
		if !slices.ContainsFunc(cs, func(c Container) bool { return c.ID == id }) {
			delete(n.verdicts, id)
		}
	}
}

func (n *Nginx) logState(state string, chosen Container, confirmed []Container, log *logrus.Entry) {
	if state == n.state && (state != "found" || chosen.ID == n.current) {
		return
	}
	n.state = state
	e := log.WithField("nginx", n.name)
	switch state {
	case "found":
		e.WithField("container", chosen.Name).Info("nginx container found")
	case "missing":
		e.Warn("nginx container not running; berth writes nothing until it is back")
	case "ambiguous-kept":
		e.WithFields(logrus.Fields{"container": chosen.Name, "candidates": containerNames(confirmed)}).
			Warn("several nginx containers qualify; keeping the one in use (set BERTH_NGINX_CONTAINER to choose)")
	case "ambiguous":
		e.WithField("candidates", containerNames(confirmed)).Error("several nginx containers qualify and none was in use; set BERTH_NGINX_CONTAINER")
	}
}

// setAddrs remembers nginx's addresses, one per network: berth may share
// only some of them.
func (n *Nginx) setAddrs(c Container) {
	var ips []string
	for _, name := range sortedKeys(c.Networks) {
		if ip := c.Networks[name]; ip != "" {
			ips = append(ips, ip)
		}
	}
	n.mu.Lock()
	n.addrs = ips
	n.mu.Unlock()
}

func (n *Nginx) addrsWithPort(port string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, len(n.addrs))
	for i, ip := range n.addrs {
		out[i] = net.JoinHostPort(ip, port)
	}
	return out
}

var nginxVersion = regexp.MustCompile(`nginx/(\d+)\.(\d+)\.(\d+)`)

// DockerDNS is Docker's embedded DNS server as every container on a
// user-defined network sees it, nginx's included: it answers with the
// addresses of the containers that carry a name (a network alias, which
// Compose gives every replica of a service) on the asker's networks.
const DockerDNS = "127.0.0.11"

// nginxRelease is the version line of nginx itself. It names the program
// so a fork that prints its own name before "nginx/" (freenginx forked
// before "server ... resolve" came to open source nginx) is not taken for it.
var nginxRelease = regexp.MustCompile(`(?m)^nginx version: nginx/(\d+)\.(\d+)\.(\d+)`)

// ResolverFor says, from "nginx -V" output, which DNS server the nginx in
// use re-resolves backend names against: DockerDNS from nginx 1.27.3, the
// first open source release with "server ... resolve" and "resolver" in
// upstream blocks (and with the upstream zone module they need, which a
// build can leave out); "" before, so older nginx gets addresses as it
// always did. Pure: the reconcile pass passes its result into Desired.
func ResolverFor(nginxV string) string {
	m := nginxRelease.FindStringSubmatch(nginxV)
	if m == nil || strings.Contains(nginxV, "--without-http_upstream_zone_module") {
		return ""
	}
	v := [3]int{}
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	if v[0] > 1 || v[1] > 27 || (v[1] == 27 && v[2] >= 3) {
		return DockerDNS
	}
	return ""
}

// probeClient never follows redirects: the challenge path must be served
// on port 80 itself, ahead of any redirect.
var probeClient = &http.Client{
	Timeout:       3 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// Probe fetches path from nginx with the given Host header: the
// certificate manager's self-check that the challenge path reaches the
// webroot before it spends a CA validation.
func (n *Nginx) Probe(ctx context.Context, host, path string) (string, error) {
	addrs := n.addrsWithPort(n.httpPort)
	if n.probeAddr != "" {
		addrs = []string{n.probeAddr}
	}
	if len(addrs) == 0 {
		return "", errors.New("nginx address not known yet")
	}
	var err error
	for _, addr := range addrs {
		var body string
		if body, err = probe(ctx, addr, host, path); err == nil {
			return body, nil
		}
	}
	return "", err
}

func probe(ctx context.Context, addr, host, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return "", err
	}
	req.Host = host
	resp, err := probeClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return string(body), nil
}

// tlsCheckTimeout bounds one handshake of the served-certificate check; nginx
// answers in milliseconds on the same host.
const tlsCheckTimeout = 3 * time.Second

// ServedSerial makes a TLS handshake to nginx's port 443 with host as SNI
// and returns the serial (lower-case hex) of the certificate nginx serves.
// It tries each nginx address berth can reach. The chain is not verified:
// the point is to compare what is served with what is stored.
func (n *Nginx) ServedSerial(ctx context.Context, host string) (string, error) {
	addrs := n.addrsWithPort(n.httpsPort)
	if n.probeAddr != "" {
		if h, _, err := net.SplitHostPort(n.probeAddr); err == nil {
			addrs = []string{net.JoinHostPort(h, n.httpsPort)}
		}
	}
	if len(addrs) == 0 {
		return "", errors.New("nginx address not known yet")
	}
	var err error
	for _, addr := range addrs {
		var serial string
		if serial, err = servedSerial(ctx, addr, host); err == nil {
			return serial, nil
		}
	}
	return "", err
}

func servedSerial(ctx context.Context, addr, host string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, tlsCheckTimeout)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{ServerName: host, InsecureSkipVerify: true}} //nolint:gosec // compares serials, trusts nothing
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", fmt.Errorf("%s served no certificate for %s", addr, host)
	}
	return certs[0].SerialNumber.Text(16), nil
}

// containerID matches a full container ID in /proc/self/mountinfo or
// /proc/self/cgroup ("/docker/containers/<id>/hostname", "docker-<id>.scope").
var containerID = regexp.MustCompile(`(?:containers/|docker[-/])([0-9a-f]{64})`)

// SelfID finds berth's own container ID from the contents of
// /proc/self/mountinfo and /proc/self/cgroup, falling back to the hostname
// (Docker sets it to the short ID unless told otherwise). "" when berth does
// not run in a container. Pure.
func SelfID(mountinfo, cgroup, hostname string) string {
	for _, s := range []string{mountinfo, cgroup} {
		if m := containerID.FindStringSubmatch(s); m != nil {
			return m[1]
		}
	}
	if regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(hostname) {
		return hostname
	}
	return ""
}
