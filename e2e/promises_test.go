package e2e

// The README's promises, checked where the user sees them: the certificate
// on the wire after a renewal, the status a client gets from a stopped
// service, which nginx berth talks to, and that "berth render" shows what the
// daemon writes.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
)

// shortLifetime is the lifetime of the certificates of the renewal test:
// berth renews certificates under 10 days at half their life, so the
// renewal comes about 30 s after issuance.
const shortLifetime = time.Minute

// newPebbleStackWith is newPebbleStack with Pebble options, extra berth
// arguments and stack options.
func newPebbleStackWith(t *testing.T, po testenv.PebbleOptions, berthArgs []string, so stackOptions) (*stack, *testenv.PebbleInContainers) {
	var ca *testenv.PebbleInContainers
	so.berth = func(s *stack) []string {
		ca = testenv.PebbleContainers(t, s.network, s.ip(s.nginx), po)
		return slices.Concat([]string{"--network", s.network,
			"-v", ca.RootsFile + ":" + pebbleRoots + ":ro",
			"-e", "BERTH_ACME_CA=" + ca.DirectoryURL,
			"-e", "BERTH_ACME_CA_ROOTS=" + pebbleRoots}, berthArgs)
	}
	return newStackWith(t, so), ca
}

// awaitCertificate waits until https://host/ answers from backend name with
// a chain that verifies against roots, and returns the leaf served.
func (s *stack) awaitCertificate(host, name string, roots *x509.CertPool) *x509.Certificate {
	s.t.Helper()
	var leaf *x509.Certificate
	testenv.Eventually(s.t, certDeadline, func() error {
		cs, err := s.servedTLS(host, name, roots)
		if err == nil {
			leaf = cs.PeerCertificates[0]
		}
		return err
	})
	return leaf
}

func TestARenewedCertificateIsServedWithoutRestartingNginx(t *testing.T) {
	s, ca := newPebbleStackWith(t, testenv.PebbleOptions{Profiles: map[string]time.Duration{"short": shortLifetime}},
		[]string{"-e", "BERTH_ACME_PROFILE=short"}, stackOptions{})
	roots := ca.IssuerRoots(t)
	s.run(backend{name: "web", labels: []string{"proxy.host=renew.test", "proxy.acme=on"}})
	first := s.awaitCertificate("renew.test", "web", roots)
	pid, started, _ := s.nginxProcesses()
	t.Logf("first certificate: serial %x, valid until %s", first.SerialNumber, first.NotAfter.Format(time.TimeOnly))

	// Handshakes all along the renewal: not one may fail.
	var handshakes, failed atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			handshakes.Add(1)
			if _, _, err := s.getTLS("renew.test", "/", roots); err != nil {
				failed.Add(1)
				firstFailure.CompareAndSwap(nil, err.Error())
			}
		}
	}()
	var renewed *x509.Certificate
	testenv.Eventually(t, shortLifetime+certDeadline, func() error {
		cs, err := s.servedTLS("renew.test", "web", roots)
		if err != nil {
			return err
		}
		if leaf := cs.PeerCertificates[0]; leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
			renewed = leaf
			return nil
		}
		return fmt.Errorf("nginx still serves serial %x (expires %s)", first.SerialNumber, first.NotAfter.Format(time.TimeOnly))
	})
	close(stop)
	wg.Wait()
	t.Logf("renewed: serial %x served %v before the first expired; %d handshakes during the renewal, %d failed",
		renewed.SerialNumber, first.NotAfter.Sub(time.Now()).Round(time.Second), handshakes.Load(), failed.Load())
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d TLS requests failed during the renewal; first: %v", n, handshakes.Load(), firstFailure.Load())
	}
	if pid2, started2, _ := s.nginxProcesses(); pid2 != pid || started2 != started {
		t.Errorf("nginx master pid %s started %s, now %s started %s: nginx was restarted, not reloaded", pid, started, pid2, started2)
	}
	// berth checked the wire itself and found what it stored.
	testenv.Eventually(t, converge, func() error {
		_, err := s.logLineWith("nginx serves the stored certificate", fmt.Sprintf("%x", renewed.SerialNumber))
		return err
	})
	if line, err := s.logLineWith("nginx does not serve the stored certificate"); err == nil {
		t.Logf("berth saw the old certificate once before the new one went live (retried): %s", line)
	}
}

