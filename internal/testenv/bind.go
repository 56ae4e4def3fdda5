package testenv

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BIND is an authoritative DNS server (BIND 9) in a container on a test
// network, for one zone, accepting RFC 2136 updates signed with a TSIG key:
// the real counterpart of a DNS provider's API for DNS-01 tests.
type BIND struct {
	Container string // container name
	IP        string // its IPv4 address on the network it was started on
	Zone      string // the zone, fully qualified with trailing dot, e.g. "dns.test."
	// TSIGKey is the key name ("berth-key."), TSIGAlgorithm its algorithm
	// as lego and miekg/dns spell it ("hmac-sha256."), TSIGSecret the
	// base64 secret (fresh for every server).
	TSIGKey, TSIGAlgorithm, TSIGSecret string
	// HostAddr is 127.0.0.1:PORT, where the host reaches the server's port
	// 53: TCP and UDP are published on the same loopback port, because DNS
	// clients (lego's among them) ask over UDP and retry over TCP.
	HostAddr string
}

// bindSuite is the Debian suite of the BIND image: bookworm ships BIND 9.18.
const bindSuite = "bookworm"

// bindPackages: bind9-dnsutils adds dig and nsupdate, for a human debugging
// a test with docker exec.
var bindPackages = []string{"bind9", "bind9-dnsutils"}

// bindImageConfig runs named in the foreground with Debian's configuration;
// StartBIND replaces the command with one that uses its own.
const bindImageConfig = `CMD ["named", "-g", "-u", "bind"]
`

// In the container: StartBIND's files are copied to bindConfigDir; the
// zone file is written to Debian's directory for dynamic zones, which the
// bind user may write, so that named can keep its journal (.jnl) next to it.
const (
	bindConfigDir = "/etc/bind/berth"
	bindZoneFile  = "/var/lib/bind/db.zone"
)

// bindSelf stands for the container's own address in the zone template:
// Docker assigns the address only when the container starts.
const bindSelf = "@SELF@"

// bindStartScript fills in the container's IPv4 address and runs named in
// the foreground as PID 1's replacement (logging to stderr). /run/named is
// where named keeps its PID file and session key; nothing creates it in a
// container.
const bindStartScript = `set -e
ip=
for a in $(hostname -I); do case $a in *:*) ;; *) ip=$a; break ;; esac; done
test -n "$ip"
sed "s/` + bindSelf + `/$ip/" ` + bindConfigDir + `/zone.in > ` + bindZoneFile + `
mkdir -p /run/named
chown bind:bind ` + bindZoneFile + ` /run/named
exec named -g -u bind -c ` + bindConfigDir + `/named.conf
`

// bindTTL is the TTL of the records StartBIND writes and of negative
// answers: nothing in a test should cache an answer for long.
const bindTTL = 10

// bindStartTimeout bounds how long named may take to load one small zone
// and answer; it does so in well under a second.
const bindStartTimeout = 30 * time.Second

// bindStartAttempts: the published port is chosen free a moment before
// Docker binds it (it must be the same for TCP and UDP, so Docker cannot
// choose it), so another process may take it first. A failed start is
// retried with a new port.
const bindStartAttempts = 3

// bindNS is the relative name of the zone's NS record; its A record is the
// server's own address.
const bindNS = "ns"

// bindKeyName is the TSIG key name: StartBIND creates one key per server.
const bindKeyName = "berth-key."

// bindAlgorithm is HMAC-SHA256 in miekg/dns's (and lego's) spelling.
const bindAlgorithm = "hmac-sha256."

