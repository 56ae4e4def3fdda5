package agent

// Integration test of the agent against a real nginx: Docker is the unit
// layer's fake engine, but every `nginx -t` is the host nginx validating the
// files the agent wrote, and every SIGHUP reaches that nginx.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
	"github.com/berthproxy/berth/nginxconf"
)

// loopbackNode is a host nginx on its own prefix and loopback ports, with
// an agent whose engine validates and reloads it.
type loopbackNode struct {
	testAgent
	httpPort, httpsPort string
	cfg                 nginxconf.Config // listen addresses and webroot of every push
}

func newLoopbackNode(t *testing.T) loopbackNode {
	bin := testenv.RequireNginx(t)
	prefix := testenv.NginxPrefix(t, testenv.NginxBuild(t, bin, "-V"))
	n := loopbackNode{httpPort: strconv.Itoa(testenv.FreePort(t)), httpsPort: strconv.Itoa(testenv.FreePort(t))}
	n.cfg = nginxconf.Config{HTTPListen: "127.0.0.1:" + n.httpPort, HTTPSListen: "127.0.0.1:" + n.httpsPort, Webroot: filepath.Join(prefix, "webroot")}
	if err := os.MkdirAll(n.cfg.Webroot, 0o755); err != nil {
		t.Fatal(err)
	}
	eng := &fakeEngine{
		validate: func(string) (int, string) {
			out, err := testenv.NginxT(prefix, bin)
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				return exit.ExitCode(), out
			}
			return 0, out
		},
		reload: func() error { return hup(prefix) },
	}
	n.testAgent = testAgent{confDir: filepath.Join(prefix, "conf.d"), certsDir: filepath.Join(prefix, "certs"), webroot: n.cfg.Webroot, eng: eng}
	// nginx starts on berth's shared files alone, as a fresh node does
	// before the manager's first push.
	if _, err := nginxconf.Apply(n.confDir, nginxconf.Files{}, n.render(t)); err != nil {
		t.Fatal(err)
	}
	testenv.StartNginx(t, bin, prefix, func() error {
		return n.expect(newTestClient(nil), "http", "unknown.test", http.StatusServiceUnavailable, "")
	})
	n.testAgent = serveAgent(t, n.testAgent)
	return n
}

// render renders sites with the node's listen addresses and webroot.
func (n loopbackNode) render(t *testing.T, sites ...nginxconf.Site) nginxconf.Files {
	t.Helper()
	cfg := n.cfg
	cfg.Sites = sites
	files, errs := nginxconf.Render(cfg)
	if len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	return files
}

func payload(gen uint64, files nginxconf.Files) Payload {
	p := Payload{Generation: gen, Files: map[string]string{}}
	for name, data := range files {
		p.Files[name] = string(data)
	}
	return p
}

func newTestClient(roots *x509.CertPool) *http.Client {
	return &http.Client{
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: roots}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       5 * time.Second,
	}
}

