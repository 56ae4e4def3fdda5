package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
)

// HTTP and TLS through nginx's published ports, and the assertions built
// on them.

func newClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:             nil, // never through a proxy from the environment
			DialContext:       (&net.Dialer{Timeout: timeout}).DialContext,
			DisableKeepAlives: true, // a reload must not surface as a reset on a reused connection
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// reply is one HTTP answer from nginx.
type reply struct {
	status int
	body   string
	header http.Header
}

// berthPage reports whether r is berth's own error page for status (e.g.
// "503 Service Unavailable"): HTML that names neither nginx nor a version.
func berthPage(r reply, status string) bool {
	return strings.Contains(r.body, "<title>"+status+"</title>") && !strings.Contains(strings.ToLower(r.body), "nginx") &&
		!strings.ContainsAny(r.header.Get("Server"), "0123456789")
}

func (r reply) String() string { return fmt.Sprintf("%d %q", r.status, r.body) }

// backend returns the NAME of the backend that produced the body, or "".
func (r reply) backend() string {
	for _, f := range strings.Fields(r.body) {
		if name, ok := strings.CutPrefix(f, "name="); ok {
			return name
		}
	}
	return ""
}

// get sends GET path with the given Host header to nginx's published port.
func (s *stack) get(host, path string) (reply, error) {
	s.mu.Lock()
	port := s.port
	s.mu.Unlock()
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+port+path, nil)
	if err != nil {
		return reply{}, err
	}
	req.Host = host
	resp, err := s.client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return reply{}, fmt.Errorf("read body of %s%s: %w", host, path, err)
	}
	return reply{status: resp.StatusCode, body: string(body), header: resp.Header}, nil
}

// getTLS sends GET https://host/path to nginx's published port 443, with
// SNI host, trusting only roots. It also returns the TLS connection state.
func (s *stack) getTLS(host, path string, roots *x509.CertPool) (reply, *tls.ConnectionState, error) {
	s.mu.Lock()
	addr := "127.0.0.1:" + s.tlsPort
	s.mu.Unlock()
	return getTLSAt(addr, host, path, roots)
}

// getTLSAt sends GET https://host/path to addr, with SNI host, trusting
// only roots, following no redirect. It also returns the TLS connection
// state, so callers can check the certificate served on the wire.
func getTLSAt(addr, host, path string, roots *x509.CertPool) (reply, *tls.ConnectionState, error) {
	client := &http.Client{
		Timeout: requestTimeout,
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{Timeout: requestTimeout}).DialContext(ctx, network, addr)
			},
			TLSClientConfig:   &tls.Config{ServerName: host, RootCAs: roots},
			ForceAttemptHTTP2: true,
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Get("https://" + host + path)
	if err != nil {
		return reply{}, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return reply{}, nil, fmt.Errorf("read body of https://%s%s: %w", host, path, err)
	}
	return reply{status: resp.StatusCode, body: string(body), header: resp.Header}, resp.TLS, nil
}

// handshake completes a TLS handshake with nginx's port 443 for SNI
// serverName, without verifying the certificate.
func (s *stack) handshake(serverName string) error {
	s.mu.Lock()
	addr := "127.0.0.1:" + s.tlsPort
	s.mu.Unlock()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: requestTimeout}, "tcp", addr,
		&tls.Config{ServerName: serverName, InsecureSkipVerify: true})
	if err != nil {
		return err
	}
	return conn.Close()
}

// servedBy is nil when host+path answers 200 from backend name.
func (s *stack) servedBy(host, path, name string) (reply, error) {
	r, err := s.get(host, path)
	if err != nil {
		return r, err
	}
	if r.status != http.StatusOK || r.backend() != name {
		return r, fmt.Errorf("GET %s%s = %v, want 200 from %s", host, path, r, name)
	}
	return r, nil
}

// noVhost is nil when host answers 503 without any backend content.
func (s *stack) noVhost(host string) error {
	r, err := s.get(host, "/")
	if err != nil {
		return err
	}
	if r.status != http.StatusServiceUnavailable || r.backend() != "" {
		return fmt.Errorf("GET %s/ = %v, want 503 without backend content", host, r)
	}
	return nil
}

// expectServed waits until host+path answers 200 from backend name.
func (s *stack) expectServed(host, path, name string) reply {
	s.t.Helper()
	var got reply
	start := time.Now()
	testenv.Eventually(s.t, converge, func() (err error) {
		got, err = s.servedBy(host, path, name)
		return err
	})
	s.t.Logf("%s%s served by %s after %v", host, path, name, since(start))
	return got
}

// expectNoVhost waits until host answers 503 without backend content.
func (s *stack) expectNoVhost(host string) {
	s.t.Helper()
	start := time.Now()
	testenv.Eventually(s.t, converge, func() error { return s.noVhost(host) })
	s.t.Logf("%s answered 503 after %v", host, since(start))
}

// consistently fails the test as soon as cond fails during d. It asserts
// that something does not happen, where Eventually waits for it.
func consistently(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := cond(); err != nil {
			t.Fatalf("changed within %v: %v", d, err)
		}
		if time.Now().After(deadline) {
			return
		}
		<-tick.C
	}
}

// watcher polls one host in the background and records every answer that
// is not 200 from the expected backend.
type watcher struct {
	stop     chan struct{}
	done     chan struct{}
	requests int
	failures []string // the first few, for the failure message
	failed   int
}

// watch starts polling host every 20 ms.
func (s *stack) watch(host, name string) *watcher {
	w := &watcher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			w.requests++
			if _, err := s.servedBy(host, "/", name); err != nil {
				w.failed++
				if len(w.failures) < 5 {
					w.failures = append(w.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
				}
			}
		}
	}()
	return w
}

// finish stops the watcher and fails the test if any request failed.
func (w *watcher) finish(t testing.TB) {
	t.Helper()
	close(w.stop)
	<-w.done
	if w.failed > 0 {
		t.Errorf("%d of %d requests to the good host failed, first ones:\n%s", w.failed, w.requests, strings.Join(w.failures, "\n"))
	} else {
		t.Logf("%d requests to the good host, all served", w.requests)
	}
}
