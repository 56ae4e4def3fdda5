package controller

import (
	"slices"
	"strings"
	"testing"

	"github.com/berthproxy/berth/nginxconf"
)

func TestCertificateLabelsAreReadWithTheirDefaults(t *testing.T) {
	cases := []struct {
		name     string
		labels   map[string]string
		defaults Defaults
		want     CertOptions
	}{
		{"no label: HTTP-01, the default profile, one certificate",
			map[string]string{"proxy.host": "a.test"}, Defaults{},
			CertOptions{Challenge: ChallengeHTTP01}},
		{"BERTH_ACME_CHALLENGE gives the default challenge",
			map[string]string{"proxy.host": "a.test"}, Defaults{ACMEChallenge: ChallengeDNS01},
			CertOptions{Challenge: ChallengeDNS01}},
		{"the label wins over BERTH_ACME_CHALLENGE",
			map[string]string{"proxy.host": "a.test", "proxy.acme-challenge": "HTTP-01"}, Defaults{ACMEChallenge: ChallengeDNS01},
			CertOptions{Challenge: ChallengeHTTP01}},
		{"challenge, profile and cert-per-host are read",
			map[string]string{"proxy.host": "a.test", "proxy.acme-challenge": "dns-01", "proxy.acme-profile": "shortlived", "proxy.cert-per-host": "on"}, Defaults{},
			CertOptions{Challenge: ChallengeDNS01, Profile: "shortlived", PerHost: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			routes, _, errs, warns := ParseRoutes(tc.labels, tc.defaults)
			if len(errs) > 0 || len(warns) > 0 || len(routes) != 1 {
				t.Fatalf("errs=%v warns=%v routes=%+v", errs, warns, routes)
			}
			if routes[0].Cert != tc.want {
				t.Fatalf("certificate options %+v, want %+v", routes[0].Cert, tc.want)
			}
		})
	}
}

func TestNamedRoutesTakeTheirOwnCertificateChoicesAndInheritTheOthers(t *testing.T) {
	routes, _, errs, _ := ParseRoutes(map[string]string{
		"proxy.host": "a.test", "proxy.acme-profile": "classic",
		"proxy.internal.host": "internal.test", "proxy.internal.acme-challenge": "dns-01",
	}, Defaults{})
	if len(errs) > 0 || len(routes) != 2 {
		t.Fatalf("errs=%v routes=%+v", errs, routes)
	}
	if got, want := routes[1].Cert, (CertOptions{Challenge: ChallengeDNS01, Profile: "classic"}); got != want {
		t.Fatalf("route internal: %+v, want %+v", got, want)
	}
	if got := routes[0].Cert.Challenge; got != ChallengeHTTP01 {
		t.Fatalf("the default route took the named route's challenge: %s", got)
	}
	_, _, errs, _ = ParseRoutes(map[string]string{"proxy.web.host": "a.test", "proxy.web.acme-challenge": "dns"}, Defaults{})
	if len(errs) != 1 || errs[0].Label != "proxy.web.acme-challenge" {
		t.Fatalf("errs %v, want one naming proxy.web.acme-challenge", errs)
	}
}

func TestABadCertificateLabelSkipsOnlyItsContainer(t *testing.T) {
	bad := svc("bad", 2, map[string]string{"proxy.host": "bad.test", "proxy.acme-challenge": "dns"}, 80)
	good := svc("good", 3, map[string]string{"proxy.host": "good.test", "proxy.acme-challenge": "dns-01"}, 80)
	cfg, ps := desired(bad, good)
	if !slices.Equal(hosts(cfg), []string{"good.test"}) {
		t.Fatalf("sites %v, want good.test only", hosts(cfg))
	}
	if len(ps) != 1 || ps[0].Container != "bad" || ps[0].Label != "proxy.acme-challenge" || !strings.Contains(ps[0].Reason, "not routed") {
		t.Fatalf("problems %v, want one naming bad's proxy.acme-challenge", ps)
	}
}

func TestBadACMEChallengeSettingIsNamed(t *testing.T) {
	_, err := Defaults{ACMEChallenge: "dns01"}.Validate()
	if err == nil || !strings.Contains(err.Error(), "BERTH_ACME_CHALLENGE") {
		t.Fatalf("err %v, want one naming BERTH_ACME_CHALLENGE", err)
	}
	if d, err := (Defaults{ACMEChallenge: "DNS-01"}).Validate(); err != nil || d.ACMEChallenge != ChallengeDNS01 {
		t.Fatalf("DNS-01: %v %q", err, d.ACMEChallenge)
	}
}

