package nginxconf

// Integration tests of berth as the edge proxy, through a real nginx on
// loopback: which client headers reach a backend, trusted proxies, a
// misdirected HTTPS request, a site whose containers are stopped, and
// names as long as DNS allows.

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthproxy/berth/internal/testenv"
)

// spoofed is what a client sends to fool a backend about who and where it is.
var spoofed = http.Header{
	"X-Forwarded-For": {"198.51.100.7"},
	"X-Real-Ip":       {"198.51.100.8"},
	"Forwarded":       {"for=198.51.100.9;proto=https"},
	"X-Forwarded-Ssl": {"on"},
	"Proxy":           {"http://198.51.100.10:3128"},
}

func TestNginxIsTheEdgeProxy(t *testing.T) {
	l := newLoopback(t)
	root := echoBackend(t, "root")
	secure, stopped := certFor(t, l.prefix, "secure.test"), certFor(t, l.prefix, "stopped.test")
	l.start(t, Config{Sites: []Site{
		{Host: "app.test", Locations: []Location{{Path: "/", Backends: []string{root}}}},
		{Host: "secure.test", TLS: secure.files, Locations: []Location{{Path: "/", Backends: []string{root}}}},
		// A labelled container that exists but is stopped: no backend anywhere.
		{Host: "stopped.test", TLS: stopped.files, Locations: []Location{{Path: "/"}, {Path: "/api"}}},
	}})
	plain := newClient(nil)

	t.Run("client forwarding headers never reach the backend", func(t *testing.T) {
		want := echo{Backend: "root", Host: "app.test", URI: "/", XFF: "127.0.0.1", Proto: "http",
			FwdHost: "app.test", FwdPort: l.httpPort, RealIP: "127.0.0.1"}
		if got := mustEcho(t, plain, l.httpURL(), "app.test", "/", spoofed); got != want {
			t.Errorf("with spoofed headers %v the backend saw %+v, want %+v", spoofed, got, want)
		}
		client := newClient(&tls.Config{ServerName: secure.host, RootCAs: secure.pool})
		want = echo{Backend: "root", Host: secure.host, URI: "/", XFF: "127.0.0.1", Proto: "https",
			FwdHost: secure.host, FwdPort: l.httpsPort, RealIP: "127.0.0.1"}
		if got := mustEcho(t, client, l.httpsURL(), secure.host, "/", spoofed); got != want {
			t.Errorf("over HTTPS with spoofed headers the backend saw %+v, want %+v", got, want)
		}
	})

	t.Run("known SNI with an unknown Host is misdirected", func(t *testing.T) {
		client := newClient(&tls.Config{ServerName: secure.host, RootCAs: secure.pool})
		for _, host := range []string{"other.test", "app.test"} { // app.test has no HTTPS server
			if status, body, _ := get(t, client, l.httpsURL(), host, "/", nil); status != http.StatusMisdirectedRequest {
				t.Errorf("SNI %s, Host %s: got %d %q, want 421", secure.host, host, status, body)
			}
		}
	})

	t.Run("a site without backends answers 503 on HTTP and HTTPS", func(t *testing.T) {
		for _, path := range []string{"/", "/api", "/api/x", "/other"} {
			if status, _, hdr := get(t, plain, l.httpURL(), stopped.host, path, nil); status != http.StatusServiceUnavailable {
				t.Errorf("GET http://%s%s: got %d (Location %q), want 503", stopped.host, path, status, hdr.Get("Location"))
			}
		}
		if status, body, _ := get(t, plain, l.httpURL(), stopped.host, acmePath, nil); status != http.StatusOK || body != acmeContent {
			t.Errorf("GET http://%s%s: got %d %q, want 200 %q", stopped.host, acmePath, status, body, acmeContent)
		}
		client := newClient(&tls.Config{ServerName: stopped.host, RootCAs: stopped.pool})
		if status, body, _ := get(t, client, l.httpsURL(), stopped.host, "/api/x", nil); status != http.StatusServiceUnavailable {
			t.Errorf("GET https://%s/api/x with its certificate: got %d %q, want 503", stopped.host, status, body)
		}
	})
}

