package acme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeCA is the unit-layer issuer: it signs whatever it is asked for with a
// throwaway CA, except names it is told to fail.
type fakeCA struct {
	mu      sync.Mutex
	key     *ecdsa.PrivateKey
	cert    *x509.Certificate
	fail    map[string]bool // names whose validation fails
	limit   time.Duration   // when set, every order is rate-limited with this Retry-After
	life    time.Duration
	orders  [][]string
	times   []time.Time // when each order was placed (the bubble's clock)
	replace []*x509.Certificate
	how     []OrderOptions // each order's challenge and profile
	profile string         // the profile it says it issued with when asked for none
}

func newFakeCA(t testing.TB) *fakeCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake root"}, IsCA: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour), BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &fakeCA{key: key, cert: cert, fail: map[string]bool{}, life: 90 * 24 * time.Hour}
}

func (f *fakeCA) Obtain(_ context.Context, names []string, opts OrderOptions) (Issued, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.orders = append(f.orders, slices.Clone(names))
	f.times = append(f.times, time.Now())
	f.replace = append(f.replace, opts.Replaces)
	f.how = append(f.how, OrderOptions{Challenge: opts.Challenge, Profile: opts.Profile})
	if f.limit > 0 {
		return Issued{}, &OrderError{Err: errors.New("too many certificates"), RateLimited: true, RetryAfter: f.limit}
	}
	var failed []string
	for _, n := range names {
		if f.fail[n] {
			failed = append(failed, n)
		}
	}
	if len(failed) > 0 {
		return Issued{}, &OrderError{Err: errors.New("validation failed for " + strings.Join(failed, ",")), Failed: failed}
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(int64(len(f.orders)) + 1000), DNSNames: names,
		NotBefore: time.Now(), NotAfter: time.Now().Add(f.life)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, f.cert, &key.PublicKey, f.key)
	if err != nil {
		return Issued{}, err
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	profile := opts.Profile
	if profile == "" {
		profile = f.profile
	}
	return Issued{
		ChainPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		Profile:  profile,
	}, nil
}

func (f *fakeCA) RenewalInfo(context.Context, *x509.Certificate) (*Window, error) { return nil, nil }
func (f *fakeCA) Revoke(context.Context, []byte) error                            { return nil }

func (f *fakeCA) setFail(name string, fail bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[name] = fail
}

func (f *fakeCA) ordersSoFar() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.orders)
}

func (f *fakeCA) optionsSoFar() []OrderOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.how)
}

func (f *fakeCA) orderCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.orders)
}