var dnsLabel = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$`)

// BINDImage returns a local image with Debian's BIND 9 (named, and dig and
// nsupdate for debugging). It builds the image with debootstrap if it is
// missing.
func BINDImage(t testing.TB) string {
	t.Helper()
	return rootfsImage(t, "berth-test-bind", "", bindRootfs(), bindImageConfig)
}

func bindRootfs() rootfsSpec {
	return packageRootfs("bind9", bindSuite, bindPackages, filepath.Join("usr", "sbin", "named"), nil)
}

// StartBIND starts BIND on network, authoritative for zone (e.g.
// "dns.test"), with an NS record whose name (ns.<zone>) resolves to BIND's
// own IP, because lego's propagation check asks the zone's nameservers by
// name; plus the A records in a (fully qualified or relative names →
// IPv4). Any name in the zone may be changed with updates signed by the
// TSIG key. It waits until the server answers over TCP and UDP on
// HostAddr, and removes the container in t.Cleanup, logging its output
// first if the test failed.
func StartBIND(t testing.TB, network, zone string, a map[string]string) *BIND {
	t.Helper()
	RequireDocker(t)
	b := &BIND{Zone: strings.ToLower(strings.TrimSuffix(zone, ".")) + ".", TSIGKey: bindKeyName, TSIGAlgorithm: bindAlgorithm}
	if err := checkDomain(b.Zone); err != nil {
		t.Fatalf("StartBIND: zone: %v", err)
	}
	zoneText, err := b.zoneTemplate(a)
	if err != nil {
		t.Fatalf("StartBIND: %v", err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	b.TSIGSecret = base64.StdEncoding.EncodeToString(secret)
	dir := t.TempDir()
	for name, text := range map[string]string{"named.conf": b.namedConf(), "zone.in": zoneText} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := BINDImage(t)
	var errs []error
	for attempt := 1; attempt <= bindStartAttempts; attempt++ {
		err := b.start(t, img, network, dir)
		if err == nil {
			return b
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", attempt, err))
	}
	t.Fatalf("start BIND: %v", errors.Join(errs...))
	return nil
}

// start runs one container with the configuration in dir on a fresh
// loopback port and waits until it answers. On failure it removes the
// container and returns an error with the container's output.
func (b *BIND) start(t testing.TB, img, network, dir string) error {
	port, err := freeLoopbackTCPAndUDPPort()
	if err != nil {
		return err
	}
	name := fmt.Sprintf("berth-test-bind-%x", time.Now().UnixNano())
	args := append([]string{"create", "--name", name, "--network", network}, LabelArgs()...)
	args = append(args, "-p", fmt.Sprintf("127.0.0.1:%d:53/tcp", port), "-p", fmt.Sprintf("127.0.0.1:%d:53/udp", port),
		img, "sh", "-c", bindStartScript)
	if _, err := TryDocker(args...); err != nil {
		return err
	}
	fail := func(err error) error {
		err = fmt.Errorf("%w\n%s", err, containerTail(name))
		TryDocker("rm", "-f", "-v", name)
		return err
	}
	if _, err := TryDocker("cp", dir+"/.", name+":"+bindConfigDir); err != nil {
		return fail(err)
	}
	if _, err := TryDocker("start", name); err != nil {
		return fail(err)
	}
	ip, err := TryDocker("inspect", "--format", `{{(index .NetworkSettings.Networks "`+network+`").IPAddress}}`, name)
	if err != nil {
		return fail(err)
	}
	if parsed := net.ParseIP(ip); parsed == nil || parsed.To4() == nil {
		return fail(fmt.Errorf("address of %s on network %s: %q", name, network, ip))
	}
	b.Container, b.IP, b.HostAddr = name, ip, loopback(port)
	alive := func() error { return containersRunning(name) }
	if err := waitUntil(bindStartTimeout, alive, b.answersWithItsAddress); err != nil {
		return fail(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("BIND for %s:\n%s", b.Zone, containerTail(name))
		}
		TryDocker("rm", "-f", "-v", name)
	})
	return nil
}

// answersWithItsAddress checks, over TCP and UDP through HostAddr, that the
// zone is loaded: its NS name resolves to the container's address.
func (b *BIND) answersWithItsAddress() error {
	for _, network := range []string{"tcp", "udp"} {
		if err := expectDNSAnswerOver(network, b.HostAddr, bindNS+"."+b.Zone, b.IP); err != nil {
			return err
		}
	}
	return nil
}

// LegoEnv returns the environment that lego's rfc2136 DNS provider and
// berth need to use this server from a container on the same network.
// The intervals are small because nothing here propagates: the one
// server answers at once. SEQUENCE_INTERVAL matters most: the provider
// solves one challenge at a time and waits that long between them (60 s by
// default), and a wildcard with its base name is two challenges.
func (b *BIND) LegoEnv() []string {
	ns := net.JoinHostPort(b.IP, "53")
	return []string{
		"RFC2136_NAMESERVER=" + ns,
		"RFC2136_TSIG_KEY=" + b.TSIGKey,
		"RFC2136_TSIG_SECRET=" + b.TSIGSecret,
		"RFC2136_TSIG_ALGORITHM=" + b.TSIGAlgorithm,
		"RFC2136_TTL=" + strconv.Itoa(bindTTL),
		"RFC2136_PROPAGATION_TIMEOUT=30",
		"RFC2136_POLLING_INTERVAL=1",
		"RFC2136_SEQUENCE_INTERVAL=1",
		"BERTH_ACME_DNS_RESOLVERS=" + ns,
	}
}

// TXT returns the TXT records of name (fully qualified, or relative to the
// zone) as BIND answers them now, asked through HostAddr. A name without
// TXT records, or that does not exist, gives none.
func (b *BIND) TXT(t testing.TB, name string) []string {
	t.Helper()
	txts, err := lookupTXT(b.HostAddr, b.fqdn(name))
	if err != nil {
		t.Fatalf("TXT %s: %v", b.fqdn(name), err)
	}
	return txts
}

// fqdn makes name absolute: a name ending in a dot, or in the zone's name,
// is already; anything else is relative to the zone ("" and "@" are the
// zone itself).
func (b *BIND) fqdn(name string) string {
	name = strings.ToLower(name)
	switch zone := strings.TrimSuffix(b.Zone, "."); {
	case strings.HasSuffix(name, "."):
		return name
	case name == "" || name == "@":
		return b.Zone
	case name == zone || strings.HasSuffix(name, "."+zone):
		return name + "."
	default:
		return name + "." + b.Zone
	}
}

// zoneTemplate is the zone file with bindSelf for the server's address.
func (b *BIND) zoneTemplate(a map[string]string) (string, error) {
	var z strings.Builder
	fmt.Fprintf(&z, "$ORIGIN %s\n$TTL %d\n", b.Zone, bindTTL)
	// Serial 1; refresh, retry and expire matter only for secondaries;
	// the last field is the negative-caching TTL.
	fmt.Fprintf(&z, "@ IN SOA %s hostmaster 1 60 60 3600 %d\n", bindNS, bindTTL)
	fmt.Fprintf(&z, "@ IN NS %s\n%s IN A %s\n", bindNS, bindNS, bindSelf)
	names := make([]string, 0, len(a))
	for name := range a {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fqdn := b.fqdn(name)
		if fqdn != b.Zone && !strings.HasSuffix(fqdn, "."+b.Zone) {
			return "", fmt.Errorf("A record %q is outside zone %s", name, b.Zone)
		}
		if fqdn == bindNS+"."+b.Zone {
			return "", fmt.Errorf("A record %q: %s is the server's own name", name, fqdn)
		}
		if err := checkDomain(fqdn); err != nil {
			return "", fmt.Errorf("A record %q: %w", name, err)
		}
		ip := net.ParseIP(a[name])
		if ip == nil || ip.To4() == nil {
			return "", fmt.Errorf("A record %q: %q is not an IPv4 address", name, a[name])
		}
		fmt.Fprintf(&z, "%s IN A %s\n", fqdn, ip.To4())
	}
	return z.String(), nil
}

// namedConf configures named as the primary of one zone that any holder of
// the TSIG key may change anywhere (update-policy zonesub), answering
// everyone and recursing for no one.
func (b *BIND) namedConf() string {
	return fmt.Sprintf(`// Written by berth's testenv.StartBIND.