func TestNginxHonoursTrustedProxies(t *testing.T) {
	l := newLoopback(t)
	root := echoBackend(t, "root")
	// The test client is on loopback, so it plays the load balancer.
	l.start(t, Config{TrustedProxies: []string{"127.0.0.1/32"}, Sites: []Site{
		{Host: "app.test", Locations: []Location{{Path: "/", Backends: []string{root}}}},
	}})
	plain := newClient(nil)
	for _, c := range []struct{ xff, want string }{
		{"203.0.113.7", "203.0.113.7"},
		// Recursive: trusted hops on the right are skipped, and whatever a
		// client put on the left before the balancer's entry is not taken.
		{"198.51.100.1, 203.0.113.7, 127.0.0.1", "203.0.113.7"},
		{"", "127.0.0.1"},
	} {
		header := http.Header{"Forwarded": {"for=198.51.100.9"}, "Proxy": {"http://198.51.100.10:3128"}}
		if c.xff != "" {
			header.Set("X-Forwarded-For", c.xff)
		}
		got := mustEcho(t, plain, l.httpURL(), "app.test", "/", header)
		if got.XFF != c.want || got.RealIP != c.want || got.Forwarded != "" || got.Proxy != "" {
			t.Errorf("from trusted 127.0.0.1 with X-Forwarded-For %q the backend saw X-Forwarded-For %q, X-Real-IP %q, Forwarded %q, Proxy %q; want %q, %q and none",
				c.xff, got.XFF, got.RealIP, got.Forwarded, got.Proxy, c.want, c.want)
		}
	}
}

func TestNginxServesLongNames(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 1,000 sites through a real nginx")
	}
	l := newLoopback(t)
	long, longest := echoBackend(t, "label63"), echoBackend(t, "host253")
	many := echoBackend(t, "many")
	cert := certFor(t, l.prefix, host253)
	sites := append(manySites(1000, 60, many),
		Site{Host: label63 + ".test", Locations: []Location{{Path: "/", Backends: []string{long}}}},
		Site{Host: host253, HTTPS: HTTPSBoth, TLS: cert.files, Locations: []Location{{Path: "/", Backends: []string{longest}}}},
	)
	l.start(t, Config{Sites: sites})
	plain := newClient(nil)
	for _, c := range []struct{ host, backend string }{
		{label63 + ".test", "label63"},
		{host253, "host253"},
		{sites[0].Host, "many"},
		{sites[999].Host, "many"},
	} {
		if e := mustEcho(t, plain, l.httpURL(), c.host, "/x", nil); e.Backend != c.backend || e.Host != c.host {
			t.Errorf("Host %s (%d characters): reached %q with Host %q, want %q", c.host, len(c.host), e.Backend, e.Host, c.backend)
		}
	}
	client := newClient(&tls.Config{ServerName: host253, RootCAs: cert.pool})
	if e := mustEcho(t, client, l.httpsURL(), host253, "/x", nil); e.Backend != "host253" || e.Proto != "https" {
		t.Errorf("over HTTPS, SNI and Host of 253 characters: reached %q over %q, want host253 over https", e.Backend, e.Proto)
	}
}

// TestNginxHashModelMatchesNginx checks the model of ngx_hash_init that
// TestHashSizesLetNginxBuildItsHash relies on against a real nginx: on
// random sets of names it must predict exactly when nginx's default sizes
// fail ("could not build optimal server_names_hash").
func TestNginxHashModelMatchesNginx(t *testing.T) {
	bin := testenv.RequireNginx(t)
	build := testenv.NginxBuild(t, bin, "-V")
	rng := rand.New(rand.NewPCG(3, 4))
	var fits, fails int
	for i := range 12 {
		names := []string{"_"}
		var conf strings.Builder
		conf.WriteString("server {\n    listen 127.0.0.1:9 default_server;\n    server_name _;\n    return 503;\n}\n")
		for range 71 { // 72 names of 40 characters: nginx's defaults fit them only sometimes
			b := make([]byte, 40)
			for j := range b {
				b[j] = byte('a' + rng.IntN(26))
			}
			names = append(names, string(b))
			fmt.Fprintf(&conf, "server {\n    listen 127.0.0.1:9;\n    server_name %s;\n    return 200;\n}\n", b)
		}
		prefix := testenv.NginxPrefix(t, build)
		writeFile(t, filepath.Join(prefix, "conf.d", "names.conf"), conf.String(), 0o644)
		out, err := testenv.NginxT(prefix, bin)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		nginxFails := strings.Contains(out, "could not build optimal server_names_hash")
		if modelFails := nginxHashInit(names, defaultHashBucketSize, defaultHashMaxSize) != ""; modelFails != nginxFails {
			t.Errorf("set %d: the model says fails=%v, nginx says fails=%v:\n%s", i, modelFails, nginxFails, out)
		}
		if nginxFails {
			fails++
		} else {
			fits++
		}
	}
	t.Logf("nginx's defaults fit %d of the sets and failed %d; the model agreed on each", fits, fails)
}
