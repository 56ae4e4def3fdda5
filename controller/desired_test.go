package controller

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/berthproxy/berth/nginxconf"
)

var testNginx = Container{ID: "nginx", Name: "nginx", Running: true, Labels: map[string]string{"proxy.nginx": "true"},
	Networks: map[string]string{"front": "172.18.0.1", "other": "172.19.0.1"}}

// svc builds a running container on the "front" network at 172.18.0.<n>.
func svc(name string, n int, labels map[string]string, exposed ...int) Container {
	return Container{ID: "id-" + name, Name: name, Running: true, Labels: labels, Exposed: exposed,
		Networks: map[string]string{"front": fmt.Sprintf("172.18.0.%d", n)}}
}

func site(t *testing.T, cfg nginxconf.Config, host string) nginxconf.Site {
	t.Helper()
	for _, s := range cfg.Sites {
		if s.Host == host {
			return s
		}
	}
	t.Fatalf("no site %s in %+v", host, cfg.Sites)
	return nginxconf.Site{}
}

func desired(cs ...Container) (nginxconf.Config, []Problem) {
	cfg, _, ps := Desired(append(cs, testNginx), Inputs{Nginx: testNginx, Webroot: "/var/www/acme"})
	return cfg, ps
}

func TestPortRule(t *testing.T) {
	cases := []struct {
		name    string
		label   string
		exposed []int
		want    string // backend, or "" for skipped
	}{
		{"the label wins over exposed ports", "9090", []int{8080, 9090}, "172.18.0.2:9090"},
		{"the only exposed port is used", "", []int{8080}, "172.18.0.2:8080"},
		{"80 is used when several are exposed", "", []int{80, 443}, "172.18.0.2:80"},
		{"several exposed ports without 80 are an error", "", []int{8080, 9090}, ""},
		{"no exposed port and no label is an error", "", nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			labels := map[string]string{"proxy.host": "a.test"}
			if tc.label != "" {
				labels["proxy.port"] = tc.label
			}
			cfg, ps := desired(svc("a", 2, labels, tc.exposed...))
			if tc.want == "" {
				if len(cfg.Sites) != 0 || len(ps) != 1 || ps[0].Label != LabelPort || ps[0].Container != "a" {
					t.Fatalf("want no site and one proxy.port problem, got %+v %v", cfg.Sites, ps)
				}
				return
			}
			if got := site(t, cfg, "a.test").Locations[0].Backends; !slices.Equal(got, []string{tc.want}) {
				t.Fatalf("backends %v, want %s", got, tc.want)
			}
		})
	}
}

func TestReplicasWithTheSameHostAndPathAreBalanced(t *testing.T) {
	l := map[string]string{"proxy.host": "a.test"}
	cfg, _ := desired(svc("a1", 2, l, 80), svc("a2", 3, l, 80))
	if got := site(t, cfg, "a.test").Locations[0].Backends; !slices.Equal(got, []string{"172.18.0.2:80", "172.18.0.3:80"}) {
		t.Fatalf("backends %v", got)
	}
}

func TestUnhealthyAndStartingReplicasGetNoTrafficWhileAHealthyOneExists(t *testing.T) {
	l := map[string]string{"proxy.host": "a.test"}
	ok, sick, starting := svc("ok", 2, l, 80), svc("sick", 3, l, 80), svc("new", 4, l, 80)
	ok.Health, sick.Health, starting.Health = HealthHealthy, HealthUnhealthy, HealthStarting
	cfg, _ := desired(ok, sick, starting)
	if got := site(t, cfg, "a.test").Locations[0].Backends; !slices.Equal(got, []string{"172.18.0.2:80"}) {
		t.Fatalf("backends %v, want the healthy one only", got)
	}
	cfg, _ = desired(sick, starting)
	if got := site(t, cfg, "a.test").Locations[0].Backends; len(got) != 2 {
		t.Fatalf("with no healthy replica the others should still get traffic, got %v", got)
	}
}

func TestPathsOfOneHostFromSeveralContainers(t *testing.T) {
	cfg, _ := desired(svc("web", 2, map[string]string{"proxy.host": "a.test"}, 80),
		svc("api", 3, map[string]string{"proxy.host": "a.test", "proxy.path": "/api"}, 8080))
	locs := site(t, cfg, "a.test").Locations
	if len(locs) != 2 || locs[0].Path != "/" || locs[1].Path != "/api" || locs[1].Backends[0] != "172.18.0.3:8080" {
		t.Fatalf("locations %+v", locs)
	}
}