options {
	directory "/var/cache/bind";
	listen-on { any; };
	listen-on-v6 { any; };
	recursion no;
	allow-query { any; };
	dnssec-validation no;
	notify no;
};
// No rndc: the test stops the container instead.
controls { };
key "%s" {
	algorithm %s;
	secret "%s";
};
zone "%s" {
	type primary;
	file "%s";
	update-policy { grant %s zonesub ANY; };
};
`, b.TSIGKey, strings.TrimSuffix(b.TSIGAlgorithm, "."), b.TSIGSecret, b.Zone, bindZoneFile, b.TSIGKey)
}

// checkDomain accepts an absolute name of DNS labels (letters, digits,
// hyphens, underscores; "*" first for a wildcard), so that nothing else
// reaches named's files.
func checkDomain(fqdn string) error {
	labels := strings.Split(strings.TrimSuffix(fqdn, "."), ".")
	if !strings.HasSuffix(fqdn, ".") || len(fqdn) > 254 {
		return fmt.Errorf("%q is not a domain name", fqdn)
	}
	for i, l := range labels {
		if !dnsLabel.MatchString(l) && (l != "*" || i > 0) {
			return fmt.Errorf("%q is not a domain name (label %q)", fqdn, l)
		}
	}
	return nil
}

// freeLoopbackTCPAndUDPPort returns a port that was free on 127.0.0.1 for
// both TCP and UDP a moment ago.
func freeLoopbackTCPAndUDPPort() (int, error) {
	var errs []error
	for range 10 {
		ports, err := freeLoopbackPorts(1)
		if err != nil {
			return 0, err
		}
		c, err := net.ListenPacket("udp", loopback(ports[0]))
		if err == nil {
			c.Close()
			return ports[0], nil
		}
		errs = append(errs, err)
	}
	return 0, fmt.Errorf("no port free for TCP and UDP: %w", errors.Join(errs...))
}
