package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// engineSocket is the Docker engine's socket on the test machine.
const engineSocket = "/var/run/docker.sock"

// ProxySocketName is the name of the proxy's socket inside DockerProxy.Dir.
const ProxySocketName = "docker.sock"

// DockerProxy is an allow-list proxy in front of the Docker engine's socket,
// for tests that prove berth needs no more of the Docker API than it claims.
// It listens on a unix socket in a temporary directory, which a test
// bind-mounts into the berth container (DOCKER_HOST=unix:///…/docker.sock).
//
// It forwards only the calls in berth's list (README "Security"): the ping,
// listing and inspecting containers, the event stream, and exec and kill
// -s HUP on the one nginx container; an exec must run nginx, and an exec
// can be started and inspected only if it was created through the proxy.
// Everything else is answered 403 and recorded; the test fails at cleanup
// for every refused call, so a new call in berth cannot pass unnoticed.
type DockerProxy struct {
	// Dir is the host directory that holds the socket (ProxySocketName).
	Dir string

	t      testing.TB
	nginx  []string // the nginx container's full ID and its name
	server *http.Server
	ln     net.Listener

	mu       sync.Mutex
	conns    map[net.Conn]struct{} // open connections on both sides, for Cut
	execs    map[string]bool       // exec IDs created in nginx through the proxy
	requests []ProxyRequest
	expected int // refused calls before this index were provoked on purpose
}

// ProxyRequest is one call berth made through the proxy.
type ProxyRequest struct {
	Method string
	Path   string // without the /v1.NN prefix, with the query
	// Refused says why the call was not forwarded; empty when it was.
	Refused string
}

func (r ProxyRequest) String() string {
	s := r.Method + " " + r.Path
	if r.Refused != "" {
		s += " (refused: " + r.Refused + ")"
	}
	return s
}

// StartDockerProxy starts a proxy that allows exec and kill only in the
// container nginx (a name or ID, resolved now). It stops at the end of the
// test and then fails the test for every call it refused.
func StartDockerProxy(t testing.TB, nginx string) *DockerProxy {
	t.Helper()
	out, err := TryDocker("inspect", "--format", "{{.Id}} {{.Name}}", nginx)
	if err != nil {
		t.Fatalf("docker proxy: resolve the nginx container: %v", err)
	}
	id, name, _ := strings.Cut(out, " ")
	p := &DockerProxy{
		Dir:   t.TempDir(),
		t:     t,
		nginx: []string{id, strings.TrimPrefix(name, "/")},
		conns: map[net.Conn]struct{}{},
		execs: map[string]bool{},
	}
	ln, err := net.Listen("unix", filepath.Join(p.Dir, ProxySocketName))
	if err != nil {
		t.Fatalf("docker proxy: %v", err)
	}
	// berth runs as root in its container, but other images may not.
	if err := os.Chmod(filepath.Join(p.Dir, ProxySocketName), 0o666); err != nil {
		t.Fatalf("docker proxy: %v", err)
	}
	p.ln = trackedListener{Listener: ln, p: p}
	p.server = &http.Server{Handler: p.handler()}
	go p.server.Serve(p.ln)
	t.Cleanup(p.stop)
	return p
}

// stop closes the proxy and reports every refused call.
func (p *DockerProxy) stop() {
	p.server.Close()
	p.Cut()
	p.mu.Lock()
	late := refused(p.requests[p.expected:])
	p.mu.Unlock()
	for _, r := range late {
		p.t.Errorf("berth called %s %s through the Docker proxy: outside its allow-list (%s)", r.Method, r.Path, r.Refused)
	}
}

// Requests returns every call so far, in order of arrival.
func (p *DockerProxy) Requests() []ProxyRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ProxyRequest(nil), p.requests...)
}

// Refused returns the calls that were not forwarded.
func (p *DockerProxy) Refused() []ProxyRequest { return refused(p.Requests()) }

// ExpectRefused returns the calls refused so far and stops reporting them
// at cleanup: for a test that provokes refusals on purpose.
func (p *DockerProxy) ExpectRefused() []ProxyRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := refused(p.requests[p.expected:])
	p.expected = len(p.requests)
	return out
}

func refused(rs []ProxyRequest) []ProxyRequest {
	var out []ProxyRequest
	for _, r := range rs {
		if r.Refused != "" {
			out = append(out, r)
		}
	}
	return out
}

// Cut closes every open connection, on berth's side and on the engine's,
// as a restart of a socket proxy or a broken network would: an event
// stream ends with an error, a call in flight fails. New connections are
// accepted as before. It returns how many connections it closed.
func (p *DockerProxy) Cut() int {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	return len(conns)
}

