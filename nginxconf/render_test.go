package nginxconf

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the renderer's output")

// goldenCases are rendered and compared with testdata/<name>.golden. The
// integration tests also run each through a real nginx -t.
var goldenCases = []configCase{
	{"empty", Config{Webroot: "/var/www/acme"}, false},
	{"one-site", Config{Webroot: "/var/www/acme", Sites: []Site{
		{Host: "app.example.com", Locations: []Location{{Path: "/", Backends: []string{"172.18.0.5:80"}}}},
	}}, false},
	{"balanced-paths", Config{Webroot: "/var/www/acme", Sites: []Site{
		{Host: "shop.example.com", Locations: []Location{
			{Path: "/api", Backends: []string{"172.18.0.7:8080", "172.18.0.6:8080"}},
			{Path: "/", Backends: []string{"172.18.0.5:3000"}},
		}},
	}}, false},
	{"unreachable", Config{Webroot: "/var/www/acme", Sites: []Site{
		{Host: "down.example.com", Locations: []Location{{Path: "/"}}},
	}}, false},
	{"tls-redirect", Config{Webroot: "/var/www/acme", Sites: []Site{
		{Host: "secure.example.com", TLS: &TLS{CertFile: "/etc/nginx/certs/secure.example.com/fullchain.pem", KeyFile: "/etc/nginx/certs/secure.example.com/privkey.pem"},
			Locations: []Location{{Path: "/", Backends: []string{"172.18.0.9:80"}}}},
	}}, false},
	{"tls-both", Config{Webroot: "/var/www/acme", Sites: []Site{
		{Host: "both.example.com", HTTPS: HTTPSBoth, TLS: &TLS{CertFile: "/etc/nginx/certs/both.example.com/fullchain.pem", KeyFile: "/etc/nginx/certs/both.example.com/privkey.pem"},
			Locations: []Location{{Path: "/", Backends: []string{"172.18.0.9:80"}}}},
	}}, false},
	{"tls-http2-listen", Config{Webroot: "/var/www/acme", HTTP2: HTTP2Listen, Sites: []Site{
		{Host: "h2.example.com", TLS: &TLS{CertFile: "/etc/nginx/certs/h2.example.com/fullchain.pem", KeyFile: "/etc/nginx/certs/h2.example.com/privkey.pem"},
			Locations: []Location{{Path: "/", Backends: []string{"172.18.0.9:80"}}}},
	}}, false},
	{"tls-http2-directive", Config{Webroot: "/var/www/acme", HTTP2: HTTP2Directive, Sites: []Site{
		{Host: "h2.example.com", TLS: &TLS{CertFile: "/etc/nginx/certs/h2.example.com/fullchain.pem", KeyFile: "/etc/nginx/certs/h2.example.com/privkey.pem"},
			Locations: []Location{{Path: "/", Backends: []string{"172.18.0.9:80"}}}},
	}}, true},
	{"punycode", Config{Webroot: "/var/www/acme", Sites: []Site{
		{Host: "xn--bcher-kva.example", Locations: []Location{{Path: "/", Backends: []string{"172.18.0.10:80"}}}},
	}}, false},
	{"long-names", Config{Webroot: "/var/www/acme", Sites: []Site{
		{Host: label63 + ".example.com", Locations: []Location{{Path: "/", Backends: []string{"172.18.0.11:80"}}}},
		{Host: host253, Locations: []Location{{Path: "/", Backends: []string{"172.18.0.12:80"}}}},
	}}, false},
	{"trusted-proxies", Config{Webroot: "/var/www/acme",
		TrustedProxies: []string{"2001:db8::/32", "192.0.2.10", "172.16.5.4/12", "10.0.0.0/8", "192.0.2.10", "2001:db8::1"},
		Sites: []Site{
			{Host: "app.example.com", Locations: []Location{{Path: "/", Backends: []string{"172.18.0.5:80"}}}},
		}}, false},
	{"stopped", Config{Webroot: "/var/www/acme", Sites: []Site{
		{Host: "stopped.example.com", TLS: &TLS{CertFile: "/etc/nginx/certs/stopped.example.com/fullchain.pem", KeyFile: "/etc/nginx/certs/stopped.example.com/privkey.pem"},
			Locations: []Location{{Path: "/api"}, {Path: "/"}}},
	}}, false},
	// Every per-service option at once, on a site with a certificate.
	{"options", Config{Webroot: "/var/www/acme", Sites: []Site{
		{Host: "opts.example.com", HSTS: "max-age=63072000; includeSubDomains; preload",
			TLS:           &TLS{CertFile: "/etc/nginx/certs/opts.example.com/fullchain.pem", KeyFile: "/etc/nginx/certs/opts.example.com/privkey.pem"},
			ServerSnippet: "add_header X-Server-Snippet on;",
			Locations: []Location{
				{Path: "/", Backends: []string{"172.18.0.5:80"}, MaxBodySize: "10m", ConnectTimeout: "5s", ReadTimeout: "10m", SendTimeout: "30s",
					BasicAuth: []string{"alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="}, Allow: []string{"10.0.0.0/8", "2001:db8::/32"},
					LocationSnippet: "add_header X-Location-Snippet on;"},
				{Path: "/api", Backends: []string{"172.18.0.6:8443"}, StripPath: true, Scheme: SchemeHTTPS},
				{Path: "/rpc", Backends: []string{"172.18.0.7:50051"}, Scheme: SchemeGRPC},
			}},
	}}, false},
	{"redirect-only-wildcard-ipv6", Config{Webroot: "/var/www/acme", IPv6: true, Sites: []Site{
		{Host: "www.example.com", RedirectTo: "example.com"},
		{Host: "example.com", HTTPS: HTTPSOnly, TLS: &TLS{CertFile: "/etc/nginx/certs/example.com/fullchain.pem", KeyFile: "/etc/nginx/certs/example.com/privkey.pem"},
			Locations: []Location{{Path: "/", Backends: []string{"[fd12:3456:789a::5]:80"}}}},
		{Host: "*.example.org", Locations: []Location{{Path: "/", Backends: []string{"172.18.0.8:80"}}}},
		{Host: "example.*", Locations: []Location{{Path: "/", Backends: []string{"172.18.0.9:80"}}}},
	}}, false},
	// Upstreams nginx re-resolves (1.27.3+), next to one of addresses, on
	// a TLS site and on the longest host (its zone has the longest name).
	{"resolve", Config{Webroot: "/var/www/acme", HTTP2: HTTP2Directive, Resolver: "127.0.0.11", Sites: []Site{
		{Host: "web.example.com", TLS: &TLS{CertFile: "/etc/nginx/certs/web.example.com/fullchain.pem", KeyFile: "/etc/nginx/certs/web.example.com/privkey.pem"},
			Locations: []Location{
				{Path: "/", Backends: []string{"web:8080"}, Resolve: true},
				{Path: "/static", Backends: []string{"172.18.0.5:80"}},
				{Path: "/down", Resolve: true},
			}},
		{Host: host253, Locations: []Location{{Path: "/", Backends: []string{"api-1.internal:80"}, Resolve: true}}},
	}}, true},
}

