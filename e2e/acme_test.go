package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
)

// certDeadline bounds a first certificate: the order and a real HTTP-01
// validation through nginx against Pebble (a few seconds per name, as lego
// waits between polls), plus reload pacing.
const certDeadline = 60 * time.Second

// pebbleRoots is where the berth container finds the CA of Pebble's TLS
// certificate.
const pebbleRoots = "/etc/berth-test/pebble-roots.pem"

// newPebbleStack starts Pebble and challtestsrv as containers on a stack
// whose berth uses them as its CA. newStack is newStackWith or a variant.
func newPebbleStack[T testing.TB](t T, newStack func(T, stackOptions) *stack) (*stack, *testenv.PebbleInContainers) {
	var ca *testenv.PebbleInContainers
	s := newStack(t, stackOptions{berth: func(s *stack) []string {
		// Pebble's DNS answers every name with nginx's address, so its VA
		// fetches the HTTP-01 token through nginx like Let's Encrypt would.
		ca = testenv.PebbleContainers(t, s.network, s.ip(s.nginx), testenv.PebbleOptions{})
		return []string{"--network", s.network,
			"-v", ca.RootsFile + ":" + pebbleRoots + ":ro",
			"-e", "BERTH_ACME_CA=" + ca.DirectoryURL,
			"-e", "BERTH_ACME_CA_ROOTS=" + pebbleRoots}
	}})
	return s, ca
}

func TestCertificateIsIssuedServedAndKeptAcrossRestart(t *testing.T) {
	s, ca := newPebbleStack(t, func(t *testing.T, o stackOptions) *stack { return newStackWith(t, o) })
	roots := ca.IssuerRoots(t)
	s.run(backend{name: "web", labels: []string{"proxy.host=secure.test", "proxy.acme=on"}})

	start := time.Now()
	var state *tls.ConnectionState
	testenv.Eventually(t, certDeadline, func() error {
		r, cs, err := s.getTLS("secure.test", "/", roots)
		if err != nil {
			return err
		}
		if r.status != 200 || r.backend() != "web" {
			return fmt.Errorf("GET https://secure.test/ = %v, want 200 from web", r)
		}
		state = cs
		return nil
	})
	leaf := state.PeerCertificates[0]
	t.Logf("https://secure.test/ served after %v with a certificate from %q, %s",
		since(start), leaf.Issuer.CommonName, state.NegotiatedProtocol)

	// proxy.https defaults to redirect: plain HTTP answers 301 to the same
	// URL on HTTPS, except the challenge path, which renewals need.
	testenv.Eventually(t, converge, func() error {
		r, err := s.get("secure.test", "/x?y=1")
		if err != nil {
			return err
		}
		if loc := r.header.Get("Location"); r.status != 301 || loc != "https://secure.test/x?y=1" {
			return fmt.Errorf("GET http://secure.test/x?y=1 = %d Location %q, want 301 to https://secure.test/x?y=1", r.status, loc)
		}
		return nil
	})
	if r, err := s.get("secure.test", "/.well-known/acme-challenge/no-such-token"); err != nil || r.status == 301 {
		t.Errorf("challenge path over HTTP = %v %v, want it served from the webroot, not redirected", r, err)
	}
	if err := s.handshake("unknown.test"); err == nil {
		t.Errorf("TLS handshake for an unknown SNI succeeded, want it rejected")
	}

	// Restarting berth, nginx or the service must neither order again nor
	// replace the certificate.
	web := "berth-e2e-" + s.id + "-web"
	for _, who := range []string{s.berth, s.nginx, web} {
		orders := ca.Orders(t)
		restarted := time.Now()
		testenv.Docker(t, "restart", who)
		if who == s.nginx {
			s.refreshPort()
		}
		testenv.Eventually(t, converge, func() error {
			if who == s.berth {
				return s.loggedSince(restarted)
			}
			_, err := s.servedTLS("secure.test", "web", roots)
			return err
		})
		consistently(t, 3*time.Second, func() error {
			if n := ca.Orders(t); n != orders {
				return fmt.Errorf("Pebble has %d orders after %s restarted, had %d", n, who, orders)
			}
			cs, err := s.servedTLS("secure.test", "web", roots)
			if err != nil {
				return err
			}
			if got := cs.PeerCertificates[0]; !got.Equal(leaf) {
				return fmt.Errorf("after %s restarted the certificate changed: serial %s, was %s", who, got.SerialNumber, leaf.SerialNumber)
			}
			return nil
		})
	}
}

// servedTLS is nil-error when https://host/ answers 200 from backend name
// with a chain that verifies against roots.
func (s *stack) servedTLS(host, name string, roots *x509.CertPool) (*tls.ConnectionState, error) {
	r, cs, err := s.getTLS(host, "/", roots)
	if err != nil {
		return nil, err
	}
	if r.status != 200 || r.backend() != name {
		return nil, fmt.Errorf("GET https://%s/ = %v, want 200 from %s", host, r, name)
	}
	return cs, nil
}