func (p *DockerProxy) handler() http.Handler {
	engine := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "docker"
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				c, err := d.DialContext(ctx, "unix", engineSocket)
				if err != nil {
					return nil, err
				}
				return p.track(c), nil
			},
		},
		FlushInterval:  -1, // the event stream must not wait in a buffer
		ModifyResponse: p.learnExec,
		// Copy errors are what Cut causes; berth reports its side of them.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		why := p.check(r)
		p.record(ProxyRequest{Method: r.Method, Path: apiPath(r.URL.RequestURI()), Refused: why})
		if why != "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(map[string]string{"message": "refused by the test's Docker proxy: " + why})
			return
		}
		engine.ServeHTTP(w, r)
	})
}

func (p *DockerProxy) record(r ProxyRequest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = append(p.requests, r)
}

func (p *DockerProxy) knownExec(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.execs[id]
}

// check is "" when r is on the allow-list, else the reason it is not.
func (p *DockerProxy) check(r *http.Request) string {
	why := AllowedDockerCall(r.Method, apiPath(r.URL.Path), r.URL.Query().Get("signal"), p.nginx, p.knownExec)
	if why != "" || !execCreate.MatchString(apiPath(r.URL.Path)) {
		return why
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return fmt.Sprintf("read exec body: %v", err)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return ExecCommandAllowed(body)
}

// learnExec records the ID of an exec created through the proxy, so that
// only those can be started and inspected.
func (p *DockerProxy) learnExec(resp *http.Response) error {
	if resp.StatusCode != http.StatusCreated || !execCreate.MatchString(apiPath(resp.Request.URL.Path)) {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read exec create response: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var created struct{ ID string }
	if err := json.Unmarshal(body, &created); err != nil {
		return fmt.Errorf("exec create response %q: %w", body, err)
	}
	p.mu.Lock()
	p.execs[created.ID] = true
	p.mu.Unlock()
	return nil
}

var (
	apiVersion = regexp.MustCompile(`^/v[0-9]+\.[0-9]+/`)
	execCreate = regexp.MustCompile(`^/containers/[^/]+/exec$`)
)

// apiPath drops the /v1.NN version prefix: the client negotiates it.
func apiPath(path string) string { return apiVersion.ReplaceAllString(path, "/") }

// AllowedDockerCall decides one call of berth's allow-list: it returns ""
// when method on path (version prefix removed) is allowed, else the reason.
// nginx holds the names (ID, name) under which the nginx container may be
// addressed; signal is the kill call's signal; knownExec says whether an
// exec ID was created through the proxy. Pure.
func AllowedDockerCall(method, path, signal string, nginx []string, knownExec func(string) bool) string {
	seg := strings.Split(strings.Trim(path, "/"), "/")
	isNginx := func(ref string) bool { return ref != "" && slices.Contains(nginx, ref) }
	switch {
	case path == "/_ping" && (method == http.MethodHead || method == http.MethodGet):
		return ""
	case method == http.MethodGet && (path == "/containers/json" || path == "/events"):
		return ""
	case method == http.MethodGet && len(seg) == 3 && seg[0] == "containers" && seg[2] == "json":
		return "" // inspect: read-only, needed for berth's own container and exposed ports
	case method == http.MethodPost && len(seg) == 3 && seg[0] == "containers" && seg[2] == "exec":
		if !isNginx(seg[1]) {
			return "exec in a container that is not nginx"
		}
		return ""
	case method == http.MethodPost && len(seg) == 3 && seg[0] == "containers" && seg[2] == "kill":
		if !isNginx(seg[1]) {
			return "kill of a container that is not nginx"
		}
		if signal != "HUP" && signal != "SIGHUP" && signal != "1" {
			return fmt.Sprintf("signal %q to nginx; only HUP reloads it", signal)
		}
		return ""
	case len(seg) == 3 && seg[0] == "exec" &&
		(method == http.MethodPost && seg[2] == "start" || method == http.MethodGet && seg[2] == "json"):
		if !knownExec(seg[1]) {
			return "exec that was not created in nginx through this proxy"
		}
		return ""
	}
	return "not on berth's list of Docker API calls"
}

// ExecCommandAllowed is "" when an exec create body runs nginx (nginx -t,
// nginx -V), else the reason. Pure.
func ExecCommandAllowed(body []byte) string {
	var req struct{ Cmd []string }
	if err := json.Unmarshal(body, &req); err != nil {
		return fmt.Sprintf("exec create body: %v", err)
	}
	if len(req.Cmd) == 0 || req.Cmd[0] != "nginx" {
		return fmt.Sprintf("exec of %q; only nginx itself may run", req.Cmd)
	}
	return ""
}

// track registers c for Cut until it is closed.
func (p *DockerProxy) track(c net.Conn) net.Conn {
	tc := &trackedConn{Conn: c, p: p}
	p.mu.Lock()
	p.conns[tc] = struct{}{}
	p.mu.Unlock()
	return tc
}

type trackedListener struct {
	net.Listener
	p *DockerProxy
}

func (l trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.p.track(c), nil
}

type trackedConn struct {
	net.Conn
	p *DockerProxy
}

func (c *trackedConn) Close() error {
	c.p.mu.Lock()
	delete(c.p.conns, c)
	c.p.mu.Unlock()
	return c.Conn.Close()
}
