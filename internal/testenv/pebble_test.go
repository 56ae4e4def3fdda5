package testenv

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestStartPebbleServesTheDirectoryOverVerifiedTLS(t *testing.T) {
	start := time.Now()
	p := StartPebble(t, PebbleOptions{HTTPPort: unusedPort(t)})
	t.Logf("StartPebble took %v", time.Since(start).Round(time.Millisecond))

	dir := getDirectory(t, trustingClient(t, p.RootsFile), p.DirectoryURL)
	if !strings.HasPrefix(dir.NewOrder, "https://127.0.0.1:") || dir.RenewalInfo == "" {
		t.Errorf("directory: newOrder %q, renewalInfo %q", dir.NewOrder, dir.RenewalInfo)
	}
	if len(dir.Meta.Profiles) != 1 || dir.Meta.Profiles["default"] == "" || dir.Meta.ExternalAccountRequired {
		t.Errorf("directory meta %+v, want only the default profile and no EAB", dir.Meta)
	}
	if _, err := http.Get(p.DirectoryURL); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GET %s with the system roots: err %v, want a certificate error", p.DirectoryURL, err)
	}
	if got := p.Orders(t); got != 0 {
		t.Errorf("Orders() = %d before any order", got)
	}
}

func TestPebbleOptionsReachTheDirectory(t *testing.T) {
	p := StartPebble(t, PebbleOptions{
		HTTPPort: unusedPort(t),
		Profiles: map[string]time.Duration{"short": 2 * time.Minute, "long": 45 * 24 * time.Hour},
		EABKeys:  map[string]string{"kid-1": base64.RawURLEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))},
	})
	dir := getDirectory(t, trustingClient(t, p.RootsFile), p.DirectoryURL)
	if len(dir.Meta.Profiles) != 2 || dir.Meta.Profiles["short"] == "" || dir.Meta.Profiles["long"] == "" {
		t.Errorf("profiles %v, want short and long", dir.Meta.Profiles)
	}
	if !dir.Meta.ExternalAccountRequired {
		t.Error("externalAccountRequired is false with EAB keys configured")
	}
}

