package acme

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ErrNotFound is returned by Store.Load for a name with no certificate.
var ErrNotFound = errors.New("no stored certificate")

// Meta is stored next to each certificate, for operators and for renewal.
type Meta struct {
	Domains   []string  `json:"domains"`
	Issuer    string    `json:"issuer"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	CertURL   string    `json:"cert_url,omitempty"`
	Profile   string    `json:"profile,omitempty"`
	Obtained  time.Time `json:"obtained"`
}

// Stored is a certificate as found on disk.
type Stored struct {
	Name     string
	Meta     Meta
	Leaf     *x509.Certificate
	ChainPEM []byte
	KeyPEM   []byte
}

// Store keeps certificates as real files an unmodified nginx can read:
//
//	<dir>/<name>/fullchain.pem   leaf + intermediates
//	<dir>/<name>/privkey.pem     mode 0600
//	<dir>/<name>/meta.json
//
// <dir>/<name> is a symlink to a version directory under <dir>/.berth/, and
// a new version is published by renaming a new symlink over it. So the key
// and the chain always change together: nginx, restarted at any moment,
// reads a matching pair. Save never removes the version being replaced
// until the next Save, so a reload in flight never loses its files.
type Store struct {
	Dir string
}

const versionsDir = ".berth"

// Paths returns the files nginx reads for name.
func (s Store) Paths(name string) (chain, key string) {
	d := filepath.Join(s.Dir, name)
	return filepath.Join(d, "fullchain.pem"), filepath.Join(d, "privkey.pem")
}

// Load reads and checks one certificate: the key must match the leaf.
func (s Store) Load(name string) (*Stored, error) {
	chainFile, keyFile := s.Paths(name)
	chain, err := os.ReadFile(chainFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("load %s key: %w", name, err)
	}
	pair, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, fmt.Errorf("load %s: key and certificate do not match: %w", name, err)
	}
	st := &Stored{Name: name, Leaf: pair.Leaf, ChainPEM: chain, KeyPEM: key}
	if raw, err := os.ReadFile(filepath.Join(s.Dir, name, "meta.json")); err == nil {
		_ = json.Unmarshal(raw, &st.Meta) // meta is advisory; the leaf is the truth
	}
	st.Meta.Domains = leafNames(pair.Leaf)
	st.Meta.NotBefore, st.Meta.NotAfter = pair.Leaf.NotBefore, pair.Leaf.NotAfter
	st.Meta.Issuer = issuerName(pair.Leaf)
	return st, nil
}

func leafNames(c *x509.Certificate) []string {
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	slices.Sort(names)
	return names
}

func issuerName(c *x509.Certificate) string {
	if c.Issuer.CommonName != "" {
		return c.Issuer.CommonName
	}
	return c.Issuer.String()
}

// List returns the names of all stored certificates, sorted.
func (s Store) List() ([]string, error) {
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list certificates: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.Type()&os.ModeSymlink != 0 && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// Save publishes a new certificate for name.
func (s Store) Save(name string, chainPEM, keyPEM []byte, meta Meta) error {
	if name == "" || strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("save: invalid certificate name %q", name)
	}
	base := filepath.Join(s.Dir, versionsDir, name)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	version, err := os.MkdirTemp(base, time.Now().UTC().Format("20060102T150405")+"-")
	if err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	if err := os.Chmod(version, 0o755); err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	metaJSON, _ := json.MarshalIndent(meta, "", "  ")
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{"privkey.pem", keyPEM, 0o600}, {"fullchain.pem", chainPEM, 0o644}, {"meta.json", metaJSON, 0o644}} {
		if err := writeFile(filepath.Join(version, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("save %s: %w", name, err)
		}
	}
	rel, _ := filepath.Rel(s.Dir, version)
	if err := swapSymlink(filepath.Join(s.Dir, name), rel); err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	return s.prune(name, filepath.Base(version))
}

// prune keeps the current version and the one before it.
func (s Store) prune(name, current string) error {
	base := filepath.Join(s.Dir, versionsDir, name)
	entries, err := os.ReadDir(base)
	if err != nil {
		return nil
	}
	var old []string
	for _, e := range entries {
		if e.Name() != current {
			old = append(old, e.Name())
		}
	}
	slices.Sort(old) // names start with a timestamp
	for i := 0; i < len(old)-1; i++ {
		os.RemoveAll(filepath.Join(base, old[i]))
	}
	return nil
}

// version identifies the stored files of name: the symlink's target.
func (s Store) version(name string) string {
	v, _ := os.Readlink(filepath.Join(s.Dir, name))
	return v
}

// Delete removes a certificate and its versions (revocation, cleanup).
func (s Store) Delete(name string) error {
	if err := os.Remove(filepath.Join(s.Dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return os.RemoveAll(filepath.Join(s.Dir, versionsDir, name))
}

func swapSymlink(path, target string) error {
	tmp := path + ".tmp-link"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// writeFile writes data with mode, whatever the umask, and fsyncs it.
func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// leafOf parses the first certificate of a PEM chain.
func leafOf(chainPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(chainPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no certificate in PEM")
	}
	return x509.ParseCertificate(block.Bytes)
}
