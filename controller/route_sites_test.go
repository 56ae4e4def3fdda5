package controller

import (
	"slices"
	"strings"
	"testing"

	"github.com/berthproxy/berth/nginxconf"
)

func TestTwoRoutesOfOneContainerGoToTwoPorts(t *testing.T) {
	c := svc("app", 2, map[string]string{"proxy.web.host": "app.test", "proxy.web.port": "8080",
		"proxy.admin.host": "admin.test", "proxy.admin.port": "9000"})
	cfg, wants, ps := Desired([]Container{c, testNginx}, Inputs{Nginx: testNginx})
	if len(ps) > 0 || len(wants) != 2 {
		t.Fatalf("problems %v wants %+v", ps, wants)
	}
	if b := site(t, cfg, "app.test").Locations[0].Backends; !slices.Equal(b, []string{"172.18.0.2:8080"}) {
		t.Fatalf("web backends %v", b)
	}
	if b := site(t, cfg, "admin.test").Locations[0].Backends; !slices.Equal(b, []string{"172.18.0.2:9000"}) {
		t.Fatalf("admin backends %v", b)
	}
}

func TestRouteOptionsReachTheSiteAndLocation(t *testing.T) {
	c := svc("app", 2, map[string]string{"proxy.host": "app.test", "proxy.path": "/api", "proxy.strip-path": "on",
		"proxy.scheme": "grpc", "proxy.max-body-size": "1m", "proxy.read-timeout": "5s", "proxy.allow": "10.0.0.1",
		"proxy.basic-auth": "u:" + shaHash, "proxy.https": "only", "proxy.hsts": "max-age=60"}, 80)
	cfg, _, ps := Desired([]Container{c, testNginx}, Inputs{Nginx: testNginx, Defaults: Defaults{ConnectTimeout: "2s"}})
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	s := site(t, cfg, "app.test")
	want := nginxconf.Location{Path: "/api", Backends: []string{"172.18.0.2:80"}, Scheme: "grpc", StripPath: true, MaxBodySize: "1m",
		ConnectTimeout: "2s", ReadTimeout: "5s", Allow: []string{"10.0.0.1"}, BasicAuth: []string{"u:" + shaHash}}
	if s.HTTPS != nginxconf.HTTPSOnly || s.HSTS != "max-age=60" || len(s.Locations) != 1 || !sameLocation(s.Locations[0], want) {
		t.Fatalf("got %+v\nwant location %+v", s, want)
	}
}

func sameLocation(a, b nginxconf.Location) bool {
	return a.Path == b.Path && slices.Equal(a.Backends, b.Backends) && a.Scheme == b.Scheme && a.StripPath == b.StripPath &&
		a.MaxBodySize == b.MaxBodySize && a.ConnectTimeout == b.ConnectTimeout && a.ReadTimeout == b.ReadTimeout &&
		a.SendTimeout == b.SendTimeout && slices.Equal(a.Allow, b.Allow) && slices.Equal(a.BasicAuth, b.BasicAuth) &&
		a.LocationSnippet == b.LocationSnippet
}

func TestRedirectFromHostsRedirectToTheFirstHostAndShareItsCertificate(t *testing.T) {
	c := svc("app", 2, map[string]string{"proxy.host": "example.com,b.example.com", "proxy.redirect-from": "www.example.com"}, 80)
	certs := map[string]nginxconf.TLS{"www.example.com": {CertFile: "/c", KeyFile: "/k"}}
	cfg, wants, ps := Desired([]Container{c, testNginx}, Inputs{Nginx: testNginx, Certs: certs})
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	r := site(t, cfg, "www.example.com")
	if r.RedirectTo != "example.com" || len(r.Locations) != 0 || r.TLS == nil || r.HSTS != DefaultHSTS {
		t.Fatalf("redirect site %+v", r)
	}
	if got := certRequests(wants); len(got) != 1 || !slices.Equal(got[0].Names, []string{"b.example.com", "example.com", "www.example.com"}) {
		t.Fatalf("certificate requests %v", got)
	}
}

func TestARedirectFromHostThatIsServedStaysServed(t *testing.T) {
	a := svc("a", 2, map[string]string{"proxy.host": "a.test", "proxy.redirect-from": "b.test"}, 80)
	b := svc("b", 3, map[string]string{"proxy.host": "b.test"}, 80)
	cfg, ps := desired(a, b)
	if s := site(t, cfg, "b.test"); s.RedirectTo != "" || len(s.Locations) != 1 {
		t.Fatalf("b.test %+v", s)
	}
	if len(ps) != 1 || !ps[0].Warning || ps[0].Label != LabelRedirectFrom || ps[0].Container != "a" {
		t.Fatalf("problems %v", ps)
	}
}

