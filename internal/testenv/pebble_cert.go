package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// wfeCert is the TLS certificate of Pebble's listeners, written to files.
type wfeCert struct {
	rootsPEM                     []byte
	rootsFile, certFile, keyFile string
}

// writeWFECert generates a root CA and a leaf certificate for hosts (names
// or IP addresses) signed by it, and writes wfe-roots.pem, wfe-cert.pem and
// wfe-key.pem into dir. The root's key is never written.
func writeWFECert(dir string, hosts ...string) (wfeCert, error) {
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return wfeCert{}, err
	}
	root := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "berth test Pebble WFE root " + randomSerial().Text(36)[:8]},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(wfeCertValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, rootKey.Public(), rootKey)
	if err != nil {
		return wfeCert{}, err
	}
	if root, err = x509.ParseCertificate(rootDER); err != nil {
		return wfeCert{}, err
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return wfeCert{}, err
	}
	leaf := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(wfeCertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, h)
		}
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, root, leafKey.Public(), rootKey)
	if err != nil {
		return wfeCert{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return wfeCert{}, err
	}
	c := wfeCert{
		rootsPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
		rootsFile: filepath.Join(dir, "wfe-roots.pem"),
		certFile:  filepath.Join(dir, "wfe-cert.pem"),
		keyFile:   filepath.Join(dir, "wfe-key.pem"),
	}
	files := map[string][]byte{
		c.rootsFile: c.rootsPEM,
		c.certFile:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		c.keyFile:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	for name, data := range files {
		if err := os.WriteFile(name, data, 0o644); err != nil {
			return wfeCert{}, err
		}
	}
	return c, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}
