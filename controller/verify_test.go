package controller

import (
	"crypto/tls"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
)

// nginxTLS stands in for nginx's port 443: it serves whichever certificate
// the test says nginx has loaded.
func nginxTLS(t *testing.T) (port string, serve func(chain, key []byte) string) {
	var current atomic.Pointer[tls.Certificate]
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return current.Load(), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	_, port, _ = net.SplitHostPort(ln.Addr().String())
	return port, func(chain, key []byte) string {
		pair, err := tls.X509KeyPair(chain, key)
		if err != nil {
			t.Fatal(err)
		}
		current.Store(&pair)
		return pair.Leaf.SerialNumber.Text(16)
	}
}

func TestAfterAReloadBerthChecksTheServedCertificateAndSignalsAgainUntilItMatches(t *testing.T) {
	c, eng := newTestController(t, svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80))
	port, serve := nginxTLS(t)
	c.nginx.httpsPort = port
	eng.containers[1].Networks = map[string]string{"front": "127.0.0.1"} // nginx's address
	oldChain, oldKey, _ := testenv.SelfSigned(t, "a.test", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	newChain, newKey, newLeaf := testenv.SelfSigned(t, "a.test", time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour))
	serve(oldChain, oldKey) // nginx has not picked up the renewal
	certs := &fakeCerts{certs: map[string]CertFiles{"a.test": {Chain: "/c/v2/fullchain.pem", Key: "/c/v2/privkey.pem", Serial: newLeaf.SerialNumber.Text(16)}}}
	c.opts.Certs = certs

	if again := passAt(c, 0); again != verifyDelay {
		t.Fatalf("after a reload with a new certificate the next pass is in %v, want the check in %v", again, verifyDelay)
	}
	for i := 1; i <= resignalAfter; i++ {
		if again := passAt(c, i); again == 0 {
			t.Fatalf("check %d: the old certificate is served but no retry is scheduled", i)
		}
	}
	signals := eng.signals
	passAt(c, resignalAfter+1)
	if eng.signals != signals+1 {
		t.Fatalf("after %d checks found the old certificate: %d reloads, want the signal sent again", resignalAfter, eng.signals-signals)
	}
	serve(newChain, newKey) // nginx now serves the stored certificate
	if again := passAt(c, resignalAfter+2); again != 0 || len(c.verify) != 0 {
		t.Fatalf("the matching certificate did not end the check: next in %v, pending %v", again, c.verify)
	}
	if again := passAt(c, resignalAfter+3); again != 0 || eng.signals != signals+1 {
		t.Fatalf("an unchanged, confirmed state still works: next %v, reloads %d", again, eng.signals-signals)
	}
}