func TestOneContainerWithTwoHostsServesBoth(t *testing.T) {
	cfg, _ := desired(svc("a", 2, map[string]string{"proxy.host": "a.test,b.test"}, 80))
	site(t, cfg, "a.test")
	site(t, cfg, "b.test")
}

func TestUnreachableContainerIsSkippedNamingBothSidesNetworks(t *testing.T) {
	c := svc("lonely", 2, map[string]string{"proxy.host": "a.test"}, 80)
	c.Networks = map[string]string{"backnet": "10.9.0.2"}
	cfg, ps := desired(c, svc("b", 3, map[string]string{"proxy.host": "b.test"}, 80))
	if len(cfg.Sites) != 1 || cfg.Sites[0].Host != "b.test" {
		t.Fatalf("sites %+v", cfg.Sites)
	}
	if len(ps) != 1 || !strings.Contains(ps[0].Reason, "backnet") || !strings.Contains(ps[0].Reason, "front, other") {
		t.Fatalf("problem should name both sides' networks: %v", ps)
	}
}

func TestNetworkLabelPicksTheAddress(t *testing.T) {
	c := svc("a", 2, map[string]string{"proxy.host": "a.test", "proxy.network": "other"}, 80)
	c.Networks["other"] = "172.19.0.7"
	cfg, _ := desired(c)
	if got := site(t, cfg, "a.test").Locations[0].Backends[0]; got != "172.19.0.7:80" {
		t.Fatalf("backend %s, want the address on 'other'", got)
	}
	c.Labels["proxy.network"] = "missing"
	cfg, ps := desired(c)
	if len(cfg.Sites) != 0 || len(ps) != 1 || ps[0].Label != LabelNetwork {
		t.Fatalf("sites %+v problems %v", cfg.Sites, ps)
	}
}

func TestABadContainerDoesNotAffectOthers(t *testing.T) {
	cfg, ps := desired(svc("bad", 2, map[string]string{"proxy.host": "bad_host!"}, 80),
		svc("good", 3, map[string]string{"proxy.host": "good.test"}, 80))
	if len(cfg.Sites) != 1 || cfg.Sites[0].Host != "good.test" {
		t.Fatalf("sites %+v", cfg.Sites)
	}
	if len(ps) != 1 || ps[0].Container != "bad" || ps[0].Label != LabelHost || ps[0].Value != "bad_host!" {
		t.Fatalf("problems %v", ps)
	}
}

func TestAStoppedContainerKeepsItsHostWithoutABackendAndNginxIsNeverRouted(t *testing.T) {
	stopped := svc("s", 2, map[string]string{"proxy.host": "a.test"}, 80)
	stopped.Running, stopped.State, stopped.Networks = false, "exited", map[string]string{"front": ""}
	elsewhere := svc("x", 4, map[string]string{"proxy.host": "x.test"}, 80)
	elsewhere.Running, elsewhere.Networks = false, map[string]string{"unrelated": ""}
	replica := stopped
	replica.ID, replica.Name, replica.Labels = "id-r", "r", map[string]string{"proxy.host": "b.test"}
	running := svc("b", 3, map[string]string{"proxy.host": "b.test"}, 80)
	n := testNginx
	n.Labels = map[string]string{"proxy.host": "nginx.test", "proxy.nginx": "true"}
	cfg, wants, ps := Desired([]Container{stopped, elsewhere, replica, running, n}, Inputs{Nginx: n, Webroot: "/w"})
	if got := hosts(cfg); !slices.Equal(got, []string{"a.test", "b.test"}) {
		t.Fatalf("sites %v, want a.test (stopped: kept) and b.test; never nginx.test or x.test (not on nginx's networks)", got)
	}
	if l := site(t, cfg, "a.test").Locations; len(l) != 1 || len(l[0].Backends) != 0 {
		t.Fatalf("a.test locations %+v, want / with no backend (nginx answers 503)", l)
	}
	if l := site(t, cfg, "b.test").Locations; len(l) != 1 || !slices.Equal(l[0].Backends, []string{"172.18.0.3:80"}) {
		t.Fatalf("b.test locations %+v, want only the running replica", l)
	}
	if len(certRequests(wants)) != 3 {
		t.Fatalf("cert requests %v: a stopped container keeps wanting its certificate", certRequests(wants))
	}
	if len(ps) != 1 || ps[0].Container != "x" || !strings.Contains(ps[0].Reason, "shares no network with nginx") {
		t.Fatalf("problems %v, want one for x naming the networks", ps)
	}
}

