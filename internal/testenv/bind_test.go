package testenv

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/lego"
	"github.com/go-acme/lego/v4/providers/dns/rfc2136"
	"github.com/go-acme/lego/v4/registration"
)

func TestBINDZoneNamesAndRecords(t *testing.T) {
	b := &BIND{Zone: "dns.test."}
	for name, want := range map[string]string{
		"":                            "dns.test.",
		"@":                           "dns.test.",
		"www":                         "www.dns.test.",
		"_acme-challenge.X":           "_acme-challenge.x.dns.test.",
		"a.dns.test":                  "a.dns.test.",
		"dns.test":                    "dns.test.",
		"other.example.":              "other.example.",
		"www.notdns.test.":            "www.notdns.test.",
		"_acme-challenge.w.dns.test.": "_acme-challenge.w.dns.test.",
	} {
		if got := b.fqdn(name); got != want {
			t.Errorf("fqdn(%q) = %q, want %q", name, got, want)
		}
	}
	zone, err := b.zoneTemplate(map[string]string{"*.w": "192.0.2.1", "web.dns.test.": "192.0.2.2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"@ IN NS ns\n", "ns IN A " + bindSelf + "\n", "*.w.dns.test. IN A 192.0.2.1\n", "web.dns.test. IN A 192.0.2.2\n"} {
		if !strings.Contains(zone, line) {
			t.Errorf("zone lacks %q:\n%s", line, zone)
		}
	}
	for name, ip := range map[string]string{
		"ns":               "192.0.2.1", // the server's own name
		"x.example.":       "192.0.2.1",
		"bad name":         "192.0.2.1",
		"a;b":              "192.0.2.1",
		"v6":               "2001:db8::1",
		"nothing":          "",
		"w.*":              "192.0.2.1",
		"x\n@ IN NS evil.": "192.0.2.1",
	} {
		if _, err := b.zoneTemplate(map[string]string{name: ip}); err == nil {
			t.Errorf("A record %q → %q accepted", name, ip)
		}
	}
}

func TestBINDTakesSignedUpdatesFromLegoAndRefusesUnsigned(t *testing.T) {
	RequireDocker(t)
	network := testNetwork(t, "bind")
	start := time.Now()
	b := StartBIND(t, network, "dns.test", map[string]string{"www": "192.0.2.10", "api.dns.test.": "192.0.2.11"})
	t.Logf("StartBIND took %v", time.Since(start).Round(time.Millisecond))
	if b.Zone != "dns.test." || b.TSIGKey != "berth-key." || b.TSIGAlgorithm != "hmac-sha256." || b.TSIGSecret == "" {
		t.Errorf("StartBIND gave %+v", b)
	}
	for name, want := range map[string]string{"ns.dns.test.": b.IP, "www.dns.test.": "192.0.2.10", "api.dns.test.": "192.0.2.11"} {
		for _, network := range []string{"tcp", "udp"} {
			if err := expectDNSAnswerOver(network, b.HostAddr, name, want); err != nil {
				t.Error(err)
			}
		}
	}

	provider := rfc2136FromLegoEnv(t, b)
	if timeout, interval := provider.Timeout(); timeout > time.Minute || interval > 2*time.Second {
		t.Errorf("propagation timeout %v, interval %v from LegoEnv: too slow for tests", timeout, interval)
	}
	const domain, keyAuth = "x.dns.test", "token.thumbprint"
	want := dns01.GetChallengeInfo(domain, keyAuth).Value
	if err := provider.Present(domain, "token", keyAuth); err != nil {
		t.Fatalf("Present: %v", err)
	}
	if got := b.TXT(t, "_acme-challenge.x"); !slices.Equal(got, []string{want}) {
		t.Errorf("TXT after Present = %q, want [%q]", got, want)
	}
	if err := provider.CleanUp(domain, "token", keyAuth); err != nil {
		t.Fatalf("CleanUp: %v", err)
	}
	if got := b.TXT(t, "_acme-challenge.x.dns.test."); len(got) != 0 {
		t.Errorf("TXT after CleanUp = %q, want none", got)
	}

	t.Setenv("RFC2136_TSIG_SECRET", "d3Jvbmcgc2VjcmV0IGZvciB0aGUgYmVydGgta2V5Cg==")
	forged, err := rfc2136.NewDNSProvider()
	if err != nil {
		t.Fatal(err)
	}
	if err := forged.Present(domain, "token", keyAuth); err == nil {
		t.Error("an update signed with the wrong secret was accepted")
	}
	if got := b.TXT(t, "_acme-challenge.x"); len(got) != 0 {
		t.Errorf("TXT after a forged update = %q, want none", got)
	}
}

// TestPebbleIssuesAWildcardThroughDNS01OnBIND is the whole chain: lego
// writes the challenge records into BIND with RFC 2136, and Pebble, asking
// BIND through PebbleOptions.DNSServer, validates them.
func TestPebbleIssuesAWildcardThroughDNS01OnBIND(t *testing.T) {
	RequireDocker(t)
	network := testNetwork(t, "bind-chain")
	b := StartBIND(t, network, "dns.test.", nil)
	p := PebbleContainers(t, network, "", PebbleOptions{DNSServer: net.JoinHostPort(b.IP, "53")})

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	user := &legoUser{key: key}
	cfg := lego.NewConfig(user)
	cfg.CADirURL = p.HostDirectoryURL
	cfg.HTTPClient = trustingClient(t, p.RootsFile)
	cfg.Certificate.KeyType = certcrypto.EC256
	client, err := lego.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The host reaches BIND only through HostAddr: lego's propagation check
	// asks it there rather than at the NS record's address on the network.
	err = client.Challenge.SetDNS01Provider(rfc2136FromLegoEnv(t, b),
		dns01.AddRecursiveNameservers([]string{b.HostAddr}),
		dns01.RecursiveNSsPropagationRequirement(),
		dns01.DisableAuthoritativeNssPropagationRequirement())
	if err != nil {
		t.Fatal(err)
	}
	if user.reg, err = client.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	res, err := client.Certificate.Obtain(certificate.ObtainRequest{
		Domains: []string{"*.w.dns.test", "w.dns.test"}, Bundle: true, Profile: "default",
	})
	if err != nil {
		t.Fatalf("Obtain through DNS-01: %v", err)
	}
	t.Logf("a wildcard certificate through DNS-01 took %v", time.Since(start).Round(time.Millisecond))
	leaf := verifyChain(t, res.Certificate, p.IssuerRoots(t), "any.w.dns.test")
	if !slices.Contains(leaf.DNSNames, "w.dns.test") {
		t.Errorf("certificate names %v, want w.dns.test too", leaf.DNSNames)
	}
	if got := b.TXT(t, "_acme-challenge.w"); len(got) != 0 {
		t.Errorf("challenge TXT left behind: %q", got)
	}
	// The records existed only in BIND, so Pebble validated by asking it.
	if args := Docker(t, "inspect", "--format", "{{json .Args}}", p.Name); !strings.Contains(args, `"-dnsserver","`+b.IP+`:53"`) {
		t.Errorf("Pebble runs with %s, want -dnsserver %s:53", args, b.IP)
	}
}

// TestPebbleValidatesHTTP01AtTheAddressBINDGives: with DNSServer set,
// Pebble's HTTP-01 lookups go to BIND too (and its AAAA question gets an
// empty answer, so it connects over IPv4).
func TestPebbleValidatesHTTP01AtTheAddressBINDGives(t *testing.T) {
	RequireDocker(t)
	network := testNetwork(t, "bind-http")
	nginx, nginxIP := startWebrootNginx(t, network)
	b := StartBIND(t, network, "dns.test", map[string]string{"web": nginxIP})
	p := PebbleContainers(t, network, "", PebbleOptions{DNSServer: net.JoinHostPort(b.IP, "53")})
	c := newACMEClient(t, trustingClient(t, p.RootsFile), p.HostDirectoryURL)
	chain := c.issue("web.dns.test", "default", webrootSolver(t, nginx))
	verifyChain(t, chain, p.IssuerRoots(t), "web.dns.test")
	if logs := Docker(t, "logs", nginx); !strings.Contains(logs, "GET /.well-known/acme-challenge/") {
		t.Errorf("nginx saw no challenge request:\n%s", logs)
	}
}

// rfc2136FromLegoEnv builds lego's rfc2136 provider the way berth does,
// from LegoEnv's variables, except that the host sends its updates to
// HostAddr.
func rfc2136FromLegoEnv(t *testing.T, b *BIND) *rfc2136.DNSProvider {
	for _, kv := range b.LegoEnv() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Setenv("RFC2136_NAMESERVER", b.HostAddr)
	provider, err := rfc2136.NewDNSProvider()
	if err != nil {
		t.Fatalf("rfc2136 provider from LegoEnv: %v", err)
	}
	return provider
}

// testNetwork creates a labelled Docker network for the test.
func testNetwork(t *testing.T, purpose string) string {
	network := fmt.Sprintf("berth-testenv-%s-%x", purpose, time.Now().UnixNano())
	Docker(t, append(append([]string{"network", "create"}, LabelArgs()...), network)...)
	t.Cleanup(func() { TryDocker("network", "rm", network) })
	return network
}

// legoUser is the ACME account lego needs.
type legoUser struct {
	key crypto.PrivateKey
	reg *registration.Resource
}

func (u *legoUser) GetEmail() string                        { return "" }
func (u *legoUser) GetRegistration() *registration.Resource { return u.reg }
func (u *legoUser) GetPrivateKey() crypto.PrivateKey        { return u.key }