// configCase is a config that must pass nginx -t on every nginx berth
// supports.
type configCase struct {
	name string
	cfg  Config
	// newOnly marks configs only newer nginx accepts ("http2 on" from
	// 1.25.1, "server ... resolve" from 1.27.3); the controller never
	// renders them for the oldest, 1.22.
	newOnly bool
}

// label63 is the longest DNS label; host253 the longest DNS name.
var (
	label63 = strings.Repeat("l", 63)
	host253 = strings.Join([]string{strings.Repeat("a", 63), strings.Repeat("b", 63), strings.Repeat("c", 63), strings.Repeat("d", 56) + ".test"}, ".")
)

// manySites is n sites whose hosts are all nameLen characters long.
func manySites(n, nameLen int, backend string) []Site {
	sites := make([]Site, n)
	for i := range sites {
		suffix := fmt.Sprintf("-%04d.test", i)
		sites[i] = Site{Host: strings.Repeat("s", nameLen-len(suffix)) + suffix,
			Locations: []Location{{Path: "/", Backends: []string{backend}}}}
	}
	return sites
}

// joinFiles lays files out in name order with a header line each, so one
// golden file shows everything a case renders.
func joinFiles(files Files) []byte {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	var b bytes.Buffer
	for _, n := range names {
		b.WriteString("# ==> " + n + " <==\n")
		b.Write(files[n])
	}
	return b.Bytes()
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			files, errs := Render(tc.cfg)
			if len(errs) > 0 {
				t.Fatalf("render errors: %v", errs)
			}
			got := joinFiles(files)
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./nginxconf -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (run with -update and review the diff):\n%s", path, got)
			}
		})
	}
}

func TestRenderIsDeterministicWhateverTheInputOrder(t *testing.T) {
	a := Config{Webroot: "/w", Sites: []Site{
		{Host: "b.test", Locations: []Location{{Path: "/x", Backends: []string{"10.0.0.2:80", "10.0.0.1:80"}}, {Path: "/", Backends: []string{"10.0.0.3:80"}}}},
		{Host: "a.test", Locations: []Location{{Path: "/", Backends: []string{"10.0.0.4:80"}}}},
	}}
	b := Config{Webroot: "/w", Sites: []Site{
		{Host: "a.test", Locations: []Location{{Path: "/", Backends: []string{"10.0.0.4:80"}}}},
		{Host: "b.test", Locations: []Location{{Path: "/", Backends: []string{"10.0.0.3:80"}}, {Path: "/x", Backends: []string{"10.0.0.1:80", "10.0.0.2:80"}}}},
	}}
	fa, _ := Render(a)
	fb, _ := Render(b)
	if !bytes.Equal(joinFiles(fa), joinFiles(fb)) {
		t.Fatal("same sites in another order rendered different bytes")
	}
}

