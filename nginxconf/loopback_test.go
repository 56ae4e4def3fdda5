package nginxconf

// Helpers of the integration tests: a loopback nginx, echo backends, an
// HTTP client that talks to them, and self-signed certificates.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
)

// loopback is a host nginx on a fresh prefix with its own loopback ports.
type loopback struct {
	bin, prefix, httpPort, httpsPort string
}

func newLoopback(t *testing.T) loopback {
	bin := testenv.RequireNginx(t)
	httpPort, httpsPort := freePorts(t)
	return loopback{bin: bin, prefix: nginxPrefix(t, testenv.NginxBuild(t, bin, "-V")), httpPort: httpPort, httpsPort: httpsPort}
}

// start renders cfg with this nginx's listen addresses and webroot, writes
// it and runs nginx until the test ends.
func (l loopback) start(t *testing.T, cfg Config) {
	t.Helper()
	cfg.HTTPListen, cfg.HTTPSListen = "127.0.0.1:"+l.httpPort, "127.0.0.1:"+l.httpsPort
	cfg.Webroot = filepath.Join(l.prefix, "webroot")
	applyConfig(t, l.prefix, cfg)
	startNginx(t, l.bin, l.prefix, l.httpPort)
}

func (l loopback) httpURL() string  { return "http://127.0.0.1:" + l.httpPort }
func (l loopback) httpsURL() string { return "https://127.0.0.1:" + l.httpsPort }

// echo is what an echo backend saw of a request.
type echo struct {
	Backend, Host, URI, XFF, Proto, FwdHost, FwdPort, RealIP string
	// Headers berth must never pass on from a client.
	Forwarded, FwdSSL, Proxy string
}

// echoBackend starts a loopback HTTP server that answers with its name and
// the request's forwarding headers, and returns its address.
func echoBackend(t *testing.T, name string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(echo{
			Backend: name, Host: r.Host, URI: r.RequestURI,
			XFF: r.Header.Get("X-Forwarded-For"), Proto: r.Header.Get("X-Forwarded-Proto"),
			FwdHost: r.Header.Get("X-Forwarded-Host"), FwdPort: r.Header.Get("X-Forwarded-Port"),
			RealIP: r.Header.Get("X-Real-IP"), Forwarded: r.Header.Get("Forwarded"),
			FwdSSL: r.Header.Get("X-Forwarded-Ssl"), Proxy: r.Header.Get("Proxy"),
		})
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// newClient returns a client that opens a new connection per request (so
// no request rides a connection of a worker that is shutting down), never
// follows redirects and ignores proxy settings.
func newClient(tlsConfig *tls.Config) *http.Client {
	return &http.Client{
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: tlsConfig},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
}

// fetch sends GET base+path with the given Host header.
func fetch(client *http.Client, base, host, path string, header http.Header) (int, string, error) {
	status, body, _, err := fetchHeader(client, base, host, path, header)
	return status, body, err
}

func fetchHeader(client *http.Client, base, host, path string, header http.Header) (int, string, http.Header, error) {
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		return 0, "", nil, err
	}
	req.Host = host
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body), resp.Header, err
}

func get(t *testing.T, client *http.Client, base, host, path string, header http.Header) (int, string, http.Header) {
	t.Helper()
	status, body, hdr, err := fetchHeader(client, base, host, path, header)
	if err != nil {
		t.Fatalf("Host %s, GET %s: %v", host, path, err)
	}
	return status, body, hdr
}

// fetchEcho expects a 200 from an echo backend.
func fetchEcho(client *http.Client, base, host, path string, header http.Header) (echo, error) {
	var e echo
	status, body, err := fetch(client, base, host, path, header)
	if err != nil {
		return e, err
	}
	if status != http.StatusOK {
		return e, fmt.Errorf("Host %s, GET %s: status %d: %q", host, path, status, body)
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		return e, fmt.Errorf("Host %s, GET %s: not a backend's answer: %q", host, path, body)
	}
	return e, nil
}

func mustEcho(t *testing.T, client *http.Client, base, host, path string, header http.Header) echo {
	t.Helper()
	e, err := fetchEcho(client, base, host, path, header)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// freePorts returns two distinct free loopback ports. Both listeners stay
// open until both are chosen, so the kernel cannot hand out one port twice.
func freePorts(t *testing.T) (string, string) {
	t.Helper()
	var ports []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		_, port, _ := net.SplitHostPort(l.Addr().String())
		ports = append(ports, port)
	}
	return ports[0], ports[1]
}

// certificate is a self-signed certificate written under a prefix.
type certificate struct {
	host  string
	files *TLS
	pool  *x509.CertPool // trusts exactly this certificate
}

func certFor(t *testing.T, prefix, host string) certificate {
	dir := filepath.Join(prefix, "certs", host)
	files := &TLS{CertFile: filepath.Join(dir, "fullchain.pem"), KeyFile: filepath.Join(dir, "privkey.pem")}
	pool := x509.NewCertPool()
	pool.AddCert(writeSelfSigned(t, files, host))
	return certificate{host: host, files: files, pool: pool}
}

// writeSelfSigned writes a fresh ECDSA P-256 key and a self-signed
// certificate for host, valid from an hour ago for a day, as PEM files.
func writeSelfSigned(t *testing.T, files *TLS, host string) *x509.Certificate {
	t.Helper()
	certPEM, keyPEM, cert := testenv.SelfSigned(t, host, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	writeFile(t, files.CertFile, string(certPEM), 0o644)
	writeFile(t, files.KeyFile, string(keyPEM), 0o600)
	return cert
}

// writeFile creates path's directories (world-readable) and writes data.
func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}
