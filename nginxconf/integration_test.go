package nginxconf

// Integration tests: the renderer's output goes through a real nginx. The
// golden configs must pass `nginx -t` on the oldest (host, 1.22) and newest
// (Debian sid image) nginx we support, and a host nginx serving a rendered
// config on loopback must route, balance, forward headers, serve ACME tokens,
// terminate TLS and reload the way the renderer's comments promise.

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
)

// nginxStartTimeout bounds how long a freshly started nginx (or a reload)
// may take to answer: it is ready in well under a second on the slowest
// machine we run on, so 15 s only ever runs out when it is broken.
const nginxStartTimeout = 15 * time.Second

// acmeToken is the challenge file every test webroot holds.
const (
	acmeToken   = "tok123"
	acmeContent = "tok123.thumbprint"
	acmePath    = "/.well-known/acme-challenge/" + acmeToken
)

func TestGoldenConfigsPassNginxT(t *testing.T) {
	bin := testenv.RequireNginx(t)
	t.Run("host", func(t *testing.T) {
		build := testenv.NginxBuild(t, bin, "-V")
		for _, tc := range nginxTCases(t) {
			if tc.newOnly && strings.Contains(build, "nginx/1.22.") {
				continue // a config for newer nginx; the controller never sends it to 1.22
			}
			t.Run(tc.name, func(t *testing.T) {
				prefix := goldenPrefix(t, tc.cfg, build)
				nginxT(t, prefix, bin)
			})
		}
	})
	t.Run("sid", func(t *testing.T) {
		image := testenv.NginxImage(t, "sid")
		run := slices.Concat([]string{"docker", "run", "--rm"}, testenv.LabelArgs())
		build := testenv.NginxBuild(t, slices.Concat(run, []string{image, "sh", "-c", "nginx -V 2>&1"})...)
		t.Logf("image %s: %s", image, firstLine(build))
		for _, tc := range nginxTCases(t) {
			t.Run(tc.name, func(t *testing.T) {
				prefix := goldenPrefix(t, tc.cfg, build)
				nginxT(t, prefix, slices.Concat(run, []string{"-v", prefix + ":" + prefix, image, "nginx"})...)
			})
		}
	})
}

// nginxTCases are the golden configs and, unless -short, 1,000 sites with
// 60-character names (nginx's default hash sizes hold neither).
func nginxTCases(t *testing.T) []configCase {
	if testing.Short() {
		t.Log("-short: leaving out the 1,000-site config")
		return goldenCases
	}
	many := Config{Webroot: "/var/www/acme", Sites: manySites(1000, 60, "172.18.0.5:80")}
	return append(slices.Clone(goldenCases), configCase{"1000-sites-60-char-names", many, false})
}

// goldenPrefix lays out a golden case under a fresh nginx prefix: its
// certificate paths and webroot moved into the prefix, self-signed
// certificates at those paths, the rendered files in conf.d and a main
// nginx.conf. It checks that what nginx will see is the golden output with
// only those paths changed.
func goldenPrefix(t *testing.T, golden Config, build string) string {
	prefix := nginxPrefix(t, build)
	cfg := golden
	cfg.Webroot = filepath.Join(prefix, "webroot")
	back := []string{cfg.Webroot, golden.Webroot}
	cfg.Sites = slices.Clone(golden.Sites)
	for i, s := range cfg.Sites {
		if s.TLS == nil {
			continue
		}
		dir := filepath.Join(prefix, "certs", s.Host)
		tlsFiles := &TLS{CertFile: filepath.Join(dir, "fullchain.pem"), KeyFile: filepath.Join(dir, "privkey.pem")}
		writeSelfSigned(t, tlsFiles, s.Host)
		back = append(back, tlsFiles.CertFile, s.TLS.CertFile, tlsFiles.KeyFile, s.TLS.KeyFile)
		cfg.Sites[i].TLS = tlsFiles
	}
	got := strings.NewReplacer(back...).Replace(string(joinFiles(applyConfig(t, prefix, cfg))))
	if want := string(joinFiles(render(t, golden))); got != want {
		t.Fatalf("moving paths into %s changed more than the paths:\n%s", prefix, got)
	}
	return prefix
}

