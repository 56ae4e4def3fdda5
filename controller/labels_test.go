package controller

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/berthproxy/berth/nginxconf"
)

func TestParseLabelsAcceptsAndNormalises(t *testing.T) {
	cases := []struct {
		name   string
		labels map[string]string
		want   Route
	}{
		{"defaults apply with only a host",
			map[string]string{"proxy.host": "App.Example.com"},
			Route{Hosts: []string{"app.example.com"}, Path: "/", HTTPS: "redirect", ACME: true}},
		{"a host list is split, trimmed, sorted and deduplicated",
			map[string]string{"proxy.host": " b.test, a.test ,b.test,"},
			Route{Hosts: []string{"a.test", "b.test"}, Path: "/", HTTPS: "redirect", ACME: true}},
		{"an internationalised name becomes punycode",
			map[string]string{"proxy.host": "Bücher.example"},
			Route{Hosts: []string{"xn--bcher-kva.example"}, Path: "/", HTTPS: "redirect", ACME: true}},
		{"a trailing dot is dropped",
			map[string]string{"proxy.host": "a.test."},
			Route{Hosts: []string{"a.test"}, Path: "/", HTTPS: "redirect", ACME: true}},
		{"port, path, network, https and acme are read",
			map[string]string{"proxy.host": "a.test", "proxy.port": "8080", "proxy.path": "/api/", "proxy.network": "front_net", "proxy.https": "Both", "proxy.acme": "off"},
			Route{Hosts: []string{"a.test"}, Port: 8080, Path: "/api", Network: "front_net", HTTPS: "both", ACME: false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, errs, _ := parseDefaultRoute(tc.labels)
			if !ok || len(errs) > 0 {
				t.Fatalf("ok=%v errs=%v", ok, errs)
			}
			if !slices.Equal(got.Hosts, tc.want.Hosts) || got.Port != tc.want.Port || got.Path != tc.want.Path ||
				got.Network != tc.want.Network || got.HTTPS != tc.want.HTTPS || got.ACME != tc.want.ACME {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseLabelsRejectsWithLabelValueAndReason(t *testing.T) {
	cases := []struct {
		label, value, reason string
	}{
		{"proxy.host", "bad_host!", "label"},
		{"proxy.host", "", "no hostname"},
		{"proxy.host", "-a.test", "label"},
		{"proxy.host", strings.Repeat("a", 64) + ".test", "1-63"},
		{"proxy.host", strings.Repeat("abcdefghi.", 26) + "test", "253"},
		{"proxy.host", "a.*.example.com", "wildcard must be the whole first or last label"},
		{"proxy.host", "*", "wildcard"},
		{"proxy.host", "a.test;b", "label"},
		{"proxy.host", "exa mple.com", "label"},
		{"proxy.port", "99999", "1 to 65535"},
		{"proxy.port", "0", "1 to 65535"},
		{"proxy.port", "http", "1 to 65535"},
		{"proxy.path", "api", "start with /"},
		{"proxy.path", "/a b", "only letters"},
		{"proxy.path", "/a;return 200", "only letters"},
		{"proxy.path", "/a/../b", ". or .."},
		{"proxy.path", "/a//b", "//"},
		{"proxy.path", "/.well-known/acme-challenge/x", "reserved"},
		{"proxy.network", "net work", "network name"},
		{"proxy.https", "always", "one of"},
		{"proxy.acme", "yes", "one of"},
		{"proxy.acme-challenge", "tls-alpn-01", "one of http-01, dns-01"},
		{"proxy.acme-challenge", "dns", "one of http-01, dns-01"},
		{"proxy.acme-profile", "short lived", "ACME profile name"},
		{"proxy.acme-profile", "x;y", "ACME profile name"},
		{"proxy.cert-per-host", "yes", "one of on, off"},
	}
	for _, tc := range cases {
		t.Run(tc.label+"="+tc.value, func(t *testing.T) {
			labels := map[string]string{"proxy.host": "ok.test", tc.label: tc.value}
			_, ok, errs, _ := parseDefaultRoute(labels)
			if !ok || len(errs) != 1 {
				t.Fatalf("want one error, got ok=%v errs=%v", ok, errs)
			}
			e := errs[0]
			if e.Label != tc.label || e.Value != tc.value || !strings.Contains(e.Reason, tc.reason) {
				t.Fatalf("got %v; want label %s, value %q, reason containing %q", e, tc.label, tc.value, tc.reason)
			}
		})
	}
}

// parseDefaultRoute is ParseRoutes with the documented defaults, for
// labels that set only the default route.
func parseDefaultRoute(labels map[string]string) (Route, bool, []LabelError, []LabelError) {
	routes, ok, errs, warns := ParseRoutes(labels, Defaults{})
	if len(routes) == 0 {
		return Route{}, ok, errs, warns
	}
	return routes[0], ok, errs, warns
}

func TestParseLabelsIgnoresContainersWithoutHost(t *testing.T) {
	if _, ok, _, _ := parseDefaultRoute(map[string]string{"proxy.port": "80"}); ok {
		t.Fatal("a container without proxy.host opted in")
	}
}

func TestParseLabelsWarnsAboutUnknownProxyLabels(t *testing.T) {
	_, ok, errs, warns := parseDefaultRoute(map[string]string{"proxy.host": "a.test", "proxy.prot": "80"})
	if !ok || len(errs) != 0 || len(warns) != 1 || warns[0].Label != "proxy.prot" {
		t.Fatalf("ok=%v errs=%v warns=%v", ok, errs, warns)
	}
}

// allowedVars are the only nginx variables the renderer itself emits.
var allowedVars = regexp.MustCompile(`\$(host|request_uri|http_upgrade|berth_connection_upgrade|remote_addr|proxy_add_x_forwarded_for|scheme|server_port|uri)\b`)

// FuzzLabelsNeverInjectConfig feeds arbitrary label values through the whole
// pure pipeline (labels → desired state → render) and checks that nothing of
// the input can add a directive, a block, a comment or a variable: every
// rendered line has the renderer's own shape. Every label is tried alone
// (so one bad value does not hide the others) and all together, on the
// default route and on a named route; snippets are off.
func FuzzLabelsNeverInjectConfig(f *testing.F) {
	f.Add("app.example.com", "8080", "/api", "net", "redirect", "10m", "5s", "max-age=60; preload", "www.example.com", "u:"+shaHash, "10.0.0.0/8", "grpc", "", "web")
	f.Add("a.test;include /etc/passwd", "80", "/x { return 200; }", "n", "both", "1g;", "1h\n", "max-age=1; }", "b.test;", "u:$apr1$x", "::1", "https", "return 200;", "web")
	f.Add("bücher.example", "443", "/$host", "n\nx", "only", "0", "10m", "off", "*.example.com", "a:b,c:d", "1.2.3.4/33", "grpcs", "}", "a1")
	f.Add("x.test\n}", "1", "/#", "'", "\"", "$1", "${x}", "$host", "x.*", "\n", "#", "'", "{", "host")
	f.Add("*.example.com", "9000", "/", "net", "off", "1K", "30", "max-age=0", "example.*", "u:"+bcryptHash, "2001:db8::/32", "http", "", "admin")
	f.Fuzz(func(t *testing.T, host, port, path, network, https, size, timeout, hsts, redirect, auth, allow, scheme, snippet, route string) {
		all := map[string]string{"proxy.port": port, "proxy.path": path, "proxy.network": network, "proxy.https": https,
			"proxy.max-body-size": size, "proxy.connect-timeout": timeout, "proxy.read-timeout": timeout, "proxy.send-timeout": timeout,
			"proxy.strip-path": https, "proxy.hsts": hsts, "proxy.redirect-from": redirect, "proxy.basic-auth": auth,
			"proxy.allow": allow, "proxy.scheme": scheme, "proxy.server-snippet": snippet, "proxy.location-snippet": snippet,
			"proxy.acme": https}
		sets := []map[string]string{withHost(host, all)}
		for k, v := range all {
			sets = append(sets, withHost(host, map[string]string{k: v}))
		}
		named := map[string]string{}
		for k, v := range withHost(host, all) {
			named["proxy."+route+"."+strings.TrimPrefix(k, "proxy.")] = v
		}
		sets = append(sets, named)
		for _, labels := range sets {
			c := Container{ID: "c1", Name: "svc", Running: true, Exposed: []int{80}, Labels: labels,
				Networks: map[string]string{"net": "172.18.0.2", network: "172.18.0.3"}}
			nginx := Container{ID: "n", Networks: map[string]string{"net": "172.18.0.1", network: "172.18.0.1"}}
			cfg, _, _ := Desired([]Container{c}, Inputs{Nginx: nginx, Webroot: "/var/www/acme"})
			files, _ := nginxconf.Render(cfg)
			for name, data := range files {
				if !nginxconf.Owned(name) || strings.ContainsAny(name, " \n;{}") {
					t.Fatalf("unsafe file name %q", name)
				}
				checkLines(t, name, string(data))
			}
		}
	})
}

// withHost is labels plus proxy.host.
func withHost(host string, labels map[string]string) map[string]string {
	out := map[string]string{"proxy.host": host}
	for k, v := range labels {
		out[k] = v
	}
	return out
}

var (
	directiveLine = regexp.MustCompile(`^ *[a-z_0-9]+( [^ ;{}#"'\\]+)* *[;{]$`)
	mapEntryLine  = regexp.MustCompile(`^ *(default upgrade|''      '');$`)
	// clearedHeader: the renderer's own fixed lines that drop a client header.
	clearedHeader = regexp.MustCompile(`^ *(proxy|grpc)_set_header (Forwarded|X-Forwarded-Ssl|Proxy) "";$`)
	// fixedQuoted: the renderer's own lines with a quoted value.
	fixedQuoted = regexp.MustCompile(`^ *(auth_basic "restricted"|add_header Strict-Transport-Security "max-age=[0-9]+(; includeSubDomains)?(; preload)?" always);$`)
	// htpasswdEntry is one line of a basic-auth file: user:hash, nothing else.
	htpasswdEntry = regexp.MustCompile(`^[A-Za-z0-9._@-]+:[$./{}A-Za-z0-9+=]+$`)
)

func checkLines(t *testing.T, name, data string) {
	t.Helper()
	if name == nginxconf.ErrorPagesFile {
		// A constant of the renderer's: no input reaches it.
		if fixed, _ := nginxconf.Render(nginxconf.Config{Webroot: "/w"}); data != string(fixed[name]) {
			t.Fatalf("%s depends on the input:\n%s", name, data)
		}
		return
	}
	if strings.HasSuffix(name, nginxconf.HtpasswdSuffix) {
		for i, line := range strings.Split(strings.TrimSuffix(data, "\n"), "\n") {
			if !htpasswdEntry.MatchString(line) {
				t.Fatalf("%s line %d is not one user:hash: %q", name, i+1, line)
			}
		}
		return
	}
	for i, line := range strings.Split(data, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || trimmed == "}":
		case strings.HasPrefix(trimmed, "#") && (i == 0 || strings.HasPrefix(trimmed, "# Lets websocket")):
		case clearedHeader.MatchString(line), fixedQuoted.MatchString(line):
		case mapEntryLine.MatchString(line), directiveLine.MatchString(line):
			if rest := allowedVars.ReplaceAllString(line, ""); strings.Contains(rest, "$") {
				t.Fatalf("%s line %d expands an unexpected variable: %q", name, i+1, line)
			}
		default:
			t.Fatalf("%s line %d has an unexpected shape: %q", name, i+1, line)
		}
	}
}
