package acme

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/internal/atomicfile"
)

// ErrNotFound is returned by Store.Load for a name with no certificate.
var ErrNotFound = errors.New("no stored certificate")

// ErrForeignPath says a certificate's path holds something berth did not
// make: berth will not order a certificate it could not publish.
var ErrForeignPath = errors.New("not a certificate berth made")

// Meta is stored next to each certificate, for operators and for renewal.
type Meta struct {
	Domains   []string  `json:"domains"`
	Issuer    string    `json:"issuer"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	CertURL   string    `json:"cert_url,omitempty"`
	Profile   string    `json:"profile,omitempty"`   // the ACME profile it was ordered with
	Challenge string    `json:"challenge,omitempty"` // http-01 or dns-01, as it was ordered
	Obtained  time.Time `json:"obtained"`
	// Source is SourceUser for a copy of the user's own certificate,
	// SourceImport for one "berth import" brought in, empty when berth
	// ordered it. File is the file it was copied from.
	Source string `json:"source,omitempty"`
	File   string `json:"file,omitempty"`
}

// Meta.Source values.
const (
	SourceUser   = "user"
	SourceImport = "import"
)

// Stored is one version of a certificate as found on disk.
type Stored struct {
	Name     string
	Version  string // the version directory, relative to the store (the link's target)
	Meta     Meta
	Leaf     *x509.Certificate
	ChainPEM []byte
	KeyPEM   []byte
}

// Store keeps certificates as real files an unmodified nginx can read:
//
//	<dir>/.berth/<name>/<version>/fullchain.pem   leaf + intermediates
//	<dir>/.berth/<name>/<version>/privkey.pem     mode 0600
//	<dir>/.berth/<name>/<version>/meta.json
//	<dir>/<name> -> .berth/<name>/<version>       the current version
//
// A version directory is never changed after Save publishes it, and nginx
// config names version paths: so a renewal changes the config's bytes (and
// nginx reloads), and the key and chain nginx reads always match. The
// <name> link is for humans and tools. Old versions stay until Prune is
// told no file refers to them.
type Store struct {
	Dir string
	// Log gets one line per file found corrupt and moved aside; nil logs
	// to logrus's standard logger.
	Log *logrus.Entry
}

const (
	versionsDir = ".berth"
	linkSuffix  = ".tmp-link" // a link being published; never a certificate
)

// Paths returns the files of name's current version through its link.
func (s Store) Paths(name string) (chain, key string) {
	d := filepath.Join(s.Dir, name)
	return filepath.Join(d, "fullchain.pem"), filepath.Join(d, "privkey.pem")
}

// versionDir is the directory of a version named by a link target.
func (s Store) versionDir(version string) string {
	if filepath.IsAbs(version) {
		return version
	}
	return filepath.Join(s.Dir, version)
}

// current returns the target of name's link, "" when there is none.
func (s Store) current(name string) string {
	v, _ := os.Readlink(filepath.Join(s.Dir, name))
	return v
}

// Load reads and checks name's current version: the key must match the
// leaf. Both files are read from the one version the link named when Load
// began, so a concurrent Save never yields a mixed pair.
func (s Store) Load(name string) (*Stored, error) {
	version, err := os.Readlink(filepath.Join(s.Dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	return s.loadVersion(name, version)
}

func (s Store) loadVersion(name, version string) (*Stored, error) {
	dir := s.versionDir(version)
	chain, err := os.ReadFile(filepath.Join(dir, "fullchain.pem"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	key, err := os.ReadFile(filepath.Join(dir, "privkey.pem"))
	if err != nil {
		return nil, fmt.Errorf("load %s key: %w", name, err)
	}
	pair, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, fmt.Errorf("load %s: key and certificate do not match: %w", name, err)
	}
	st := &Stored{Name: name, Version: version, Leaf: pair.Leaf, ChainPEM: chain, KeyPEM: key}
	s.readMeta(filepath.Join(dir, "meta.json"), &st.Meta)
	// The leaf is the truth; meta only adds what the leaf cannot say.
	st.Meta.Domains = leafNames(pair.Leaf)
	st.Meta.NotBefore, st.Meta.NotAfter = pair.Leaf.NotBefore, pair.Leaf.NotAfter
	st.Meta.Issuer = issuerName(pair.Leaf)
	return st, nil
}

// readMeta reads advisory metadata; a corrupt file is moved aside.
func (s Store) readMeta(path string, meta *Meta) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if err := json.Unmarshal(raw, meta); err != nil {
		*meta = Meta{}
		setAside(s.Log, path, err, "the certificate is served from its own dates and names")
	}
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

// List returns the names of all stored certificates, sorted: the links
// in Dir, without hidden names and links left half-published by a crash.
func (s Store) List() ([]string, error) {
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list certificates: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.Type()&fs.ModeSymlink != 0 && validName(e.Name()) == nil {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

func validName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\\*") || strings.HasPrefix(name, ".") || strings.HasSuffix(name, linkSuffix) {
		return fmt.Errorf("invalid certificate name %q", name)
	}
	return nil
}

// Check says whether name's path is free for berth: absent or a link berth
// made. Anything else there (a user's directory) is ErrForeignPath, found
// before an order is placed rather than after.
func (s Store) Check(name string) error {
	if err := validName(name); err != nil {
		return err
	}
	path := filepath.Join(s.Dir, name)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) || err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("certificate path %s: %w", path, err)
	}
	return fmt.Errorf("certificate path %s is a %s, %w: move it away (your own certificates belong in BERTH_USER_CERTS_DIR)",
		path, kindOf(fi.Mode()), ErrForeignPath)
}

func kindOf(m fs.FileMode) string {
	if m.IsDir() {
		return "directory"
	}
	return "file"
}

// Save publishes a new version of name and returns it.
func (s Store) Save(name string, chainPEM, keyPEM []byte, meta Meta) error {
	_, err := s.save(name, chainPEM, keyPEM, meta)
	return err
}

func (s Store) save(name string, chainPEM, keyPEM []byte, meta Meta) (string, error) {
	if err := s.Check(name); err != nil {
		return "", fmt.Errorf("save: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(s.Dir, versionsDir), 0o755); err != nil {
		return "", fmt.Errorf("save %s: %w", name, err)
	}
	unlock, err := s.lock()
	if err != nil {
		return "", fmt.Errorf("save %s: %w", name, err)
	}
	defer unlock()
	// Under the lock: Prune removes a name's directory that holds no
	// version, which a new name's directory is until the version is in.
	base := filepath.Join(s.Dir, versionsDir, name)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", fmt.Errorf("save %s: %w", name, err)
	}
	dir, err := os.MkdirTemp(base, time.Now().UTC().Format("20060102T150405")+"-")
	if err != nil {
		return "", fmt.Errorf("save %s: %w", name, err)
	}
	if err := s.writeVersionFiles(dir, chainPEM, keyPEM, meta); err != nil {
		return "", fmt.Errorf("save %s: %w", name, err)
	}
	version, _ := filepath.Rel(s.Dir, dir)
	if err := s.publish(name, version); err != nil {
		return "", fmt.Errorf("save %s: %w", name, err)
	}
	return version, nil
}

// lock serialises Save with Prune across processes. A version that "berth
// renew" or "berth import" has written but not yet linked is nobody's
// current version, and the daemon's Prune would otherwise remove it
// between the two steps.
func (s Store) lock() (unlock func(), err error) {
	return lockFile(filepath.Join(s.Dir, versionsDir, ".lock"))
}

// writeVersionFiles fills a new version directory: the key readable only
// by its owner, the chain and metadata by all.
func (s Store) writeVersionFiles(dir string, chainPEM, keyPEM []byte, meta Meta) error {
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	metaJSON, _ := json.MarshalIndent(meta, "", "  ")
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{"privkey.pem", keyPEM, 0o600}, {"fullchain.pem", chainPEM, 0o644}, {"meta.json", metaJSON, 0o644}} {
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// publish points name's link at version by renaming a new link over it.
// The temporary link is hidden and marked, so a crash between the two
// steps never leaves something List takes for a certificate.
func (s Store) publish(name, version string) error {
	tmp := filepath.Join(s.Dir, "."+name+linkSuffix)
	os.Remove(tmp)
	if err := os.Symlink(version, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.Dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	return atomicfile.SyncDir(s.Dir)
}

// RemoveLeftovers deletes the temporary links a killed berth left while
// publishing (hidden, never listed, but clutter that would outlive every
// later save of another name). Links younger than a minute may be a save in
// progress of a CLI next to the daemon and are kept.
func (s Store) RemoveLeftovers(now time.Time) []string {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, ".") || !strings.HasSuffix(name, linkSuffix) {
			continue
		}
		if fi, err := os.Lstat(filepath.Join(s.Dir, name)); err != nil || now.Sub(fi.ModTime()) < time.Minute {
			continue
		}
		if os.Remove(filepath.Join(s.Dir, name)) == nil {
			removed = append(removed, name)
		}
	}
	return removed
}

// Delete unpublishes name: its link goes, so it is no longer listed or
// loaded. Its versions stay until Prune finds no file refers to them.
func (s Store) Delete(name string) error {
	if err := validName(name); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if err := os.Remove(filepath.Join(s.Dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// Prune removes every version that is not its name's current one and for
// which keep (given the version as Stored.Version names it) is false, and the directories of
// names left with no version and no link. It returns what it removed.
func (s Store) Prune(keep func(version string) bool) ([]string, error) {
	root := filepath.Join(s.Dir, versionsDir)
	if _, err := os.Stat(root); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	defer unlock()
	names, err := os.ReadDir(root) // under the lock, with every Save done or not begun
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	var removed []string
	for _, n := range names {
		if !n.IsDir() {
			continue
		}
		current := filepath.Clean(s.current(n.Name()))
		versions, _ := os.ReadDir(filepath.Join(root, n.Name()))
		left := 0
		for _, v := range versions {
			rel := filepath.Join(versionsDir, n.Name(), v.Name())
			if rel == current || keep(rel) {
				left++
				continue
			}
			if err := os.RemoveAll(filepath.Join(s.Dir, rel)); err != nil {
				return removed, fmt.Errorf("prune %s: %w", rel, err)
			}
			removed = append(removed, rel)
		}
		if left == 0 && current == "." {
			os.Remove(filepath.Join(root, n.Name()))
		}
	}
	return removed, nil
}

// leafOf parses the first certificate of a PEM chain.
func leafOf(chainPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(chainPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no certificate in PEM")
	}
	return x509.ParseCertificate(block.Bytes)
}
