package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/berthproxy/berth/internal/testenv"
)

// Helpers for the per-service options of issue 7: uploads, slow answers,
// basic auth, spoofed client addresses, gRPC through nginx and IPv6.

// uploadTimeout bounds one upload or slow request: a 5 MB body or a
// backend told to sleep takes longer than requestTimeout allows. It is a
// bound on hanging, not an assertion on speed.
const uploadTimeout = 20 * time.Second

// ipv6Subnet is a stack's own IPv6 subnet (inside the fd12:3456:789a::/48
// of ENVIRONMENT.md), so concurrent stacks do not claim the same pool.
func ipv6Subnet(id string) string { return "fd12:3456:789a:" + id[:4] + "::/64" }

// field returns the value of key=value in the backend's echo line, or "".
func (r reply) field(key string) string {
	for _, f := range strings.Fields(r.body) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// request is one HTTP request to nginx's published port 80.
type request struct {
	method  string // empty means GET
	host    string
	path    string
	header  http.Header
	size    int64         // bytes of body to send (zeros); 0 sends none
	timeout time.Duration // 0 means requestTimeout
}

// send sends rq to nginx's port 80 on 127.0.0.1.
func (s *stack) send(rq request) (reply, error) {
	s.mu.Lock()
	port := s.port
	s.mu.Unlock()
	if rq.method == "" {
		rq.method = http.MethodGet
	}
	if rq.timeout == 0 {
		rq.timeout = requestTimeout
	}
	var body io.Reader
	if rq.size > 0 {
		body = io.LimitReader(zeros{}, rq.size)
	}
	req, err := http.NewRequest(rq.method, "http://127.0.0.1:"+port+rq.path, body)
	if err != nil {
		return reply{}, err
	}
	req.ContentLength = rq.size
	req.Host = rq.host
	for k, vs := range rq.header {
		req.Header[k] = vs
	}
	client := newClient(rq.timeout)
	if rq.size > 0 {
		// As curl does for large bodies: nginx answers a body over the
		// limit with 413 before it is sent, instead of closing the
		// connection under a client still writing (a reset, not a 413).
		req.Header.Set("Expect", "100-continue")
		client.Transport.(*http.Transport).ExpectContinueTimeout = rq.timeout
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s%s: %w", rq.method, rq.host, rq.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return reply{}, fmt.Errorf("read body of %s%s: %w", rq.host, rq.path, err)
	}
	return reply{status: resp.StatusCode, body: string(b), header: resp.Header}, nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// upload POSTs size bytes to host+path. A body that reached the backend
// whole comes back as bytes=<size> (reply.field("bytes")).
func (s *stack) upload(host, path string, size int64) (reply, error) {
	return s.send(request{method: http.MethodPost, host: host, path: path, size: size, timeout: uploadTimeout})
}

// getSlow is get with a longer deadline, for /sleep/<d> paths that the
// backend answers late (or nginx answers 504).
func (s *stack) getSlow(host, path string) (reply, error) {
	return s.send(request{host: host, path: path, timeout: uploadTimeout})
}

// getAuth sends GET with HTTP basic auth credentials.
func (s *stack) getAuth(host, path, user, password string) (reply, error) {
	h := http.Header{}
	req := http.Request{Header: h}
	req.SetBasicAuth(user, password)
	return s.send(request{host: host, path: path, header: h})
}

// getSpoofing sends GET claiming to come from addr in X-Forwarded-For and
// X-Real-IP: an allow-list must judge the peer, not these headers (unless
// the peer is a trusted proxy).
func (s *stack) getSpoofing(host, path, addr string) (reply, error) {
	h := http.Header{"X-Forwarded-For": {addr}, "X-Real-Ip": {addr}}
	return s.send(request{host: host, path: path, header: h})
}

// putChallengeToken writes an HTTP-01 token file into the shared webroot,
// as lego would; GET /.well-known/acme-challenge/<token> then answers content.
func (s *stack) putChallengeToken(token, content string) {
	s.t.Helper()
	dir := webrootDir + "/.well-known/acme-challenge"
	if _, err := s.exec("mkdir -p " + dir + " && printf %s '" + content + "' > " + dir + "/" + token); err != nil {
		s.t.Fatal(err)
	}
}

// ip6 returns a container's global IPv6 address on the stack's network
// (a stack made with stackOptions.ipv6).
func (s *stack) ip6(container string) string {
	s.t.Helper()
	ip := testenv.Docker(s.t, "inspect", "--format",
		`{{with index .NetworkSettings.Networks "`+s.network+`"}}{{.GlobalIPv6Address}}{{end}}`, container)
	if a := net.ParseIP(ip); a == nil || a.To4() != nil {
		s.t.Fatalf("IPv6 address of %s on %s: %q", container, s.network, ip)
	}
	return ip
}

// curl sends GET url with Host header host from inside the nginx
// container, for addresses the host may not send to (IPv6 addresses on
// the stack's network). url may hold a bracketed IPv6 literal.
func (s *stack) curl(url, host string) (reply, error) {
	const mark = "\n--status="
	out, err := s.exec("curl -sS -g --max-time 2 -H 'Host: " + host + "' -w '" + mark + "%{http_code}' '" + url + "'")
	if err != nil {
		return reply{}, err
	}
	body, code, ok := strings.Cut(out, strings.TrimPrefix(mark, "\n"))
	if !ok {
		return reply{}, fmt.Errorf("curl %s: no status in %q", url, out)
	}
	var status int
	if _, err := fmt.Sscan(code, &status); err != nil {
		return reply{}, fmt.Errorf("curl %s: status %q: %w", url, code, err)
	}
	return reply{status: status, body: strings.TrimSuffix(body, "\n")}, nil
}

// grpcReply is the answer to one unary gRPC call through nginx.
type grpcReply struct {
	status     int    // HTTP status
	grpcStatus string // the grpc-status trailer (or header, for an immediate error)
	message    string // the one message of the backend's answer, e.g. "name=rpc port=50051 path=/x.Y/Z"
}

// grpcCall sends a unary gRPC call (POST path, content type
// application/grpc, one empty message) over HTTPS and HTTP/2 to nginx's
// published port 443 with SNI and :authority host. roots verifies nginx's
// certificate; nil skips verification (a host without a trusted certificate).
func (s *stack) grpcCall(host, path string, roots *x509.CertPool) (grpcReply, error) {
	s.mu.Lock()
	addr := "127.0.0.1:" + s.tlsPort
	s.mu.Unlock()
	tr := &http2.Transport{
		TLSClientConfig: &tls.Config{ServerName: host, RootCAs: roots, InsecureSkipVerify: roots == nil, NextProtos: []string{"h2"}},
		DialTLSContext: func(ctx context.Context, network, _ string, cfg *tls.Config) (net.Conn, error) {
			d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: requestTimeout}, Config: cfg}
			return d.DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodPost, "https://"+host+path, strings.NewReader("\x00\x00\x00\x00\x00"))
	if err != nil {
		return grpcReply{}, err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	resp, err := (&http.Client{Transport: tr, Timeout: requestTimeout}).Do(req)
	if err != nil {
		return grpcReply{}, fmt.Errorf("gRPC %s%s: %w", host, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return grpcReply{}, fmt.Errorf("read gRPC answer of %s%s: %w", host, path, err)
	}
	r := grpcReply{status: resp.StatusCode, grpcStatus: resp.Trailer.Get("Grpc-Status")}
	if r.grpcStatus == "" {
		r.grpcStatus = resp.Header.Get("Grpc-Status") // trailers-only answer
	}
	if len(body) >= 5 && body[0] == 0 && int(binary.BigEndian.Uint32(body[1:5])) == len(body)-5 {
		r.message = string(body[5:])
	} else if len(body) > 0 {
		return r, fmt.Errorf("gRPC %s%s = %d, body %q is not one uncompressed message", host, path, resp.StatusCode, body)
	}
	return r, nil
}

// TestBackendAnswersOverIPv6 checks the harness itself: on a dual-stack
// network the test backend answers on its IPv6 address, plain and in gRPC
// mode, so an IPv6 e2e test that fails points at berth or nginx.
func TestBackendAnswersOverIPv6(t *testing.T) {
	s := newStackWith(t, stackOptions{ipv6: true})
	web := s.run(backend{name: "web6", env: []string{"PORTS=8080", "GRPC_PORTS=50051"}, expose: []string{"8080", "50051"}})
	addr := s.ip6(web)
	for _, port := range []string{"8080", "50051"} {
		url := "http://[" + addr + "]:" + port + "/api/x"
		var r reply
		testenv.Eventually(t, converge, func() (err error) {
			r, err = s.curl(url, "v6.test")
			return err
		})
		if r.status != 200 || r.backend() != "web6" || r.field("port") != port || r.field("path") != "/api/x" {
			t.Errorf("GET %s = %v, want 200 from web6 on port %s with path=/api/x", url, r, port)
		}
	}
}

// TestGRPCCallReachesABackendThroughNginx checks grpcCall and the
// backend's gRPC mode against a grpc_pass server written by hand (a user
// file in conf.d, which berth leaves alone), before berth renders one.
func TestGRPCCallReachesABackendThroughNginx(t *testing.T) {
	s := newStack(t)
	rpc := s.run(backend{name: "rpc", env: []string{"GRPC_PORTS=50051"}, expose: []string{"50051"}})
	certPEM, keyPEM, cert := testenv.SelfSigned(t, "grpc.test", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	conf := fmt.Sprintf(`server {
    listen 443 ssl http2;
    server_name grpc.test;
    ssl_certificate /etc/nginx/grpc-test.crt;
    ssl_certificate_key /etc/nginx/grpc-test.key;
    location / { grpc_pass grpc://%s:50051; }
}
`, s.ip(rpc))
	for name, content := range map[string][]byte{"/etc/nginx/grpc-test.crt": certPEM, "/etc/nginx/grpc-test.key": keyPEM, confDir + "/user-grpc.conf": []byte(conf)} {
		cmd := exec.Command("docker", "exec", "-i", s.nginx, "sh", "-c", "cat > "+name)
		cmd.Stdin = bytes.NewReader(content)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("write %s: %v: %s", name, err, out)
		}
	}
	if out, err := s.exec("nginx -t && nginx -s reload"); err != nil {
		t.Fatalf("reload with a grpc_pass server: %v: %s", err, out)
	}
	var r grpcReply
	testenv.Eventually(t, converge, func() (err error) {
		r, err = s.grpcCall("grpc.test", "/berth.Echo/Hello", roots)
		if err == nil && (r.status != 200 || r.grpcStatus != "0") {
			err = fmt.Errorf("gRPC answer %+v, want 200 and grpc-status 0", r)
		}
		return err
	})
	if want := "name=rpc port=50051 path=/berth.Echo/Hello"; r.message != want {
		t.Errorf("gRPC message %q, want %q", r.message, want)
	}
}

// TestRequestHelpersReachTheBackend checks upload, getSlow and getSpoofing
// through berth's nginx: the body arrives whole, the slow path answers
// late, and a spoofed client address is replaced before the backend.
func TestRequestHelpersReachTheBackend(t *testing.T) {
	s := newStack(t)
	s.run(backend{name: "web", labels: []string{"proxy.host=helpers.test"}})
	s.expectServed("helpers.test", "/", "web")

	if r, err := s.upload("helpers.test", "/up", 64<<10); err != nil || r.status != 200 || r.field("bytes") != "65536" {
		t.Errorf("upload of 64 KiB = %v, %v; want 200 with bytes=65536", r, err)
	}
	if r, err := s.getSlow("helpers.test", "/sleep/1s"); err != nil || r.status != 200 || r.field("slept") != "1s" {
		t.Errorf("GET /sleep/1s = %v, %v; want 200 with slept=1s", r, err)
	}
	r, err := s.getSpoofing("helpers.test", "/", "203.0.113.9")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.header.Get("Echo-X-Real-Ip"); got == "" || got == "203.0.113.9" {
		t.Errorf("backend saw X-Real-IP %q for a client claiming 203.0.113.9, want the peer address", got)
	}
}
