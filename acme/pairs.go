package acme

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Certificates made by someone else: the files found in a directory laid
// out by nginx-proxy, acme-companion or certbot, and the checks each pair
// must pass before berth serves or imports it. Used by the user
// certificate directory (usercerts.go) and "berth import" (import.go).
//
// The layouts, all recognised wherever a directory is scanned:
//
//	<host>.crt + <host>.key                 nginx-proxy (also _.example.com.crt, *.example.com.crt)
//	<name>/fullchain.pem + <name>/key.pem   acme-companion
//	<name>/fullchain.pem + <name>/privkey.pem   certbot's live/<name>/ (symlinks into archive/ are followed)
//	live/<name>/…                           certbot's whole /etc/letsencrypt mounted
//
// The file name only finds the pair: the names a certificate is served
// for are always the leaf's subject alternative names.

// pairFile is one certificate file and the key file that goes with it.
type pairFile struct {
	Chain, Key string // paths; Key is "" when no key file was found
}

// Rejected is a file that is not used, and why.
type Rejected struct {
	File   string
	Reason string
}

// Pair is a certificate and its key that passed the structural checks:
// the chain parses, the key matches the leaf, the leaf names hosts.
type Pair struct {
	File, KeyFile    string
	ChainPEM, KeyPEM []byte
	Leaf             *x509.Certificate
	Names            []string // the leaf's SANs, sorted
	Hash             string   // of the chain and key: equal content, equal hash
}

// maxPEMSize bounds what is read of one file: a full chain is a few KiB;
// anything much larger is not a certificate, and must not cost memory.
const maxPEMSize = 1 << 20

// findPairs lists the certificate files in dir in the layouts above,
// sorted by path. A certificate file without its key is a Rejected entry;
// an unreadable dir is an error.
func findPairs(dir string) ([]pairFile, []Rejected, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	var pairs []pairFile
	var rejected []Rejected
	for _, e := range entries {
		name, path := e.Name(), filepath.Join(dir, e.Name())
		switch {
		case strings.HasPrefix(name, "."):
		case strings.HasSuffix(name, ".crt") && isFile(path):
			key := strings.TrimSuffix(path, ".crt") + ".key"
			if !isFile(key) {
				rejected = append(rejected, Rejected{path, "missing key: no " + filepath.Base(key) + " next to it"})
				continue
			}
			pairs = append(pairs, pairFile{path, key})
		case name == "live" && isDir(path):
			sub, rej, err := findPairs(path)
			if err == nil {
				pairs, rejected = append(pairs, sub...), append(rejected, rej...)
			}
		case isDir(path):
			chain := filepath.Join(path, "fullchain.pem")
			if !isFile(chain) {
				continue // not a certificate directory (acme-companion's accounts/, certbot's archive/, …)
			}
			key := firstFile(filepath.Join(path, "privkey.pem"), filepath.Join(path, "key.pem"))
			if key == "" {
				rejected = append(rejected, Rejected{chain, "missing key: no privkey.pem or key.pem next to it"})
				continue
			}
			pairs = append(pairs, pairFile{chain, key})
		}
	}
	slices.SortFunc(pairs, func(a, b pairFile) int { return strings.Compare(a.Chain, b.Chain) })
	return pairs, rejected, nil
}

// isFile follows symlinks: acme-companion's <host>.crt and certbot's
// live/ files are links.
func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

func firstFile(paths ...string) string {
	for _, p := range paths {
		if isFile(p) {
			return p
		}
	}
	return ""
}

// readPair reads and checks one pair (structure only: see current for
// dates).
func readPair(f pairFile) (*Pair, error) {
	chain, key, err := readFiles(f)
	if err != nil {
		return nil, err
	}
	return filedPair(f, chain, key)
}

func readFiles(f pairFile) (chain, key []byte, err error) {
	if chain, err = readSmall(f.Chain); err != nil {
		return nil, nil, err
	}
	if key, err = readSmall(f.Key); err != nil {
		return nil, nil, fmt.Errorf("key %s: %w", f.Key, err)
	}
	return chain, key, nil
}

// filedPair is checkPair of the contents of f.
func filedPair(f pairFile, chain, key []byte) (*Pair, error) {
	p, err := checkPair(chain, key)
	if err != nil {
		return nil, err
	}
	p.File, p.KeyFile = f.Chain, f.Key
	return p, nil
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", unwrapPath(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", unwrapPath(err))
	}
	if len(data) > maxPEMSize {
		return nil, fmt.Errorf("larger than %d bytes: not a certificate or key", maxPEMSize)
	}
	return data, nil
}

// unwrapPath drops the path from an *fs.PathError: the caller names the
// file already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// checkPair checks what does not change with time: every certificate of
// the chain parses, the key parses and matches the leaf, and the leaf
// names at least one host. Pure.
func checkPair(chainPEM, keyPEM []byte) (*Pair, error) {
	var certs []*x509.Certificate
	rest := chainPEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of the chain does not parse: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate in the file")
	}
	leaf := certs[0]
	priv, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(priv.Public()) {
		return nil, errors.New("the key does not match the certificate")
	}
	if _, err := tls.X509KeyPair(chainPEM, keyPEM); err != nil {
		return nil, fmt.Errorf("not a usable key pair: %w", err)
	}
	names := leafNames(leaf)
	if len(leaf.DNSNames) == 0 {
		return nil, errors.New("the certificate names no host (no DNS subject alternative name)")
	}
	return &Pair{ChainPEM: chainPEM, KeyPEM: keyPEM, Leaf: leaf, Names: names, Hash: pairHash(chainPEM, keyPEM)}, nil
}

// pairHash identifies a pair by content: 128 bits of SHA-256 of both files.
func pairHash(chainPEM, keyPEM []byte) string {
	sum := sha256.New()
	sum.Write(chainPEM)
	sum.Write([]byte{0})
	sum.Write(keyPEM)
	return hex.EncodeToString(sum.Sum(nil))[:32]
}

// parseKey reads the first private key block: PKCS#8, PKCS#1 (RSA) or SEC 1 (EC).
func parseKey(keyPEM []byte) (crypto.Signer, error) {
	rest := keyPEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key in the key file")
		}
		if !strings.HasSuffix(block.Type, "PRIVATE KEY") {
			continue
		}
		var key any
		var err error
		switch block.Type {
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		}
		if err != nil {
			return nil, fmt.Errorf("the private key does not parse: %w", err)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey:
			return k, nil
		case *ecdsa.PrivateKey:
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		}
		return nil, fmt.Errorf("unsupported private key type %T", key)
	}
}

// current says why a leaf is not valid at now (NotBefore ≤ now < NotAfter),
// or nil. Pure.
func current(leaf *x509.Certificate, now time.Time) error {
	switch {
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("not valid yet: valid from %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	case !now.Before(leaf.NotAfter):
		return fmt.Errorf("expired on %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}
