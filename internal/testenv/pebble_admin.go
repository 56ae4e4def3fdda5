package testenv

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// pebbleAdmin talks to Pebble's management interface and reads its log.
type pebbleAdmin struct {
	mgmtURL string
	client  *http.Client
	output  func() (string, error)
}

func newPebbleAdmin(mgmtURL string, rootsPEM []byte, output func() (string, error)) pebbleAdmin {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootsPEM)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil // only ever 127.0.0.1
	transport.TLSClientConfig.RootCAs = pool
	return pebbleAdmin{
		mgmtURL: mgmtURL,
		client:  &http.Client{Transport: transport, Timeout: 10 * time.Second},
		output:  output,
	}
}

// do sends a request and returns the body of a response with status want.
func (a *pebbleAdmin) do(method, url string, body []byte, want int) ([]byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "berth-testenv") // Pebble rejects requests without one
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	if resp.StatusCode != want {
		return data, fmt.Errorf("%s %s: status %d, want %d: %s", method, url, resp.StatusCode, want, bytes.TrimSpace(data))
	}
	return data, nil
}

func (a *pebbleAdmin) ready(directoryURL string) error {
	dir, err := a.do("GET", directoryURL, nil, http.StatusOK)
	if err != nil {
		return err
	}
	if !bytes.Contains(dir, []byte(`"newOrder"`)) {
		return fmt.Errorf("GET %s: no newOrder in %s", directoryURL, dir)
	}
	_, err = a.do("GET", a.mgmtURL+"/roots/0", nil, http.StatusOK)
	return err
}

// IssuerRoots returns the root that the certificates Pebble issues chain
// to. It holds no intermediate: verifying a served chain against it fails
// if the server leaves the intermediate out, as it would with a real CA.
func (a *pebbleAdmin) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	data, err := a.do("GET", a.mgmtURL+"/roots/0", nil, http.StatusOK)
	if err != nil {
		t.Fatalf("Pebble's issuer root: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("Pebble's issuer root: no certificate in %q", data)
	}
	return pool
}

// Orders returns how many orders Pebble has created so far. It reads the
// count Pebble logs after storing each new order ("There are now N orders
// in the db"); newOrder requests that Pebble rejects are not counted.
func (a *pebbleAdmin) Orders(t testing.TB) int {
	t.Helper()
	out, err := a.output()
	if err != nil {
		t.Fatalf("read Pebble's log: %v", err)
	}
	matches := ordersLine.FindAllStringSubmatch(out, -1)
	if len(matches) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(matches[len(matches)-1][1])
	return n
}

// Revoked reports whether Pebble considers the certificate (the first one
// in certPEM) revoked. It fails the test if Pebble never issued it.
func (a *pebbleAdmin) Revoked(t testing.TB, certPEM []byte) bool {
	t.Helper()
	cert := firstCertificate(t, certPEM)
	url := a.mgmtURL + "/cert-status-by-serial/" + cert.SerialNumber.Text(16)
	data, err := a.do("GET", url, nil, http.StatusOK)
	if err != nil {
		t.Fatalf("certificate status in Pebble (did Pebble issue %s?): %v", cert.Subject, err)
	}
	var status struct{ Status string }
	if err := json.Unmarshal(data, &status); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, data)
	}
	switch status.Status {
	case "Revoked":
		return true
	case "Valid":
		return false
	}
	t.Fatalf("GET %s: unknown status %q", url, status.Status)
	return false
}

// SetRenewalInfo makes Pebble's ARI endpoint suggest the window [start,
// end) for the certificate (the first one in certPEM). A window in the past
// means "renew now". Pebble answers with it until it is set again.
func (a *pebbleAdmin) SetRenewalInfo(t testing.TB, certPEM []byte, start, end time.Time) {
	t.Helper()
	type window struct {
		Start time.Time `json:"start"`
		End   time.Time `json:"end"`
	}
	body, err := json.Marshal(struct {
		SuggestedWindow window `json:"suggestedWindow"`
	}{window{start.UTC(), end.UTC()}})
	if err != nil {
		t.Fatal(err)
	}
	a.SetRenewalInfoJSON(t, certPEM, string(body))
}

// SetRenewalInfoJSON makes Pebble's ARI endpoint answer with body, verbatim
// and unchecked, for the certificate (the first one in certPEM): for tests
// of malformed or empty renewal info.
func (a *pebbleAdmin) SetRenewalInfoJSON(t testing.TB, certPEM []byte, body string) {
	t.Helper()
	cert := firstCertificate(t, certPEM)
	req, err := json.Marshal(map[string]string{
		"certificate": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		"ariResponse": body,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The trailing slash matters: without it Pebble redirects, and the POST
	// becomes a GET.
	if _, err := a.do("POST", a.mgmtURL+"/set-renewal-info/", req, http.StatusOK); err != nil {
		t.Fatalf("set renewal info in Pebble: %v", err)
	}
}

func firstCertificate(t testing.TB, certPEM []byte) *x509.Certificate {
	t.Helper()
	for rest := certPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			t.Fatalf("no CERTIFICATE block in %q", certPEM)
		}
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatalf("parse certificate: %v", err)
			}
			return cert
		}
	}
}