func TestNginxRoutesByHostOnLoopback(t *testing.T) {
	bin := testenv.RequireNginx(t)
	prefix := nginxPrefix(t, testenv.NginxBuild(t, bin, "-V"))
	httpPort, httpsPort := freePorts(t)
	root, api, lb1, lb2 := echoBackend(t, "root"), echoBackend(t, "api"), echoBackend(t, "lb1"), echoBackend(t, "lb2")
	secure, redirect := certFor(t, prefix, "secure.test"), certFor(t, prefix, "redirect.test")
	cfg := Config{
		HTTPListen:  "127.0.0.1:" + httpPort,
		HTTPSListen: "127.0.0.1:" + httpsPort,
		Webroot:     filepath.Join(prefix, "webroot"),
		Sites: []Site{
			{Host: "app.test", Locations: []Location{{Path: "/", Backends: []string{root}}, {Path: "/api", Backends: []string{api}}}},
			{Host: "lb.test", Locations: []Location{{Path: "/", Backends: []string{lb1, lb2}}}},
			{Host: "down.test", Locations: []Location{{Path: "/"}}},
			{Host: "secure.test", HTTPS: HTTPSBoth, TLS: secure.files, Locations: []Location{{Path: "/", Backends: []string{root}}}},
			{Host: "redirect.test", TLS: redirect.files, Locations: []Location{{Path: "/", Backends: []string{root}}}},
		},
	}
	applyConfig(t, prefix, cfg)
	startNginx(t, bin, prefix, httpPort)
	plain := newClient(nil)
	httpURL := "http://127.0.0.1:" + httpPort

	t.Run("routes by host and path prefix", func(t *testing.T) {
		for _, c := range []struct{ host, path, backend string }{
			{"app.test", "/", "root"},
			{"app.test", "/anything/else?q=1", "root"},
			{"app.test", "/api", "api"},
			{"app.test", "/api/x", "api"},
			{"app.test", "/apix", "root"},
			{"app.test:" + httpPort, "/api/", "api"},
			{"secure.test", "/", "root"}, // HTTPS "both" still proxies plain HTTP
		} {
			e := mustEcho(t, plain, httpURL, c.host, c.path, nil)
			if e.Backend != c.backend || e.URI != c.path {
				t.Errorf("Host %s, GET %s: reached backend %q with URI %q, want %q with the URI unchanged", c.host, c.path, e.Backend, e.URI, c.backend)
			}
		}
	})

	t.Run("balances over both backends", func(t *testing.T) {
		hits := map[string]int{}
		for range 20 {
			hits[mustEcho(t, plain, httpURL, "lb.test", "/", nil).Backend]++
		}
		if hits["lb1"] == 0 || hits["lb2"] == 0 || hits["lb1"]+hits["lb2"] != 20 {
			t.Errorf("20 requests to lb.test reached %v, want both lb1 and lb2 and nothing else", hits)
		}
	})

	t.Run("unknown host and backendless site answer 503", func(t *testing.T) {
		for _, host := range []string{"unknown.test", "down.test"} {
			status, body, _ := get(t, plain, httpURL, host, "/", nil)
			if status != http.StatusServiceUnavailable || strings.Contains(body, `"backend"`) {
				t.Errorf("Host %s: got %d %q, want 503 with no backend's answer", host, status, body)
			}
		}
	})

	t.Run("acme challenge is served on every host over HTTP", func(t *testing.T) {
		for _, host := range []string{"app.test", "lb.test", "down.test", "secure.test", "redirect.test", "unknown.test"} {
			status, body, hdr := get(t, plain, httpURL, host, acmePath, nil)
			if status != http.StatusOK || body != acmeContent {
				t.Errorf("Host %s, GET %s: got %d %q, want 200 %q", host, acmePath, status, body, acmeContent)
			}
			if ct := hdr.Get("Content-Type"); ct != "text/plain" {
				t.Errorf("Host %s, GET %s: Content-Type %q, want text/plain", host, acmePath, ct)
			}
		}
	})

	t.Run("forwarded headers over HTTP", func(t *testing.T) {
		want := echo{Backend: "root", Host: "app.test", URI: "/", XFF: "127.0.0.1", Proto: "http",
			FwdHost: "app.test", FwdPort: httpPort, RealIP: "127.0.0.1"}
		if got := mustEcho(t, plain, httpURL, "app.test", "/", nil); got != want {
			t.Errorf("backend saw %+v, want %+v", got, want)
		}
		// berth is the edge: a client's own X-Forwarded-For is replaced.
		got := mustEcho(t, plain, httpURL, "app.test", "/", http.Header{"X-Forwarded-For": {"198.51.100.7"}})
		if got.XFF != "127.0.0.1" || got.RealIP != "127.0.0.1" {
			t.Errorf("with X-Forwarded-For 198.51.100.7 the backend saw X-Forwarded-For %q, X-Real-IP %q", got.XFF, got.RealIP)
		}
	})

	t.Run("unknown SNI has its handshake rejected", func(t *testing.T) {
		dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
			Config: &tls.Config{ServerName: "unknown.test", InsecureSkipVerify: true}}
		conn, err := dialer.Dial("tcp", "127.0.0.1:"+httpsPort)
		if err == nil {
			conn.Close()
			t.Fatal("TLS handshake with SNI unknown.test succeeded, want it rejected")
		}
		t.Logf("handshake with SNI unknown.test: %v", err)
	})

	t.Run("TLS sites serve their certificate and proxy", func(t *testing.T) {
		httpsURL := "https://127.0.0.1:" + httpsPort
		for _, c := range []certificate{secure, redirect} {
			client := newClient(&tls.Config{ServerName: c.host, RootCAs: c.pool})
			want := echo{Backend: "root", Host: c.host, URI: "/x?y=1", XFF: "127.0.0.1", Proto: "https",
				FwdHost: c.host, FwdPort: httpsPort, RealIP: "127.0.0.1"}
			if got := mustEcho(t, client, httpsURL, c.host, "/x?y=1", nil); got != want {
				t.Errorf("over HTTPS to %s the backend saw %+v, want %+v", c.host, got, want)
			}
		}
	})

	t.Run("redirect mode sends plain HTTP to HTTPS except the challenge", func(t *testing.T) {
		status, _, hdr := get(t, plain, httpURL, "redirect.test", "/some/path?q=1", nil)
		if loc := hdr.Get("Location"); status != http.StatusMovedPermanently || loc != "https://redirect.test/some/path?q=1" {
			t.Errorf("GET http://redirect.test/some/path?q=1: got %d Location %q, want 301 to https://redirect.test/some/path?q=1", status, loc)
		}
		if status, body, _ := get(t, plain, httpURL, "redirect.test", acmePath, nil); status != http.StatusOK || body != acmeContent {
			t.Errorf("GET http://redirect.test%s: got %d %q, want 200 %q", acmePath, status, body, acmeContent)
		}
	})
}