func TestAStoppedContainerKeepsItsHostUntilItIsRemoved(t *testing.T) {
	s, ca := newPebbleStackWith(t, testenv.PebbleOptions{}, nil, stackOptions{})
	roots := ca.IssuerRoots(t)
	web := s.run(backend{name: "web", labels: []string{"proxy.host=stopped.test", "proxy.acme=on"}})
	s.awaitCertificate("stopped.test", "web", roots)
	// A known SNI with an unknown Host is a misdirected request.
	// Eventually: for a moment after the reload that added the certificate,
	// a connection may still land on an old nginx worker without it.
	testenv.Eventually(t, converge, func() error {
		if status, err := s.misdirected("stopped.test", "other.test", roots); err != nil || status != http.StatusMisdirectedRequest {
			return fmt.Errorf("HTTPS with SNI stopped.test and Host other.test = %d %v, want 421", status, err)
		}
		return nil
	})
	for _, action := range []string{"stop", "pause"} {
		testenv.Docker(t, action, web)
		testenv.Eventually(t, converge, func() error {
			r, cs, err := s.getTLS("stopped.test", "/", roots)
			if err != nil {
				return fmt.Errorf("HTTPS while the container is %sd: %w", action, err)
			}
			if r.status != http.StatusServiceUnavailable || !berthPage(r, "503 Service Unavailable") || !slices.Contains(cs.PeerCertificates[0].DNSNames, "stopped.test") {
				return fmt.Errorf("HTTPS while %sd = %v, want 503 from nginx with the host's certificate", action, r)
			}
			h, err := s.get("stopped.test", "/")
			if err != nil {
				return err
			}
			if h.status != http.StatusServiceUnavailable || !berthPage(h, "503 Service Unavailable") {
				return fmt.Errorf("HTTP while %sd = %v, want 503 from nginx", action, h)
			}
			return nil
		})
		if action == "stop" {
			testenv.Docker(t, "start", web)
		} else {
			testenv.Docker(t, "unpause", web)
		}
		testenv.Eventually(t, converge, func() error {
			_, err := s.servedTLS("stopped.test", "web", roots)
			return err
		})
	}
	testenv.Docker(t, "stop", web)
	s.rm(web)
	testenv.Eventually(t, converge, func() error {
		if err := s.handshake("stopped.test"); err == nil {
			return fmt.Errorf("TLS for stopped.test still succeeds after the container was removed")
		}
		return s.noVhost("stopped.test")
	})
}