func hosts(cfg nginxconf.Config) []string {
	var out []string
	for _, s := range cfg.Sites {
		out = append(out, s.Host)
	}
	slices.Sort(out)
	return out
}

func TestStrictestHTTPSModeWinsAndCertsAttach(t *testing.T) {
	a := svc("a", 2, map[string]string{"proxy.host": "a.test", "proxy.https": "off"}, 80)
	b := svc("b", 3, map[string]string{"proxy.host": "a.test"}, 80)
	certs := map[string]nginxconf.TLS{"a.test": {CertFile: "/c/a.pem", KeyFile: "/c/a.key"}}
	cfg, _, _ := Desired([]Container{a, b}, Inputs{Nginx: testNginx, Webroot: "/w", Certs: certs})
	s := site(t, cfg, "a.test")
	if s.HTTPS != nginxconf.HTTPSRedirect || s.TLS == nil || s.TLS.CertFile != "/c/a.pem" {
		t.Fatalf("site %+v", s)
	}
}

func TestHealthFromStatus(t *testing.T) {
	for status, want := range map[string]string{
		"Up 3 seconds (health: starting)": HealthStarting, "Up 1 minute (healthy)": HealthHealthy,
		"Up 2 hours (unhealthy)": HealthUnhealthy, "Up 5 seconds": "",
	} {
		if got := healthFromStatus(status); got != want {
			t.Errorf("healthFromStatus(%q) = %q, want %q", status, got, want)
		}
	}
}

// BenchmarkDesiredAndRender1000 measures one pass's pure work for 1,000
// labelled containers (500 hosts, two replicas each, some with paths).
func BenchmarkDesiredAndRender1000(b *testing.B) {
	cs := make([]Container, 0, 1001)
	for i := range 1000 {
		labels := map[string]string{"proxy.host": fmt.Sprintf("svc%d.example.com", i/2)}
		if i%10 == 0 {
			labels["proxy.path"] = "/api"
		}
		c := svc(fmt.Sprintf("c%d", i), 0, labels, 8080)
		c.Networks["front"] = fmt.Sprintf("172.18.%d.%d", i/250, i%250+2)
		cs = append(cs, c)
	}
	cs = append(cs, testNginx)
	b.ReportAllocs()
	for b.Loop() {
		cfg, _, _ := Desired(cs, Inputs{Nginx: testNginx, Webroot: "/var/www/acme"})
		files, errs := nginxconf.Render(cfg)
		if len(errs) > 0 || len(files) != 502 { // 500 sites, the default file, the error pages
			b.Fatalf("files %d errs %v", len(files), errs)
		}
	}
}

func TestHTTP2ModeFollowsTheNginxBuild(t *testing.T) {
	const mod = " configure arguments: --with-http_ssl_module --with-http_v2_module"
	for out, want := range map[string]string{
		"nginx version: nginx/1.22.1\n" + mod:                                       nginxconf.HTTP2Listen,
		"nginx version: nginx/1.25.0\n" + mod:                                       nginxconf.HTTP2Listen,
		"nginx version: nginx/1.25.1\n" + mod:                                       nginxconf.HTTP2Directive,
		"nginx version: nginx/1.30.6\n" + mod:                                       nginxconf.HTTP2Directive,
		"nginx version: nginx/1.30.6\n configure arguments: --with-http_ssl_module": nginxconf.HTTP2Off,
		"sh: nginx: not found":                                                      nginxconf.HTTP2Off,
	} {
		if got := HTTP2Mode(out); got != want {
			t.Errorf("HTTP2Mode(%q) = %q, want %q", out, got, want)
		}
	}
}

func TestAContainerNeverStartedHasNoHost(t *testing.T) {
	created := svc("c", 2, map[string]string{"proxy.host": "new.test"}, 80)
	created.Running, created.State, created.Networks = false, StateCreated, map[string]string{"front": ""}
	cfg, wants, ps := Desired([]Container{created, testNginx}, Inputs{Nginx: testNginx, Webroot: "/w"})
	if len(cfg.Sites) != 0 || len(wants) != 0 || len(ps) != 0 {
		t.Fatalf("a created, never started container got sites %v, wants %v, problems %v; want none", hosts(cfg), wants, ps)
	}
}