func TestReloadKeepsServingWithNewConfig(t *testing.T) {
	bin := testenv.RequireNginx(t)
	prefix := nginxPrefix(t, testenv.NginxBuild(t, bin, "-V"))
	httpPort, httpsPort := freePorts(t)
	oldSite := Site{Host: "old.test", Locations: []Location{{Path: "/", Backends: []string{echoBackend(t, "old")}}}}
	newSite := Site{Host: "new.test", Locations: []Location{{Path: "/", Backends: []string{echoBackend(t, "new")}}}}
	cfg := Config{HTTPListen: "127.0.0.1:" + httpPort, HTTPSListen: "127.0.0.1:" + httpsPort, Webroot: filepath.Join(prefix, "webroot"), Sites: []Site{oldSite}}
	applyConfig(t, prefix, cfg)
	startNginx(t, bin, prefix, httpPort)
	client := newClient(nil)
	url := "http://127.0.0.1:" + httpPort
	if status, _, _ := get(t, client, url, "new.test", "/", nil); status != http.StatusServiceUnavailable {
		t.Fatalf("before the reload new.test answered %d, want 503 from the default server", status)
	}

	// Keep asking the old site, on a fresh connection each time, from before
	// the files change until the new site answers.
	stop, failures := make(chan struct{}), make(chan error, 1)
	var stopOnce sync.Once
	stopPolling := func() { stopOnce.Do(func() { close(stop) }) }
	t.Cleanup(stopPolling) // runs before nginx stops, should the test end early
	var oldHits int
	go func() {
		defer close(failures)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if e, err := fetchEcho(client, url, "old.test", "/", nil); err != nil || e.Backend != "old" {
				failures <- fmt.Errorf("old.test during the reload: %+v, %v", e, err)
				return
			}
			oldHits++
		}
	}()

	cfg.Sites = []Site{oldSite, newSite}
	confd := filepath.Join(prefix, "conf.d")
	previous, err := ReadOwned(confd)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := Apply(confd, previous, render(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"berth-new.test.conf"}; !slices.Equal(plan.Write, want) || len(plan.Remove) != 0 {
		t.Errorf("adding a site planned %+v, want to write only %v", plan, want)
	}
	nginxT(t, prefix, bin)
	testenv.ReloadNginx(t, prefix)
	testenv.Eventually(t, nginxStartTimeout, func() error {
		e, err := fetchEcho(client, url, "new.test", "/", nil)
		if err == nil && e.Backend != "new" {
			err = fmt.Errorf("new.test reached backend %q", e.Backend)
		}
		return err
	})
	stopPolling()
	if err := <-failures; err != nil {
		t.Fatal(err)
	}
	if oldHits == 0 {
		t.Fatal("old.test was never asked during the reload")
	}
	t.Logf("old.test answered all %d requests during the reload", oldHits)
}

