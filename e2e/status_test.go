package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
	"github.com/berthproxy/berth/status"
)

// statusPort is berth's BERTH_HTTP_ADDR port inside its container.
const statusPort = "9180"

// newObservedPebbleStack is newPebbleStack with BERTH_HTTP_ADDR set and
// its port published on 127.0.0.1.
func newObservedPebbleStack(t *testing.T) (*stack, *testenv.PebbleInContainers, string) {
	var ca *testenv.PebbleInContainers
	s := newStackWith(t, stackOptions{berth: func(s *stack) []string {
		ca = testenv.PebbleContainers(t, s.network, s.ip(s.nginx), testenv.PebbleOptions{})
		return []string{"--network", s.network,
			"-p", "127.0.0.1::" + statusPort, "-e", "BERTH_HTTP_ADDR=:" + statusPort,
			"-v", ca.RootsFile + ":" + pebbleRoots + ":ro",
			"-e", "BERTH_ACME_CA=" + ca.DirectoryURL,
			"-e", "BERTH_ACME_CA_ROOTS=" + pebbleRoots}
	}})
	port, err := publishedPort(s.berth, statusPort+"/tcp")
	if err != nil {
		t.Fatal(err)
	}
	return s, ca, "http://127.0.0.1:" + port
}

// berthCLI runs a berth command inside the berth container, the way
// "docker compose exec berth /berth status" does.
func (s *stack) berthCLI(args ...string) (string, error) {
	return testenv.TryDocker(append([]string{"exec", s.berth, "/berth"}, args...)...)
}

