package controller

import (
	"slices"
	"strings"
	"testing"

	"github.com/berthproxy/berth/nginxconf"
)

const (
	bcryptHash = "$2y$05$K8xkOxGd9vpnYH6x5zo3vOKGtbQWl/8xI.9b8G6R5K0tVLPHwLvHu"
	apr1Hash   = "$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/"
	shaHash    = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="
)

func TestNewLabelsAreReadAndNormalised(t *testing.T) {
	cases := []struct {
		name   string
		labels map[string]string
		check  func(Route) bool
	}{
		{"max-body-size takes an nginx size in any case", map[string]string{"proxy.max-body-size": "10M"},
			func(r Route) bool { return r.Loc.MaxBodySize == "10m" }},
		{"max-body-size 0 is no limit", map[string]string{"proxy.max-body-size": "0"},
			func(r Route) bool { return r.Loc.MaxBodySize == "0" }},
		{"the timeouts take nginx durations; bare digits are seconds", map[string]string{"proxy.connect-timeout": "5s", "proxy.read-timeout": "10m", "proxy.send-timeout": "30"},
			func(r Route) bool {
				return r.Loc.ConnectTimeout == "5s" && r.Loc.ReadTimeout == "10m" && r.Loc.SendTimeout == "30s"
			}},
		{"strip-path on", map[string]string{"proxy.strip-path": "on", "proxy.path": "/api"},
			func(r Route) bool { return r.Loc.StripPath && r.Path == "/api" }},
		{"https only", map[string]string{"proxy.https": "only"},
			func(r Route) bool { return r.HTTPS == nginxconf.HTTPSOnly }},
		{"hsts is canonicalised", map[string]string{"proxy.hsts": "max-age=600;includesubdomains; PRELOAD"},
			func(r Route) bool { return r.Site.HSTS == "max-age=600; includeSubDomains; preload" }},
		{"hsts off sends none", map[string]string{"proxy.hsts": "off"},
			func(r Route) bool { return r.Site.HSTS == "" }},
		{"redirect-from is normalised like proxy.host and goes to the first host as written",
			map[string]string{"proxy.host": "z.test,a.test", "proxy.redirect-from": "WWW.z.test, old.test"},
			func(r Route) bool {
				return r.Primary == "z.test" && slices.Equal(r.Site.RedirectFrom, []string{"old.test", "www.z.test"})
			}},
		{"basic-auth takes bcrypt, apr1 and SHA lines, comma- or newline-separated",
			map[string]string{"proxy.basic-auth": "a:" + bcryptHash + ",b:" + apr1Hash + "\nc:" + shaHash},
			func(r Route) bool {
				return slices.Equal(r.Loc.BasicAuth, []string{"a:" + bcryptHash, "b:" + apr1Hash, "c:" + shaHash})
			}},
		{"allow takes IPv4, IPv6 and masked CIDRs", map[string]string{"proxy.allow": "10.1.2.3/8, 2001:db8::1, 192.0.2.7"},
			func(r Route) bool {
				return slices.Equal(r.Loc.Allow, []string{"10.0.0.0/8", "192.0.2.7", "2001:db8::1"})
			}},
		{"scheme grpcs", map[string]string{"proxy.scheme": "GRPCS"},
			func(r Route) bool { return r.Loc.Scheme == nginxconf.SchemeGRPCS }},
		{"a leading wildcard routes like an nginx server name", map[string]string{"proxy.host": "*.Example.com"},
			func(r Route) bool { return slices.Equal(r.Hosts, []string{"*.example.com"}) }},
		{"a trailing wildcard too", map[string]string{"proxy.host": "example.*"},
			func(r Route) bool { return slices.Equal(r.Hosts, []string{"example.*"}) }},
		{"without labels the defaults are no body limit, no timeouts and a year of HSTS", map[string]string{},
			func(r Route) bool {
				return r.Loc.MaxBodySize == "0" && r.Loc.ReadTimeout == "" && r.Site.HSTS == DefaultHSTS && r.Loc.Scheme == ""
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			labels := map[string]string{"proxy.host": "a.test"}
			for k, v := range tc.labels {
				labels[k] = v
			}
			r, ok, errs, warns := parseDefaultRoute(labels)
			if !ok || len(errs) > 0 || len(warns) > 0 || !tc.check(r) {
				t.Fatalf("ok=%v errs=%v warns=%v route=%+v", ok, errs, warns, r)
			}
		})
	}
}