// nginxPrefix is a fresh nginx prefix (testenv.NginxPrefix) with the ACME
// token in its webroot.
func nginxPrefix(t *testing.T, build string) string {
	t.Helper()
	prefix := testenv.NginxPrefix(t, build)
	writeFile(t, filepath.Join(prefix, "webroot", ".well-known", "acme-challenge", acmeToken), acmeContent, 0o644)
	return prefix
}

// applyConfig renders cfg and writes it into the prefix's conf.d with the
// writer berth uses.
func applyConfig(t *testing.T, prefix string, cfg Config) Files {
	t.Helper()
	confd := filepath.Join(prefix, "conf.d")
	files := render(t, cfg)
	previous, err := ReadOwned(confd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(confd, previous, files); err != nil {
		t.Fatal(err)
	}
	return files
}

func render(t *testing.T, cfg Config) Files {
	t.Helper()
	files, errs := Render(cfg)
	if len(errs) > 0 {
		t.Fatalf("render: %v", errs)
	}
	return files
}
func nginxT(t *testing.T, prefix string, nginx ...string) {
	t.Helper()
	out, err := testenv.NginxT(prefix, nginx...)
	if err != nil {
		files, _ := ReadOwned(filepath.Join(prefix, "conf.d"))
		t.Fatalf("%v\n%s\nrendered files:\n%s", err, out, joinFiles(files))
	}
	if strings.Contains(out, "could not build") {
		t.Fatalf("nginx -t cannot size a hash as configured:\n%s", out)
	}
	if strings.Contains(out, "[warn]") {
		t.Logf("nginx -t passed with warnings:\n%s", out)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// startNginx runs nginx on the prefix until the test ends and waits until
// it serves the ACME token.
func startNginx(t *testing.T, bin, prefix, httpPort string) {
	t.Helper()
	nginxT(t, prefix, bin)
	client := newClient(nil)
	testenv.StartNginx(t, bin, prefix, func() error {
		status, body, err := fetch(client, "http://127.0.0.1:"+httpPort, "ready.test", acmePath, nil)
		if err == nil && (status != http.StatusOK || body != acmeContent) {
			err = fmt.Errorf("GET %s answered %d %q", acmePath, status, body)
		}
		return err
	})
}
