package controller

import (
	"slices"
	"strings"
	"testing"
)

func TestNamedRoutesAreSeparateRoutesOfOneContainer(t *testing.T) {
	routes, ok, errs, warns := ParseRoutes(map[string]string{
		"proxy.web.host": "app.example.com", "proxy.web.port": "8080",
		"proxy.admin.host": "admin.example.com", "proxy.admin.port": "9000", "proxy.admin.allow": "10.0.0.0/8",
		"proxy.network": "front", "proxy.port": "1",
	}, Defaults{})
	if !ok || len(errs) > 0 || len(warns) > 0 || len(routes) != 2 {
		t.Fatalf("ok=%v errs=%v warns=%v routes=%+v", ok, errs, warns, routes)
	}
	admin, web := routes[0], routes[1]
	if admin.Name != "admin" || admin.Port != 9000 || !slices.Equal(admin.Loc.Allow, []string{"10.0.0.0/8"}) ||
		web.Name != "web" || web.Port != 8080 || web.Loc.Allow != nil {
		t.Fatalf("routes mixed up: %+v", routes)
	}
	if admin.Network != "front" || web.Network != "front" {
		t.Fatalf("named routes did not inherit proxy.network: %+v", routes)
	}
}

func TestTheDefaultRouteComesFirstAndOwnsItsHostPortAndPath(t *testing.T) {
	routes, _, errs, _ := ParseRoutes(map[string]string{
		"proxy.host": "a.test", "proxy.path": "/a", "proxy.redirect-from": "www.a.test",
		"proxy.b.host": "b.test", "proxy.b.port": "81",
	}, Defaults{})
	if len(errs) > 0 || len(routes) != 2 || routes[0].Name != "" || routes[1].Name != "b" {
		t.Fatalf("errs=%v routes=%+v", errs, routes)
	}
	if b := routes[1]; b.Path != "/" || b.Site.RedirectFrom != nil || !slices.Equal(b.Hosts, []string{"b.test"}) {
		t.Fatalf("route b inherited where-options of the default route: %+v", b)
	}
}

func TestNamedRouteLabelsAreValidatedAndNamed(t *testing.T) {
	cases := []struct {
		labels        map[string]string
		label, reason string
	}{
		{map[string]string{"proxy.web.host": "a.test", "proxy.web.port": "x"}, "proxy.web.port", "1 to 65535"},
		{map[string]string{"proxy.web.port": "80"}, "proxy.web.host", "route web has options but no host"},
		{map[string]string{"proxy.host": "a.test", "proxy.web.max-body-size": "big"}, "proxy.web.host", "no host"},
		{map[string]string{"proxy.web.host": "a.test", "proxy.web.basic-auth": "u:plain"}, "proxy.web.basic-auth", "plaintext"},
	}
	for _, tc := range cases {
		_, _, errs, _ := ParseRoutes(tc.labels, Defaults{})
		if len(errs) != 1 || errs[0].Label != tc.label || !strings.Contains(errs[0].Reason, tc.reason) {
			t.Fatalf("%v: got %v, want one error on %s containing %q", tc.labels, errs, tc.label, tc.reason)
		}
		if strings.HasSuffix(tc.label, "basic-auth") && errs[0].Value != Redacted {
			t.Fatalf("basic-auth value not redacted: %v", errs[0])
		}
	}
}

func TestLabelsThatAreNoRouteOptionAreWarnedAbout(t *testing.T) {
	for _, name := range []string{"proxy.prot", "proxy.Web.host", "proxy.host.port", "proxy.web.bogus", "proxy.a.b.host", "proxy.web-1.host"} {
		routes, _, errs, warns := ParseRoutes(map[string]string{"proxy.host": "a.test", name: "x"}, Defaults{})
		if len(routes) != 1 || len(errs) != 0 || len(warns) != 1 || warns[0].Label != name {
			t.Fatalf("%s: routes=%d errs=%v warns=%v", name, len(routes), errs, warns)
		}
	}
	if _, _, _, warns := ParseRoutes(map[string]string{"proxy.nginx": "true"}, Defaults{}); len(warns) != 0 {
		t.Fatalf("proxy.nginx is not a route label but berth's own: %v", warns)
	}
}

func TestSnippetsAreAcceptedOnlyWhenOnAndOnlyInsideTheirBlock(t *testing.T) {
	on := Defaults{Snippets: true}
	good := []string{
		"add_header X-A b;",
		"location /x {\n  return 200 'ok';\n}",
		`return 200 "}{";`,
		"# a comment with { in it\nadd_header X-B c;",
		"set $a ${host}x;",
		`return 200 a\}b;`,
		"if ($host) { return 404; }",
	}
	for _, v := range good {
		routes, _, errs, _ := ParseRoutes(map[string]string{"proxy.host": "a.test", "proxy.location-snippet": v, "proxy.server-snippet": v}, on)
		if len(errs) > 0 || routes[0].Loc.LocationSnippet != v || routes[0].Site.ServerSnippet != v {
			t.Fatalf("%q refused: %v", v, errs)
		}
	}
	bad := map[string]string{
		"} server { listen 81; ":     "closes a block",
		"return 200; }":              "closes a block",
		"location / {":               "left open",
		`return 200 "x;`:             "unterminated",
		"return 200 x}; location {}": "stand apart",
		"# }\n}":                     "closes a block",
		"":                           "empty",
		strings.Repeat("a", 5000):    "longer than",
		"add_header a b;\r\n}":       "closes a block",
	}
	for v, reason := range bad {
		_, _, errs, _ := ParseRoutes(map[string]string{"proxy.host": "a.test", "proxy.server-snippet": v}, on)
		if len(errs) != 1 || errs[0].Label != LabelServerSnippet || !strings.Contains(errs[0].Reason, reason) {
			t.Fatalf("%q: got %v, want one error containing %q", v, errs, reason)
		}
	}
}

func TestOptedInSeesNamedRoutes(t *testing.T) {
	for labels, want := range map[*map[string]string]bool{
		{"proxy.host": "a.test"}: true, {"proxy.web.host": "a.test"}: true,
		{"proxy.port": "80"}: false, {"proxy.web.port": "80"}: false, {"proxy.host": ""}: false, {}: false,
	} {
		if got := OptedIn(*labels); got != want {
			t.Fatalf("OptedIn(%v) = %v", *labels, got)
		}
	}
}