// TestStatusWhyMetricsAndPageShowWhatBerthDoes runs berth against Pebble
// with one served host and one skipped container, then reads berth's own
// account of it: "berth status --json", "berth why", "berth health",
// /metrics (values checked against nginx's log and the served
// certificate) and the status page in headless Chromium.
func TestStatusWhyMetricsAndPageShowWhatBerthDoes(t *testing.T) {
	s, ca, base := newObservedPebbleStack(t)
	roots := ca.IssuerRoots(t)
	s.run(backend{name: "web", labels: []string{"proxy.host=secure.test", "proxy.acme=on"}})
	elsewhere := s.createNetwork("berth-e2e-" + s.id + "-elsewhere")
	lost := s.run(backend{name: "lost", labels: []string{"proxy.host=lost.test"}, network: elsewhere})

	var served *tls.ConnectionState
	testenv.Eventually(t, certDeadline, func() error {
		cs, err := s.servedTLS("secure.test", "web", roots)
		served = cs
		return err
	})
	leaf := served.PeerCertificates[0]

	// berth status --json: the skipped container with its reason, and the
	// certificate Pebble issued, linked to its host.
	var snap status.Snapshot
	testenv.Eventually(t, converge, func() error {
		out, err := s.berthCLI("status", "--json")
		if err != nil {
			return err
		}
		snap = status.Snapshot{}
		if err := json.Unmarshal([]byte(out), &snap); err != nil {
			return fmt.Errorf("status --json: %w:\n%s", err, out)
		}
		if len(snap.Certificates) != 1 || len(snap.Hosts) == 0 {
			return fmt.Errorf("status --json: %d certificates, %d hosts, want 1 and some", len(snap.Certificates), len(snap.Hosts))
		}
		return nil
	})
	if !snap.Healthy || snap.Nginx.Container != s.nginx || snap.Nginx.Version != "1.22.1" {
		t.Errorf("status: healthy=%v (%s), nginx %+v", snap.Healthy, snap.HealthReason, snap.Nginx)
	}
	if !hasSkipped(snap, lost, "shares no network with nginx") {
		t.Errorf("status --json does not name %s as skipped for sharing no network: %+v", lost, snap.Skipped)
	}
	cert := snap.Certificates[0]
	if cert.Name != "secure.test" || cert.Issuer != leaf.Issuer.CommonName || !cert.NotAfter.Equal(leaf.NotAfter) ||
		cert.Serial != leaf.SerialNumber.Text(16) || !cert.NextRenewal.After(time.Now()) {
		t.Errorf("status certificate %+v, served leaf %s from %q until %v", cert, leaf.SerialNumber.Text(16), leaf.Issuer.CommonName, leaf.NotAfter)
	}
	if h := hostNamed(snap, "secure.test"); h == nil || h.Certificate != "secure.test" || len(h.Paths) != 1 || len(h.Paths[0].Backends) != 1 ||
		!h.Paths[0].Backends[0].Ready || h.Paths[0].Backends[0].Address != s.ip("berth-e2e-"+s.id+"-web")+":80" {
		t.Errorf("status host secure.test = %+v", h)
	}

	// berth why, for the skipped container and for the served host.
	for name, want := range map[string][]string{
		lost:          {`Labels read: proxy.acme="off", proxy.host="lost.test".`, "Skipped: shares no network with nginx", elsewhere},
		"lost.test":   {"Host lost.test is not served, but container " + lost + " asks for it."},
		"secure.test": {"Path / goes to berth-e2e-" + s.id + "-web at ", "Certificate secure.test covers secure.test: issued by " + leaf.Issuer.CommonName},
	} {
		out, err := s.berthCLI("why", name)
		if err != nil {
			t.Errorf("berth why %s: %v", name, err)
			continue
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("berth why %s lacks %q:\n%s", name, w, out)
			}
		}
	}
	if out, err := s.berthCLI("status"); err != nil || !strings.Contains(out, "secure.test") || !strings.Contains(out, lost) {
		t.Errorf("berth status: %v\n%s", err, out)
	}
	if out, err := s.berthCLI("health"); err != nil || strings.TrimSpace(out) != "ok" {
		t.Errorf("berth health: %v %q", err, out)
	}

	// /metrics after the reloads and the issuance: berth's count of good
	// reloads is nginx's count of SIGHUPs, one order succeeded, and the
	// expiry is the served certificate's.
	testenv.Eventually(t, converge, func() error {
		m, err := scrape(base + "/metrics")
		if err != nil {
			return err
		}
		if got, want := m[`berth_reloads_total{result="ok"}`], float64(s.reloads()); got != want || got < 2 {
			return fmt.Errorf("berth_reloads_total{ok} = %v, nginx logged %v reloads (want equal, at least 2: the default server and the certificate)", got, want)
		}
		for series, want := range map[string]float64{
			`berth_reloads_total{result="rejected"}`:                            0,
			`berth_acme_orders_total{result="ok"}`:                              1,
			`berth_acme_orders_total{result="failed"}`:                          0,
			`berth_acme_order_duration_seconds_count`:                           1,
			`berth_certificate_not_after_timestamp_seconds{name="secure.test"}`: float64(leaf.NotAfter.Unix()),
			`berth_served_certificate_mismatch{name="secure.test"}`:             0,
			`berth_sites`:                   1,
			`berth_backends`:                1,
			`berth_docker_reconnects_total`: 0,
		} {
			if got, ok := m[series]; !ok || got != want {
				return fmt.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
			}
		}
		// The engine is shared: other tests' labelled containers are
		// skipped too (they share no network with this nginx).
		if m["berth_containers_skipped"] < 1 {
			return fmt.Errorf("berth_containers_skipped = %v, want at least the lost container", m["berth_containers_skipped"])
		}
		if last := m["berth_last_reload_timestamp_seconds"]; last < float64(time.Now().Add(-5*time.Minute).Unix()) {
			return fmt.Errorf("berth_last_reload_timestamp_seconds = %v, want within the test", last)
		}
		renew := m[`berth_certificate_renewal_timestamp_seconds{name="secure.test"}`]
		if renew <= float64(time.Now().Unix()) || renew >= float64(leaf.NotAfter.Unix()) {
			return fmt.Errorf("renewal at %v, want between now and expiry %v", renew, leaf.NotAfter.Unix())
		}
		for _, series := range []string{"berth_docker_events_total", "berth_pass_duration_seconds_count", "go_goroutines", "process_resident_memory_bytes"} {
			if m[series] <= 0 {
				return fmt.Errorf("%s = %v, want > 0", series, m[series])
			}
		}
		return nil
	})

	for path, want := range map[string]string{"/healthz": "ok", "/status": `"name": "secure.test"`} {
		code, body, err := httpGet(base + path)
		if err != nil || code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d %v, lacks %q", path, code, err, want)
		}
	}

	t.Run("status page in headless Chromium", func(t *testing.T) {
		checkStatusPage(t, base+"/", []string{"secure.test", lost, "shares no network with nginx", leaf.Issuer.CommonName})
	})

	// The image's HEALTHCHECK runs "berth health": Docker's first probe
	// comes one interval (30 s) after the start.
	testenv.Eventually(t, berthHealthDeadline, func() error {
		if h := s.health(s.berth); h != "healthy" {
			return fmt.Errorf("docker reports berth %q, want healthy", h)
		}
		return nil
	})
}

// berthHealthDeadline covers the image's HEALTHCHECK interval (30 s) plus a
// slow probe on a busy engine.
const berthHealthDeadline = 75 * time.Second

func hasSkipped(s status.Snapshot, container, reason string) bool {
	for _, p := range s.Skipped {
		if p.Container == container && strings.Contains(p.Reason, reason) {
			return true
		}
	}
	return false
}

func hostNamed(s status.Snapshot, host string) *status.Host {
	for i := range s.Hosts {
		if s.Hosts[i].Host == host {
			return &s.Hosts[i]
		}
	}
	return nil
}

func httpGet(url string) (int, string, error) {
	c := &http.Client{Timeout: requestTimeout}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// scrape reads a Prometheus text exposition into series → value, the
// series spelled as in the exposition (name{labels}).
func scrape(url string) (map[string]float64, error) {
	code, body, err := httpGet(url)
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("GET %s: %d", url, code)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}
