package agent

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/berthproxy/berth/internal/atomicfile"
	"github.com/berthproxy/berth/nginxconf"
)

// checkPayload refuses a push whose conf files are not all berth's, that
// lacks the default server, or that names a certificate outside the certs
// dir: an agent must never touch a user's file, and a push without the
// shared files is a broken sender, not a wish to remove every site. Pure.
func checkPayload(p Payload) error {
	if _, ok := p.Files[nginxconf.DefaultFile]; !ok {
		return fmt.Errorf("files lack %s: refusing a config without the default server", nginxconf.DefaultFile)
	}
	for _, name := range slices.Sorted(maps.Keys(p.Files)) {
		if !nginxconf.Owned(name) {
			return fmt.Errorf("file %q is not one of berth's conf files", name)
		}
	}
	for _, rel := range slices.Sorted(maps.Keys(p.Certs)) {
		if _, err := certPath("/", rel); err != nil {
			return err
		}
	}
	return nil
}

// certPath resolves a certificate path relative to dir, refusing anything
// that would leave it (absolute paths, "..", empty parts). Pure.
func certPath(dir, rel string) (string, error) {
	clean := path.Clean(rel)
	if rel == "" || path.IsAbs(rel) || clean != rel || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") || strings.ContainsRune(rel, '\\') {
		return "", fmt.Errorf("certificate path %q must be relative to the certs dir, without . or .. parts", rel)
	}
	return filepath.Join(dir, filepath.FromSlash(clean)), nil
}

// isPrivateKey tells a private key from a certificate by its PEM type, so
// it gets mode 0600 whatever the file is called. Pure.
func isPrivateKey(data []byte) bool {
	return bytes.Contains(data, []byte("PRIVATE KEY-----"))
}

// writeCerts writes each certificate file that is missing. Certificate
// versions have immutable paths, so an existing file already holds these
// bytes and is never rewritten (nginx may be reading it). They are written
// before the config that names them, so nginx -t finds them.
func writeCerts(dir string, certs map[string]string) error {
	for _, rel := range slices.Sorted(maps.Keys(certs)) {
		p, err := certPath(dir, rel)
		if err != nil {
			return err
		}
		if _, err := os.Stat(p); err == nil {
			continue
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("certificate %s: %w", rel, err)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("certificate %s: %w", rel, err)
		}
		data := []byte(certs[rel])
		mode := os.FileMode(0o644)
		if isPrivateKey(data) {
			mode = 0o600
		}
		if err := atomicfile.Write(p, data, mode); err != nil {
			return fmt.Errorf("certificate %s: %w", rel, err)
		}
	}
	return nil
}

// errBadToken marks a token that cannot be a file name in the webroot.
var errBadToken = errors.New("challenge token is not base64url")

// tokenChars is the ACME token alphabet (RFC 8555 §8.3: base64url, no
// padding); nothing else can reach the webroot path.
var tokenChars = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)

// challengePath is where nginx serves token from the webroot, or an error
// for a token outside the base64url alphabet. Pure.
func challengePath(webroot, token string) (string, error) {
	if !tokenChars.MatchString(token) {
		return "", fmt.Errorf("%w: %q", errBadToken, token)
	}
	return filepath.Join(webroot, ".well-known", "acme-challenge", token), nil
}

// putChallenge writes a token world-readable whatever the umask: nginx's
// workers run as another user, and a token they cannot read fails the
// validation (ENVIRONMENT: lego under umask 077).
func putChallenge(webroot, token string, keyAuth []byte) error {
	p, err := challengePath(webroot, token)
	if err != nil {
		return err
	}
	for _, d := range []string{filepath.Dir(filepath.Dir(p)), filepath.Dir(p)} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("challenge dir: %w", err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return fmt.Errorf("challenge dir: %w", err)
		}
	}
	return atomicfile.Write(p, keyAuth, 0o644)
}

// deleteChallenge removes a token; a token already gone is no error.
func deleteChallenge(webroot, token string) error {
	p, err := challengePath(webroot, token)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove challenge: %w", err)
	}
	return nil
}