func TestCertRequestsFollowTheRoutes(t *testing.T) {
	want := func(labels map[string]string) Want {
		routes, _, errs, _ := ParseRoutes(labels, Defaults{})
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		return Want{Container: "c", Route: routes[0]}
	}
	cases := []struct {
		name   string
		labels map[string]string
		want   []CertRequest
	}{
		{"one certificate for a route's names and its redirects",
			map[string]string{"proxy.host": "b.test,a.test", "proxy.redirect-from": "www.a.test"},
			[]CertRequest{{Names: []string{"a.test", "b.test", "www.a.test"}, Challenge: ChallengeHTTP01}}},
		{"cert-per-host splits it into one per name",
			map[string]string{"proxy.host": "b.test,a.test", "proxy.redirect-from": "www.a.test", "proxy.cert-per-host": "on"},
			[]CertRequest{{Names: []string{"a.test"}, Challenge: ChallengeHTTP01}, {Names: []string{"b.test"}, Challenge: ChallengeHTTP01},
				{Names: []string{"www.a.test"}, Challenge: ChallengeHTTP01}}},
		{"challenge and profile are carried",
			map[string]string{"proxy.host": "a.test", "proxy.acme-challenge": "dns-01", "proxy.acme-profile": "shortlived"},
			[]CertRequest{{Names: []string{"a.test"}, Challenge: ChallengeDNS01, Profile: "shortlived"}}},
		{"proxy.acme=off wants none",
			map[string]string{"proxy.host": "a.test", "proxy.acme": "off", "proxy.cert-per-host": "on"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := certRequests([]Want{want(tc.labels)})
			if !slices.EqualFunc(got, tc.want, func(a, b CertRequest) bool {
				return slices.Equal(a.Names, b.Names) && a.Challenge == b.Challenge && a.Profile == b.Profile
			}) {
				t.Fatalf("requests %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestAWildcardCertificateCoversExactHostsWithoutTheirOwn(t *testing.T) {
	wild := nginxconf.TLS{CertFile: "/c/wild.pem"}
	own := nginxconf.TLS{CertFile: "/c/own.pem"}
	certs := map[string]nginxconf.TLS{"*.w.test": wild, "own.w.test": own, "*.test": {CertFile: "/c/tld.pem"}}
	cases := []struct {
		host string
		want string // "" for none
	}{
		{"a.w.test", "/c/wild.pem"},
		{"own.w.test", "/c/own.pem"}, // its own certificate wins
		{"*.w.test", "/c/wild.pem"},  // the wildcard site itself
		{"a.b.w.test", ""},           // two labels deep: a TLS wildcard matches one
		{"w.test", ""},               // *.test would span a top-level domain: never looked up
		{"other.example", ""},        // nothing
		{"test", ""},                 // no parent domain
		{"*.x.w.test", ""},           // a wildcard host is not covered by a wider wildcard
	}
	for _, tc := range cases {
		got, ok := CertFor(certs, tc.host)
		if ok != (tc.want != "") || got.CertFile != tc.want {
			t.Errorf("CertFor(%s) = %q, %v; want %q", tc.host, got.CertFile, ok, tc.want)
		}
	}
}

func TestExactHostsUnderAWildcardAreServedWithItsCertificate(t *testing.T) {
	wild := svc("wild", 2, map[string]string{"proxy.host": "*.w.test"}, 80)
	exact := svc("exact", 3, map[string]string{"proxy.host": "a.w.test", "proxy.acme": "off"}, 80)
	certs := map[string]nginxconf.TLS{"*.w.test": {CertFile: "/c/wild.pem", KeyFile: "/c/wild.key"}}
	cfg, _, ps := Desired([]Container{wild, exact}, Inputs{Nginx: testNginx, Webroot: "/w", Certs: certs})
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	for _, h := range []string{"*.w.test", "a.w.test"} {
		if s := site(t, cfg, h); s.TLS == nil || s.TLS.CertFile != "/c/wild.pem" {
			t.Fatalf("%s TLS %+v, want the wildcard certificate", h, s.TLS)
		}
	}
}

func TestTheServedCheckReachesAWildcardSiteThroughANameItMatches(t *testing.T) {
	if got := sniFor("*.w.test"); got != "berth-check.w.test" {
		t.Fatalf("sniFor(*.w.test) = %s", got)
	}
	if got := sniFor("a.test"); got != "a.test" {
		t.Fatalf("sniFor(a.test) = %s", got)
	}
}
