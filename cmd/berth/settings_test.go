package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/controller"
)

func TestLabelDefaultsComeFromEnvironmentAndFlagsAndReachTheController(t *testing.T) {
	t.Setenv("BERTH_MAX_BODY_SIZE", "10M")
	t.Setenv("BERTH_PROXY_READ_TIMEOUT", "60s")
	t.Setenv("BERTH_HSTS", "off")
	s, err := parseSettings("run", []string{"--proxy-connect-timeout", "3s", "--snippets", "on"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := controller.Defaults{MaxBodySize: "10m", ConnectTimeout: "3s", ReadTimeout: "60s", HSTS: "off", Snippets: true, ACMEChallenge: "http-01"}
	if got := s.controllerOptions().Defaults; got != want {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
}

func TestLabelDefaultsAreTheDocumentedOnes(t *testing.T) {
	s, err := parseSettings("run", nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := controller.Defaults{MaxBodySize: "0", HSTS: controller.DefaultHSTS, ACMEChallenge: controller.ChallengeHTTP01}
	if s.Defaults != want {
		t.Fatalf("defaults %+v, want %+v", s.Defaults, want)
	}
}

func TestBadLabelDefaultsNameTheSetting(t *testing.T) {
	for env, v := range map[string]string{"BERTH_MAX_BODY_SIZE": "lots", "BERTH_PROXY_SEND_TIMEOUT": "1y",
		"BERTH_HSTS": "always", "BERTH_SNIPPETS": "yes", "BERTH_PROXY_CONNECT_TIMEOUT": "5 s",
		"BERTH_ACME_CHALLENGE": "dns", "BERTH_ACME_DNS_RESOLVERS": "10.0.0.1:53,not a resolver"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, v)
			if _, err := parseSettings("run", nil, io.Discard); err == nil || !strings.Contains(err.Error(), env) {
				t.Fatalf("err=%v, want one naming %s", err, env)
			}
		})
	}
}

func TestSnippetsOnIsWarnedAboutAtStart(t *testing.T) {
	for _, on := range []bool{true, false} {
		var buf bytes.Buffer
		log := logrus.New()
		log.SetOutput(&buf)
		settings{Defaults: controller.Defaults{Snippets: on}}.warnAtStart(logrus.NewEntry(log))
		if got := strings.Contains(buf.String(), "anyone who can label a container controls nginx"); got != on {
			t.Fatalf("snippets %v: log %q", on, buf.String())
		}
	}
}

func TestDNS01SettingsAreReadAndChecked(t *testing.T) {
	t.Setenv("BERTH_ACME_CHALLENGE", "DNS-01")
	t.Setenv("BERTH_ACME_DNS_PROVIDER", "rfc2136")
	t.Setenv("BERTH_ACME_DNS_RESOLVERS", "10.0.0.2:5353, ns.example.com")
	s, err := parseSettings("run", nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Defaults.ACMEChallenge != controller.ChallengeDNS01 || s.ACMEDNSProvider != "rfc2136" ||
		strings.Join(s.ACMEDNSResolvers, ",") != "10.0.0.2:5353,ns.example.com:53" {
		t.Fatalf("settings %+v", s)
	}
	t.Setenv("BERTH_ACME_DNS_PROVIDER", "")
	if _, err := parseSettings("run", nil, io.Discard); err == nil || !strings.Contains(err.Error(), "BERTH_ACME_DNS_PROVIDER") {
		t.Fatalf("dns-01 without a provider: err %v, want one naming BERTH_ACME_DNS_PROVIDER", err)
	}
}

func TestAMisconfiguredDNSProviderIsAnErrorNamingItAndWhatIsMissing(t *testing.T) {
	for _, tc := range []struct{ provider, want string }{
		{"no-such-dns", `"no-such-dns"`},
		{"rfc2136", "NAMESERVER"}, // lego names it DNSUPDATE_NAMESERVER (RFC2136_NAMESERVER also works)
		{"cloudflare", "CLOUDFLARE_"},
	} {
		t.Run(tc.provider, func(t *testing.T) {
			t.Setenv("RFC2136_NAMESERVER", "")
			t.Setenv("DNSUPDATE_NAMESERVER", "")
			t.Setenv("BERTH_ACME_DNS_PROVIDER", tc.provider)
			s, err := parseSettings("run", nil, io.Discard)
			if err != nil {
				t.Fatalf("a misconfigured provider must not stop berth: %v", err)
			}
			err = s.accountConfig().DNS.Err()
			if err == nil || !strings.Contains(err.Error(), tc.provider) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one naming %s and %s", err, tc.provider, tc.want)
			}
		})
	}
}