func TestReplicasDisagreeingOnSiteOptions(t *testing.T) {
	// Listed in reverse: the first by container name must win regardless.
	b := svc("b", 3, map[string]string{"proxy.host": "x.test", "proxy.hsts": "off", "proxy.https": "only", "proxy.max-body-size": "2m"}, 80)
	a := svc("a", 2, map[string]string{"proxy.host": "x.test", "proxy.hsts": "max-age=5", "proxy.https": "both", "proxy.max-body-size": "1m"}, 80)
	cfg, _ := desired(b, a)
	s := site(t, cfg, "x.test")
	if s.HTTPS != nginxconf.HTTPSOnly || s.HSTS != "max-age=5" || s.Locations[0].MaxBodySize != "1m" || len(s.Locations[0].Backends) != 2 {
		t.Fatalf("got %+v", s)
	}
}

func TestABackendReachableOnlyOverIPv6IsRoutedInBrackets(t *testing.T) {
	nginx := Container{ID: "n6", Name: "nginx", Running: true, Networks: map[string]string{"v6": ""}, IPv6: map[string]string{"v6": "fd00::1"}}
	c := Container{ID: "c", Name: "svc", Running: true, Labels: map[string]string{"proxy.host": "a.test"}, Exposed: []int{80},
		Networks: map[string]string{"v6": ""}, IPv6: map[string]string{"v6": "fd00::2"}}
	cfg, _, ps := Desired([]Container{c, nginx}, Inputs{Nginx: nginx})
	if len(ps) > 0 || !cfg.IPv6 {
		t.Fatalf("problems %v, IPv6 %v", ps, cfg.IPv6)
	}
	if b := site(t, cfg, "a.test").Locations[0].Backends; !slices.Equal(b, []string{"[fd00::2]:80"}) {
		t.Fatalf("backends %v", b)
	}
	if cfg, _ := desired(svc("v4", 2, map[string]string{"proxy.host": "a.test"}, 80)); cfg.IPv6 {
		t.Fatal("an IPv4-only nginx got IPv6 listeners")
	}
}

func TestIPv4IsPreferredWhenBothExist(t *testing.T) {
	nginx := Container{ID: "n", Name: "nginx", Running: true, Networks: map[string]string{"d": "172.20.0.1"}, IPv6: map[string]string{"d": "fd00::1"}}
	c := Container{ID: "c", Name: "svc", Running: true, Labels: map[string]string{"proxy.host": "a.test"}, Exposed: []int{80},
		Networks: map[string]string{"d": "172.20.0.2"}, IPv6: map[string]string{"d": "fd00::2"}}
	cfg, _, _ := Desired([]Container{c, nginx}, Inputs{Nginx: nginx})
	if b := site(t, cfg, "a.test").Locations[0].Backends; !slices.Equal(b, []string{"172.20.0.2:80"}) {
		t.Fatalf("backends %v", b)
	}
}

func TestABadBasicAuthIsOneProblemWithoutTheHash(t *testing.T) {
	c := svc("app", 2, map[string]string{"proxy.host": "a.test", "proxy.basic-auth": "alice:s3cret"}, 80)
	_, ps := desired(c, svc("ok", 3, map[string]string{"proxy.host": "ok.test"}, 80))
	if len(ps) != 1 || ps[0].Label != LabelBasicAuth || ps[0].Value != Redacted || strings.Contains(ps[0].String(), "s3cret") {
		t.Fatalf("problems %v", ps)
	}
}

func TestWildcardHostsGetSitesAndAskForNoCertificateOnlyWhenACMEIsOff(t *testing.T) {
	c := svc("app", 2, map[string]string{"proxy.host": "*.example.com,example.*"}, 80)
	cfg, wants, ps := Desired([]Container{c, testNginx}, Inputs{Nginx: testNginx})
	if len(ps) > 0 || !slices.Equal(hosts(cfg), []string{"*.example.com", "example.*"}) {
		t.Fatalf("problems %v hosts %v", ps, hosts(cfg))
	}
	if len(certRequests(wants)) != 1 {
		t.Fatal("the wildcard names are not handed to the certificate manager, which says why it cannot order them")
	}
	c.Labels["proxy.acme"] = "off"
	if _, wants, _ := Desired([]Container{c, testNginx}, Inputs{Nginx: testNginx}); len(certRequests(wants)) != 0 {
		t.Fatal("proxy.acme=off still wants a certificate")
	}
}
