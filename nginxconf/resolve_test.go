package nginxconf

import (
	"bytes"
	"strings"
	"testing"
)

// A resolver alone changes nothing: only Resolve locations render
// differently, so every config without one is byte-identical whatever
// nginx runs.
func TestAResolverAloneChangesNoByte(t *testing.T) {
	for _, tc := range goldenCases {
		if tc.cfg.Resolver != "" {
			continue
		}
		with := tc.cfg
		with.Resolver = "127.0.0.11"
		a, _ := Render(tc.cfg)
		b, _ := Render(with)
		if !bytes.Equal(joinFiles(a), joinFiles(b)) {
			t.Errorf("%s: setting a resolver changed the output", tc.name)
		}
	}
}

func TestResolvedUpstreamNamesOneServerWithItsZoneAndResolver(t *testing.T) {
	files, errs := Render(Config{Webroot: "/w", Resolver: "127.0.0.11", Sites: []Site{
		{Host: "r.test", Locations: []Location{{Path: "/", Backends: []string{"web:8080"}, Resolve: true}}},
	}})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	want := "upstream berth-r.test-0 {\n" +
		"    zone berth-r.test-0 64k;\n" +
		"    resolver 127.0.0.11 valid=1s ipv6=off;\n" +
		"    server web:8080 resolve fail_timeout=2s;\n" +
		"    keepalive 16;\n}\n"
	if f := string(files["berth-r.test.conf"]); !strings.Contains(f, want) {
		t.Fatalf("want\n%s\nin\n%s", want, f)
	}
}

func TestRenderLeavesOutAResolvedSiteItCannotRenderSafely(t *testing.T) {
	good := Site{Host: "good.test", Locations: []Location{{Path: "/", Backends: []string{"10.0.0.1:80"}}}}
	resolved := func(backends ...string) Site {
		return Site{Host: "r.test", Locations: []Location{{Path: "/", Backends: backends, Resolve: true}}}
	}
	for _, tc := range []struct {
		name     string
		resolver string
		site     Site
	}{
		{"no resolver (nginx before 1.27.3)", "", resolved("web:80")},
		{"a resolver that is not an IPv4 address", "dns.test", resolved("web:80")},
		{"an IPv6 resolver, which would need brackets", "::1", resolved("web:80")},
		{"an address, which nginx would never re-resolve", "127.0.0.11", resolved("10.0.0.1:80")},
		{"two names", "127.0.0.11", resolved("a:80", "b:80")},
		{"no port", "127.0.0.11", resolved("web")},
		{"a port out of range", "127.0.0.11", resolved("web:70000")},
		{"an upper-case name", "127.0.0.11", resolved("Web:80")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files, errs := Render(Config{Webroot: "/w", Resolver: tc.resolver, Sites: []Site{good, tc.site}})
			if len(errs) != 1 {
				t.Errorf("want one error, got %v", errs)
			}
			if _, ok := files["berth-r.test.conf"]; ok {
				t.Error("the unsafe resolved site was rendered")
			}
			if _, ok := files["berth-good.test.conf"]; !ok {
				t.Error("the unsafe resolved site took good.test down with it")
			}
		})
	}
}

// A Resolve location whose replicas are all gone has no backend and
// answers 503 like any other: no empty upstream, no resolver needed.
func TestResolvedLocationWithoutBackendAnswers503(t *testing.T) {
	files, errs := Render(Config{Webroot: "/w", Sites: []Site{{Host: "d.test", Locations: []Location{{Path: "/", Resolve: true}}}}})
	f := string(files["berth-d.test.conf"])
	if len(errs) > 0 || strings.Contains(f, "upstream") || !strings.Contains(f, "return 503;") {
		t.Fatalf("want a 503 location and no upstream block, got %v:\n%s", errs, f)
	}
}