// misdirected sends an HTTPS request with SNI sni and Host header host,
// returning the status.
func (s *stack) misdirected(sni, host string, roots *x509.CertPool) (int, error) {
	s.mu.Lock()
	addr := "127.0.0.1:" + s.tlsPort
	s.mu.Unlock()
	client := &http.Client{Timeout: requestTimeout, Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: requestTimeout}).DialContext(ctx, network, addr)
		},
		TLSClientConfig:   &tls.Config{ServerName: sni, RootCAs: roots},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequest(http.MethodGet, "https://"+sni+"/", nil)
	if err != nil {
		return 0, err
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// Without BERTH_NGINX_CONTAINER berth finds nginx by label: of the labelled
// containers, it keeps to those on its own network (another berth + nginx
// pair has its own), and one that is not nginx is never signalled.
func TestBerthFindsItsNginxByLabelAndNeverSignalsAnImpostor(t *testing.T) {
	var decoy, nginx2 string
	s := newStackWith(t, stackOptions{nginxArgs: []string{"--label", "proxy.nginx=true"}, berth: func(s *stack) []string {
		// A labelled backend on berth's network: a Go program that dies
		// on SIGHUP, so a signal would show.
		decoy = s.run(backend{name: "decoy", labels: []string{"proxy.nginx=true"}})
		// Another pair's nginx, labelled too, on a network berth is not on.
		other := s.createNetwork("berth-e2e-" + s.id + "-other")
		nginx2 = "berth-e2e-" + s.id + "-nginx2"
		s.runContainer(nginx2, "--network", other, "--label", "proxy.nginx=true", testenv.NginxImage(t, "bookworm"))
		return []string{"--network", s.network, "-e", "BERTH_ACME_CA=off", "-e", "BERTH_NGINX_CONTAINER="}
	}})
	s.run(backend{name: "web", labels: []string{"proxy.host=label.test"}})
	s.expectServed("label.test", "/", "web")
	if _, err := s.logLineWith("not show nginx", decoy); err != nil {
		t.Errorf("berth did not report the labelled container that is not nginx: %v", err)
	}
	if state := testenv.Docker(t, "inspect", "--format", "{{.State.Status}} {{.RestartCount}}", decoy); state != "running 0" {
		t.Errorf("decoy is %q: berth signalled or disturbed a container that is not nginx", state)
	}
	if line, err := s.logLineWith("pass failed"); err == nil {
		t.Errorf("a pass failed with several labelled containers around: %s", line)
	}
	if out, err := testenv.TryDocker("exec", nginx2, "sh", "-c", "ls /etc/nginx/conf.d"); err != nil || strings.Contains(out, "berth-") {
		t.Errorf("the other pair's nginx got berth's files: %q %v", out, err)
	}
}

// "berth render" runs the daemon's pipeline: with a certificate and an
// nginx that has HTTP/2 (1.30), it prints exactly the files on disk, TLS
// servers included.
func TestRenderPrintsWhatTheDaemonWritesWithTLSAndHTTP2(t *testing.T) {
	s, ca := newPebbleStackWith(t, testenv.PebbleOptions{}, nil, stackOptions{suite: "sid"})
	roots := ca.IssuerRoots(t)
	s.run(backend{name: "web", labels: []string{"proxy.host=render-tls.test", "proxy.acme=on"}})
	s.awaitCertificate("render-tls.test", "web", roots)
	out := testenv.Docker(t, slices.Concat([]string{"run", "--rm"}, testenv.LabelArgs(), []string{
		"--network", "none", "-v", "/var/run/docker.sock:/var/run/docker.sock",
		"-v", "berth-e2e-" + s.id + "-certs:" + certsDir, "-v", "berth-e2e-" + s.id + "-state:" + stateDir,
		"-e", "BERTH_NGINX_CONTAINER=" + s.nginx, "-e", "BERTH_ACME_CA=" + ca.DirectoryURL,
		testenv.BerthImage(t), "render"})...)
	printed := map[string]string{}
	for _, part := range strings.Split(out, "# ==> ")[1:] {
		name, body, _ := strings.Cut(part, " <==\n")
		printed[strings.TrimPrefix(name, confDir+"/")] = strings.TrimSpace(body)
	}
	listing, err := s.exec("cd " + confDir + " && ls berth-*.conf berth-*.inc")
	if err != nil {
		t.Fatal(err)
	}
	written := strings.Fields(listing)
	if got := slices.Sorted(maps.Keys(printed)); !slices.Equal(got, written) {
		t.Fatalf("render printed files %v, the daemon wrote %v", got, written)
	}
	for _, name := range written {
		data, err := s.exec("cat " + confDir + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(data) != printed[name] {
			t.Errorf("render printed for %s:\n%s\nthe daemon wrote:\n%s", name, printed[name], data)
		}
	}
	if site := printed["berth-render-tls.test.conf"]; !strings.Contains(site, "ssl_certificate ") || !strings.Contains(site, "http2 on;") {
		t.Errorf("the site as rendered has no TLS server with HTTP/2:\n%s", site)
	}
}

// A berth killed between creating a temporary file and renaming it leaves
// the temporary file behind; the next berth removes it.
func TestBerthRemovesTemporaryFilesAnInterruptedWriteLeft(t *testing.T) {
	s := newStack(t)
	leftover := confDir + "/.berth-x.test.conf.123456.tmp"
	if out, err := s.exec("echo half > " + leftover + " && touch -d 2020-01-01 " + leftover); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	restarted := time.Now()
	testenv.Docker(t, "restart", s.berth)
	testenv.Eventually(t, converge, func() error {
		if err := s.loggedSince(restarted); err != nil {
			return err
		}
		if out, _ := s.exec("ls -a " + confDir); strings.Contains(out, ".tmp") {
			return fmt.Errorf("conf.d still holds a temporary file: %s", out)
		}
		return nil
	})
	s.run(backend{name: "web", labels: []string{"proxy.host=leftover.test"}})
	s.expectServed("leftover.test", "/", "web")
}

// "berth renew --force" and "berth revoke" run as separate processes next
// to the daemon; what they change is on the wire within seconds.
func TestRenewAndRevokeFromTheCLIReachNginxWithinSeconds(t *testing.T) {
	s, ca := newPebbleStackWith(t, testenv.PebbleOptions{}, nil, stackOptions{})
	roots := ca.IssuerRoots(t)
	s.run(backend{name: "web", labels: []string{"proxy.host=cli.test", "proxy.acme=on"}})
	first := s.awaitCertificate("cli.test", "web", roots)
	if out, err := testenv.TryDocker("exec", s.berth, "/berth", "renew", "--force", "cli.test"); err != nil {
		t.Fatalf("berth renew --force: %v\n%s", err, out)
	}
	start := time.Now()
	testenv.Eventually(t, converge, func() error {
		cs, err := s.servedTLS("cli.test", "web", roots)
		if err != nil {
			return err
		}
		if cs.PeerCertificates[0].SerialNumber.Cmp(first.SerialNumber) == 0 {
			return fmt.Errorf("nginx still serves serial %x after berth renew --force", first.SerialNumber)
		}
		return nil
	})
	t.Logf("renewed certificate served %v after berth renew --force returned", since(start))
	if out, err := testenv.TryDocker("exec", s.berth, "/berth", "revoke", "cli.test"); err != nil {
		t.Fatalf("berth revoke: %v\n%s", err, out)
	}
	start = time.Now()
	testenv.Eventually(t, converge, func() error {
		if err := s.handshake("cli.test"); err == nil {
			return fmt.Errorf("nginx still serves a certificate for cli.test after berth revoke")
		}
		_, err := s.servedBy("cli.test", "/", "web")
		return err
	})
	t.Logf("revoked certificate out of service %v after berth revoke returned; plain HTTP still served", since(start))
}