func TestNewLabelsRejectBadValuesWithReason(t *testing.T) {
	cases := []struct{ label, value, reason string }{
		{"proxy.max-body-size", "10mb", "nginx size"},
		{"proxy.max-body-size", "-1", "nginx size"},
		{"proxy.max-body-size", "5000g", "1024g"},
		{"proxy.read-timeout", "5 s", "one unit"},
		{"proxy.read-timeout", "1h30m", "one unit"},
		{"proxy.read-timeout", "25h", "1ms to 24h"},
		{"proxy.connect-timeout", "0s", "1ms to 24h"},
		{"proxy.send-timeout", "5s;", "one unit"},
		{"proxy.strip-path", "yes", "one of on, off"},
		{"proxy.https", "always", "one of"},
		{"proxy.hsts", "max-age=abc", "max-age=N"},
		{"proxy.hsts", "max-age=60; always", "only includeSubDomains and preload"},
		{"proxy.hsts", "max-age=60; preload; preload", "twice"},
		{"proxy.hsts", "max-age=99999999999", "max-age=N"},
		{"proxy.redirect-from", "bad_host!", "label"},
		{"proxy.redirect-from", "a.test", "also in the route's host"},
		{"proxy.allow", "10.0.0.0/33", "not an IP address or CIDR"},
		{"proxy.allow", "fe80::1%eth0", "not an IP address or CIDR"},
		{"proxy.allow", " , ", "no address"},
		{"proxy.scheme", "ws", "one of http, https, grpc, grpcs"},
		{"proxy.server-snippet", "return 200;", "refused: BERTH_SNIPPETS is off"},
		{"proxy.location-snippet", "return 200;", "refused: BERTH_SNIPPETS is off"},
	}
	for _, tc := range cases {
		t.Run(tc.label+"="+tc.value, func(t *testing.T) {
			_, _, errs, _ := parseDefaultRoute(map[string]string{"proxy.host": "a.test", tc.label: tc.value})
			if len(errs) != 1 || errs[0].Label != tc.label || errs[0].Value != tc.value || !strings.Contains(errs[0].Reason, tc.reason) {
				t.Fatalf("got %v; want one error for %s=%q with reason containing %q", errs, tc.label, tc.value, tc.reason)
			}
		})
	}
}

func TestBasicAuthRefusesPlaintextAndNeverRepeatsTheValue(t *testing.T) {
	for _, v := range []string{"alice:secret", "alice:" + bcryptHash + ",bob:hunter2", "nocolon", "alice:" + shaHash + "\nalice:" + shaHash, "a b:" + shaHash} {
		_, _, errs, _ := parseDefaultRoute(map[string]string{"proxy.host": "a.test", "proxy.basic-auth": v})
		if len(errs) != 1 || errs[0].Label != LabelBasicAuth || errs[0].Value != Redacted {
			t.Fatalf("%q: got %v, want one redacted error", v, errs)
		}
		for _, secret := range []string{"secret", "hunter2", bcryptHash, shaHash} {
			if strings.Contains(errs[0].Error(), secret) {
				t.Fatalf("%q: error %q repeats a secret", v, errs[0].Error())
			}
		}
	}
	_, _, errs, _ := parseDefaultRoute(map[string]string{"proxy.host": "a.test", "proxy.basic-auth": "alice:secret"})
	if !strings.Contains(errs[0].Reason, "plaintext passwords are refused") {
		t.Fatalf("reason %q does not say plaintext is refused", errs[0].Reason)
	}
}

func TestSettingsGiveUnsetLabelsTheirValueAndLabelsWin(t *testing.T) {
	d := Defaults{MaxBodySize: "1m", ConnectTimeout: "3s", ReadTimeout: "60s", SendTimeout: "7s", HSTS: "off"}
	routes, _, errs, _ := ParseRoutes(map[string]string{"proxy.host": "a.test"}, d)
	r := routes[0]
	if len(errs) > 0 || r.Loc.MaxBodySize != "1m" || r.Loc.ConnectTimeout != "3s" || r.Loc.ReadTimeout != "60s" || r.Loc.SendTimeout != "7s" || r.Site.HSTS != "" {
		t.Fatalf("defaults not applied: %+v %v", r, errs)
	}
	routes, _, _, _ = ParseRoutes(map[string]string{"proxy.host": "a.test", "proxy.max-body-size": "0", "proxy.read-timeout": "5s", "proxy.hsts": "max-age=5"}, d)
	if r = routes[0]; r.Loc.MaxBodySize != "0" || r.Loc.ReadTimeout != "5s" || r.Site.HSTS != "max-age=5" || r.Loc.ConnectTimeout != "3s" {
		t.Fatalf("labels do not win over settings: %+v", r)
	}
}

func TestDefaultsAreValidatedByTheLabelParsers(t *testing.T) {
	for _, d := range []Defaults{{MaxBodySize: "1x"}, {ReadTimeout: "forever"}, {HSTS: "max-age=-1"}, {SendTimeout: "0"}} {
		if _, err := d.Validate(); err == nil || !strings.Contains(err.Error(), "BERTH_") {
			t.Fatalf("%+v: err=%v, want one naming the setting", d, err)
		}
	}
	d, err := Defaults{MaxBodySize: "10M", HSTS: "max-age=1;preload"}.Validate()
	if err != nil || d.MaxBodySize != "10m" || d.HSTS != "max-age=1; preload" {
		t.Fatalf("got %+v, %v", d, err)
	}
}