func TestRenderDropsOnlyTheUnsafeSite(t *testing.T) {
	good := Site{Host: "good.test", Locations: []Location{{Path: "/", Backends: []string{"10.0.0.1:80"}}}}
	bad := []Site{
		{Host: "evil.test; include /etc/passwd", Locations: []Location{{Path: "/"}}},
		{Host: "path.test", Locations: []Location{{Path: "/a { return 200; }", Backends: []string{"10.0.0.1:80"}}}},
		{Host: "backend.test", Locations: []Location{{Path: "/", Backends: []string{"10.0.0.1:80;\n"}}}},
		{Host: "cert.test", TLS: &TLS{CertFile: "/c/$host.pem", KeyFile: "/k.pem"}, Locations: []Location{{Path: "/"}}},
		{Host: "mode.test", HTTPS: "sometimes", Locations: []Location{{Path: "/"}}},
		{Host: "empty.test"},
	}
	for _, b := range bad {
		files, errs := Render(Config{Webroot: "/w", Sites: []Site{good, b}})
		if len(errs) != 1 {
			t.Errorf("site %q: want exactly one error, got %v", b.Host, errs)
		}
		if _, ok := files["berth-good.test.conf"]; !ok {
			t.Errorf("site %q took good.test down with it", b.Host)
		}
		if len(files) != 3 {
			t.Errorf("site %q: want the shared files + good file, got %d files", b.Host, len(files))
		}
	}
}

func TestRenderRejectsUnsafeWebroot(t *testing.T) {
	for _, w := range []string{"", "relative", "/var/www acme", "/w;"} {
		if _, errs := Render(Config{Webroot: w}); len(errs) == 0 {
			t.Errorf("webroot %q accepted", w)
		}
	}
}

func TestUnreachableLocationAnswers503WithoutAnUpstream(t *testing.T) {
	files, _ := Render(Config{Webroot: "/w", Sites: []Site{{Host: "d.test", Locations: []Location{{Path: "/"}}}}})
	f := string(files["berth-d.test.conf"])
	if strings.Contains(f, "upstream") || !strings.Contains(f, "return 503;") {
		t.Fatalf("want a 503 location and no upstream block:\n%s", f)
	}
}

// Sites already in order are rendered without a copy, others from a
// sorted copy: both give the same bytes and errors (repeated hosts and
// paths included), and the caller's sites are never changed.
func TestRenderGivesTheSameWhetherOrNotSitesComeSorted(t *testing.T) {
	site := func(host string, paths ...string) Site {
		s := Site{Host: host}
		for _, p := range paths {
			s.Locations = append(s.Locations, Location{Path: p, Backends: []string{"10.0.0.9:80", "10.0.0.1:" + strconv.Itoa(len(p))}})
		}
		return s
	}
	cases := []struct {
		name             string
		sorted, shuffled []Site
		errs             int
	}{
		{"distinct", []Site{site("a.test", "/", "/x"), site("b.test", "/")}, []Site{site("b.test", "/"), site("a.test", "/x", "/")}, 0},
		{"repeated", []Site{site("a.test", "/"), site("b.test", "/"), site("b.test", "/y"), site("c.test", "/z", "/z")},
			[]Site{site("c.test", "/z", "/z"), site("b.test", "/"), site("a.test", "/"), site("b.test", "/y")}, 2},
	}
	for _, tc := range cases {
		for _, s := range tc.sorted {
			for _, l := range s.Locations {
				slices.Sort(l.Backends)
			}
		}
		if got := sortedSites(tc.sorted); tc.errs == 0 && &got[0] != &tc.sorted[0] {
			t.Errorf("%s: sites already in order were copied", tc.name)
		}
		keep := fmt.Sprint(tc.shuffled)
		fs, es := Render(Config{Webroot: "/w", Sites: tc.sorted})
		fu, eu := Render(Config{Webroot: "/w", Sites: tc.shuffled})
		if !bytes.Equal(joinFiles(fs), joinFiles(fu)) || fmt.Sprint(es) != fmt.Sprint(eu) || len(es) != tc.errs {
			t.Errorf("%s: sorted input: %v\nshuffled input: %v\n%s\n%s", tc.name, es, eu, joinFiles(fs), joinFiles(fu))
		}
		if fmt.Sprint(tc.shuffled) != keep {
			t.Errorf("%s: Render changed its input: %v", tc.name, tc.shuffled)
		}
	}
}