// expect fetches / (or path) of host from the node's nginx and checks the
// status and, when want is set, that the body contains it.
func (n loopbackNode) expect(client *http.Client, scheme, host string, status int, want string, path ...string) error {
	port := n.httpPort
	if scheme == "https" {
		port = n.httpsPort
	}
	req, err := http.NewRequest(http.MethodGet, scheme+"://127.0.0.1:"+port+strings.Join(append([]string{"/"}, path...), ""), nil)
	if err != nil {
		return err
	}
	req.Host = host
	if scheme == "https" {
		client.Transport.(*http.Transport).TLSClientConfig.ServerName = host
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status || !strings.Contains(string(body), want) {
		return fmt.Errorf("%s://%s: %d %q, want %d with %q", scheme, host, resp.StatusCode, body, status, want)
	}
	return nil
}

func backend(t *testing.T, name string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello from "+name) }))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// A push lands a site and its certificate on a real nginx; a push with a
// file nginx rejects lands the rest and names the file; a forged push
// changes nothing; a challenge token is served for any managed host.
func TestAgentAppliesPushesToARealNginx(t *testing.T) {
	n := newLoopbackNode(t)
	ctx := context.Background()
	chain, key, cert := testenv.SelfSigned(t, "good.test", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	https := newTestClient(roots)
	plain := newTestClient(nil)
	good := nginxconf.Site{Host: "good.test", TLS: &nginxconf.TLS{
		CertFile: filepath.Join(n.certsDir, "good.test/1/fullchain.pem"), KeyFile: filepath.Join(n.certsDir, "good.test/1/privkey.pem"),
	}, Locations: []nginxconf.Location{{Path: "/", Backends: []string{backend(t, "good")}}}}

	p := payload(1, n.render(t, good))
	p.Certs = map[string]string{"good.test/1/fullchain.pem": string(chain), "good.test/1/privkey.pem": string(key)}
	resp, err := Push(ctx, n.url, testSecret, p)
	if err != nil || resp.Result != ResultOK {
		t.Fatalf("push of good.test: %+v, %v; want ok", resp, err)
	}
	testenv.Eventually(t, 5*time.Second, func() error { return n.expect(https, "https", "good.test", http.StatusOK, "hello from good") })

	other := nginxconf.Site{Host: "other.test", HTTPS: nginxconf.HTTPSOff, Locations: []nginxconf.Location{{Path: "/", Backends: []string{backend(t, "other")}}}}
	files := n.render(t, good, other)
	files["berth-bad.test.conf"] = []byte("server {\n    bogus_directive on;\n}\n")
	resp, err = Push(ctx, n.url, testSecret, payload(2, files))
	if err != nil || resp.Result != ResultRejected || !slices.Equal(resp.Held, []string{"berth-bad.test.conf"}) || !strings.Contains(resp.Error, "bogus_directive") {
		t.Fatalf("push with a bad file: %+v, %v; want rejected, berth-bad.test.conf held, nginx's message", resp, err)
	}
	testenv.Eventually(t, 5*time.Second, func() error { return n.expect(plain, "http", "other.test", http.StatusOK, "hello from other") })
	if err := n.expect(https, "https", "good.test", http.StatusOK, "hello from good"); err != nil {
		t.Fatalf("good.test after the rejected file: %v", err)
	}

	before := n.files(t)
	if _, err := Push(ctx, n.url, []byte("forged"), payload(3, n.render(t))); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("forged push: %v; want HTTP 401", err)
	}
	if after := n.files(t); len(after) != len(before) || after["berth-good.test.conf"] == nil {
		t.Fatal("a forged push changed the conf dir")
	}
	if err := n.expect(https, "https", "good.test", http.StatusOK, "hello from good"); err != nil {
		t.Fatalf("good.test after the forged push: %v", err)
	}

	// nginx's workers run as another user: the token must be readable
	// whatever the agent's umask.
	old := syscall.Umask(0o077)
	err = PutChallenge(ctx, n.url, testSecret, "tok_1-A", "tok_1-A.key")
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.expect(plain, "http", "good.test", http.StatusOK, "tok_1-A.key", ".well-known/acme-challenge/tok_1-A"); err != nil {
		t.Fatalf("challenge token: %v", err)
	}
	if err := DeleteChallenge(ctx, n.url, testSecret, "tok_1-A"); err != nil {
		t.Fatal(err)
	}
	if err := n.expect(plain, "http", "good.test", http.StatusNotFound, "", ".well-known/acme-challenge/tok_1-A"); err != nil {
		t.Fatalf("challenge token after DELETE: %v", err)
	}
}

// hup sends SIGHUP to the nginx of prefix. It returns an error rather than
// failing the test: it runs on the agent's request goroutine.
func hup(prefix string) error {
	raw, err := os.ReadFile(filepath.Join(prefix, "nginx.pid"))
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return fmt.Errorf("nginx.pid: %w", err)
	}
	return syscall.Kill(pid, syscall.SIGHUP)
}