func TestPebbleIssuesThroughHTTP01OnLoopbackAndReportsItsState(t *testing.T) {
	var tokens sync.Map // token → key authorization
	var hosts sync.Map  // Host headers the VA sent
	challenge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts.Store(r.Host, true)
		token, ok := strings.CutPrefix(r.URL.Path, "/.well-known/acme-challenge/")
		if ka, found := tokens.Load(token); ok && found {
			io.WriteString(w, ka.(string))
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(challenge.Close)
	port := challenge.Listener.Addr().(*net.TCPAddr).Port
	p := StartPebble(t, PebbleOptions{HTTPPort: port, Profiles: map[string]time.Duration{"short": 2 * time.Minute}})
	c := newACMEClient(t, trustingClient(t, p.RootsFile), p.DirectoryURL)

	start := time.Now()
	chain := c.issue("a.berth.test", "short", func(token, keyAuth string) { tokens.Store(token, keyAuth) })
	t.Logf("issuance with real HTTP-01 took %v", time.Since(start).Round(time.Millisecond))
	if _, ok := hosts.Load(fmt.Sprintf("a.berth.test:%d", port)); !ok {
		var seen []any
		hosts.Range(func(k, _ any) bool { seen = append(seen, k); return true })
		t.Errorf("the VA did not ask the HTTPPort server for a.berth.test (hosts seen: %v)", seen)
	}
	if got := p.Orders(t); got != 1 {
		t.Errorf("Orders() = %d after one order", got)
	}
	leaf := verifyChain(t, chain, p.IssuerRoots(t), "a.berth.test")
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 119*time.Second || life > 2*time.Minute {
		t.Errorf("lifetime %v with the 2-minute profile", life)
	}

	// Pebble's own ARI window lies inside the lifetime.
	w := c.renewalInfo(leaf)
	if !w.Start.After(leaf.NotBefore.Add(-time.Second)) || w.End.After(leaf.NotAfter.Add(time.Second)) {
		t.Errorf("default ARI window %v–%v outside the lifetime %v–%v", w.Start, w.End, leaf.NotBefore, leaf.NotAfter)
	}
	if p.Revoked(t, chain) {
		t.Error("Revoked() is true before revocation")
	}
	c.revoke(leaf)
	if !p.Revoked(t, chain) {
		t.Error("Revoked() is false after revocation")
	}
	if w := c.renewalInfo(leaf); !w.End.Before(time.Now()) {
		t.Errorf("ARI window of a revoked certificate %v–%v is not in the past", w.Start, w.End)
	}

	from, to := time.Now().Add(-2*time.Hour).Truncate(time.Second), time.Now().Add(-time.Hour).Truncate(time.Second)
	p.SetRenewalInfo(t, chain, from, to)
	if w := c.renewalInfo(leaf); !w.Start.Equal(from) || !w.End.Equal(to) {
		t.Errorf("ARI window %v–%v after SetRenewalInfo(%v, %v)", w.Start, w.End, from, to)
	}
	p.SetRenewalInfoJSON(t, chain, `{}`)
	if body := c.renewalInfoBody(leaf); body != "{}" {
		t.Errorf("ARI body %q after SetRenewalInfoJSON(`{}`)", body)
	}

	c.issue("b.berth.test", "short", func(token, keyAuth string) { tokens.Store(token, keyAuth) })
	if got := p.Orders(t); got != 2 {
		t.Errorf("Orders() = %d after two orders", got)
	}
}

func TestPebbleAlwaysValidNeedsNoChallengeServer(t *testing.T) {
	p := StartPebble(t, PebbleOptions{HTTPPort: unusedPort(t), AlwaysValid: true})
	c := newACMEClient(t, trustingClient(t, p.RootsFile), p.DirectoryURL)
	chain := c.issue("always.berth.test", "default", func(string, string) {})
	leaf := verifyChain(t, chain, p.IssuerRoots(t), "always.berth.test")
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 89*24*time.Hour {
		t.Errorf("lifetime %v with the default profile, want 90 days", life)
	}
}

func TestPebbleContainersValidateThroughNginxOnTheNetwork(t *testing.T) {
	RequireDocker(t)
	network := testNetwork(t, "pebble")
	nginx, nginxIP := startWebrootNginx(t, network)

	start := time.Now()
	p := PebbleContainers(t, network, nginxIP, PebbleOptions{})
	t.Logf("PebbleContainers took %v", time.Since(start).Round(time.Millisecond))

	Docker(t, "cp", p.RootsFile, nginx+":/tmp/pebble-roots.pem")
	out := Docker(t, "exec", nginx, "curl", "-sS", "--fail", "--cacert", "/tmp/pebble-roots.pem", p.DirectoryURL)
	if want := `"newOrder": "https://` + p.Name + `:14000/order-plz"`; !strings.Contains(out, want) {
		t.Errorf("directory from the network lacks %s:\n%s", want, out)
	}
	if _, err := TryDocker("exec", nginx, "curl", "-sS", "--fail", p.DirectoryURL); err == nil {
		t.Error("curl without Pebble's roots succeeded: TLS is not verified")
	}
	if !bytes.Equal(readFile(t, p.RootsFile), p.RootsPEM) {
		t.Error("RootsFile and RootsPEM differ")
	}

	// A real HTTP-01 validation: Pebble's VA asks the DNS container, which
	// answers with nginx's address, and fetches the token from nginx.
	c := newACMEClient(t, trustingClient(t, p.RootsFile), p.HostDirectoryURL)
	chain := c.issue("www.berth.test", "default", webrootSolver(t, nginx))
	verifyChain(t, chain, p.IssuerRoots(t), "www.berth.test")
	if got := p.Orders(t); got != 1 {
		t.Errorf("Orders() = %d after one order", got)
	}
	if logs := Docker(t, "logs", nginx); !strings.Contains(logs, "GET /.well-known/acme-challenge/") {
		t.Errorf("nginx saw no challenge request:\n%s", logs)
	}
	p.SetAnswerIP(t, "192.0.2.7")
}

// webroot is where startWebrootNginx serves files from on port 80.
const webroot = "/srv/www"

// startWebrootNginx runs an nginx container on network that serves
// HTTP-01 tokens from webroot, and returns its name and address there.
func startWebrootNginx(t *testing.T, network string) (name, ip string) {
	img := NginxImage(t, "bookworm")
	name = network + "-nginx"
	args := append([]string{"run", "-d", "--name", name, "--network", network}, LabelArgs()...)
	Docker(t, append(args, img, "sh", "-c",
		"mkdir -p "+webroot+"/.well-known/acme-challenge && "+
			"echo 'server { listen 80; root "+webroot+"; }' > /etc/nginx/conf.d/acme.conf && "+
			`exec nginx -g "daemon off;"`)...)
	t.Cleanup(func() { TryDocker("rm", "-f", "-v", name) })
	ip = Docker(t, "inspect", "--format", `{{(index .NetworkSettings.Networks "`+network+`").IPAddress}}`, name)
	return name, ip
}

// webrootSolver publishes HTTP-01 key authorizations in the webroot of
// the startWebrootNginx container nginx.
func webrootSolver(t *testing.T, nginx string) func(token, keyAuth string) {
	return func(token, keyAuth string) {
		Docker(t, "exec", nginx, "sh", "-c", `printf %s "$1" > "$2"`, "sh", keyAuth,
			webroot+"/.well-known/acme-challenge/"+token)
	}
}

// unusedPort returns a loopback port nothing listens on.
func unusedPort(t *testing.T) int {
	ports, err := freeLoopbackPorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

func readFile(t *testing.T, name string) []byte {
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// trustingClient trusts only the roots in rootsFile.
func trustingClient(t *testing.T, rootsFile string) *http.Client {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(readFile(t, rootsFile)) {
		t.Fatalf("no certificate in %s", rootsFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig.RootCAs = pool
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type acmeDirectory struct {
	NewNonce, NewAccount, NewOrder, RevokeCert, RenewalInfo string
	Meta                                                    struct {
		Profiles                map[string]string
		ExternalAccountRequired bool
	}
}

func getDirectory(t *testing.T, client *http.Client, url string) acmeDirectory {
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var dir acmeDirectory
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: status %d, %v", url, resp.StatusCode, err)
	}
	return dir
}

// verifyChain checks that the PEM chain verifies for name against roots,
// and only with its intermediate: roots holds no intermediate.
func verifyChain(t *testing.T, chainPEM []byte, roots *x509.CertPool, name string) *x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for rest := chainPEM; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, cert)
	}
	if len(certs) < 2 {
		t.Fatalf("chain has %d certificates, want leaf and intermediate", len(certs))
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
		t.Errorf("chain does not verify against IssuerRoots: %v", err)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err == nil {
		t.Error("leaf verifies without its intermediate: IssuerRoots holds an intermediate")
	}
	return certs[0]
}

// acmeClient is the least of RFC 8555 (ES256 account key, one identifier
// per order, HTTP-01) needed to drive Pebble in these tests without an ACME
// library in go.mod.
type acmeClient struct {
	t      *testing.T
	client *http.Client
	dir    acmeDirectory
	key    *ecdsa.PrivateKey
	kid    string
	nonce  string
}

func newACMEClient(t *testing.T, client *http.Client, directoryURL string) *acmeClient {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c := &acmeClient{t: t, client: client, dir: getDirectory(t, client, directoryURL), key: key}
	resp, err := client.Head(c.dir.NewNonce)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c.nonce = resp.Header.Get("Replay-Nonce")
	resp, body := c.post(c.dir.NewAccount, map[string]any{"termsOfServiceAgreed": true}, http.StatusCreated)
	c.kid = resp.Header.Get("Location")
	if c.kid == "" {
		t.Fatalf("newAccount: no Location: %s", body)
	}
	return c
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func (c *acmeClient) jwk() map[string]string {
	pub, err := c.key.PublicKey.ECDH()
	if err != nil {
		c.t.Fatal(err)
	}
	raw := pub.Bytes() // 0x04 || X || Y
	return map[string]string{"crv": "P-256", "kty": "EC", "x": b64(raw[1:33]), "y": b64(raw[33:])}
}

// post sends a JWS-signed request (POST-as-GET when payload is nil) and
// fails the test unless the status is want.
func (c *acmeClient) post(url string, payload any, want int) (*http.Response, []byte) {
	c.t.Helper()
	protected := map[string]any{"alg": "ES256", "nonce": c.nonce, "url": url}
	if c.kid == "" {
		protected["jwk"] = c.jwk()
	} else {
		protected["kid"] = c.kid
	}
	ph, _ := json.Marshal(protected)
	var pl []byte
	if payload != nil {
		pl, _ = json.Marshal(payload)
	}
	signed := b64(ph) + "." + b64(pl)
	digest := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, c.key, digest[:])
	if err != nil {
		c.t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	body, _ := json.Marshal(map[string]string{"protected": b64(ph), "payload": b64(pl), "signature": b64(sig)})
	resp, err := c.client.Post(url, "application/jose+json", bytes.NewReader(body))
	if err != nil {
		c.t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	c.nonce = resp.Header.Get("Replay-Nonce")
	if resp.StatusCode != want {
		c.t.Fatalf("POST %s: status %d, want %d: %s", url, resp.StatusCode, want, data)
	}
	return resp, data
}

func (c *acmeClient) get(url string, out any) {
	c.t.Helper()
	_, body := c.post(url, nil, http.StatusOK)
	if err := json.Unmarshal(body, out); err != nil {
		c.t.Fatalf("POST-as-GET %s: %v: %s", url, err, body)
	}
}

type acmeOrder struct {
	Status         string
	Authorizations []string
	Finalize       string
	Certificate    string
}

// issue orders a certificate for name, lets solve publish each HTTP-01 key
// authorization, and returns the PEM chain.
func (c *acmeClient) issue(name, profile string, solve func(token, keyAuth string)) []byte {
	c.t.Helper()
	resp, body := c.post(c.dir.NewOrder, map[string]any{
		"identifiers": []map[string]string{{"type": "dns", "value": name}},
		"profile":     profile,
	}, http.StatusCreated)
	orderURL := resp.Header.Get("Location")
	var order acmeOrder
	if err := json.Unmarshal(body, &order); err != nil {
		c.t.Fatal(err)
	}
	thumb, _ := json.Marshal(c.jwk()) // map keys marshal sorted: the RFC 7638 form
	sum := sha256.Sum256(thumb)
	for _, authzURL := range order.Authorizations {
		var authz struct {
			Status     string
			Challenges []struct{ Type, URL, Token string }
		}
		c.get(authzURL, &authz)
		if authz.Status == "valid" {
			continue
		}
		for _, ch := range authz.Challenges {
			if ch.Type == "http-01" {
				solve(ch.Token, ch.Token+"."+b64(sum[:]))
				c.post(ch.URL, struct{}{}, http.StatusOK)
			}
		}
		c.await(authzURL, "valid")
	}
	certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{name}}, certKey)
	if err != nil {
		c.t.Fatal(err)
	}
	c.post(order.Finalize, map[string]string{"csr": b64(csr)}, http.StatusOK)
	c.await(orderURL, "valid")
	c.get(orderURL, &order)
	_, chain := c.post(order.Certificate, nil, http.StatusOK)
	return chain
}

// await polls an order or authorization until it has status want.
func (c *acmeClient) await(url, want string) {
	c.t.Helper()
	Eventually(c.t, 15*time.Second, func() error {
		var obj struct {
			Status string
			Error  any
		}
		c.get(url, &obj)
		switch obj.Status {
		case want:
			return nil
		case "invalid":
			c.t.Fatalf("%s is invalid: %v", url, obj.Error)
		}
		return fmt.Errorf("%s is %s", url, obj.Status)
	})
}

func (c *acmeClient) revoke(cert *x509.Certificate) {
	c.t.Helper()
	c.post(c.dir.RevokeCert, map[string]string{"certificate": b64(cert.Raw)}, http.StatusOK)
}

// renewalInfoBody GETs the certificate's ARI resource (draft-ietf-acme-ari
// certID: base64url AKI "." base64url DER serial).
func (c *acmeClient) renewalInfoBody(cert *x509.Certificate) string {
	c.t.Helper()
	serial := cert.SerialNumber.Bytes()
	if len(serial) > 0 && serial[0]&0x80 != 0 {
		serial = append([]byte{0}, serial...)
	}
	url := c.dir.RenewalInfo + "/" + b64(cert.AuthorityKeyId) + "." + b64(serial)
	resp, err := c.client.Get(url)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("GET %s: status %d: %s", url, resp.StatusCode, body)
	}
	return string(body)
}

type ariWindow struct{ Start, End time.Time }

func (c *acmeClient) renewalInfo(cert *x509.Certificate) ariWindow {
	c.t.Helper()
	var info struct{ SuggestedWindow ariWindow }
	body := c.renewalInfoBody(cert)
	if err := json.Unmarshal([]byte(body), &info); err != nil || info.SuggestedWindow.End.IsZero() {
		c.t.Fatalf("renewal info without a window (%v): %s", err, body)
	}
	return info.SuggestedWindow
}
