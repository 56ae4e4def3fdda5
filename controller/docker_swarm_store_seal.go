package controller

// The pure half of ClusterStore (docker_swarm_store.go): what a mirrored
// file looks like as a Swarm config (sealed bytes, name, labels), which
// local paths are mirrored, and which configs a Sync creates and deletes.
// No Docker, disk or clock here.

import (
	"cmp"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berthproxy/berth/internal/atomicfile"
)

// Labels of a ClusterStore config. Only the sum is derived from the key;
// root, path and mode are readable by anyone who can list configs (so a
// new leader plans without decrypting), and bound into the sealed bytes
// (storeEntry.identity), so a relabelled blob does not open.
const (
	storeLabel     = "berth.store"
	storeRootLabel = "berth.store.root"
	storePathLabel = "berth.store.path"
	storeSumLabel  = "berth.store.sum"
	storeModeLabel = "berth.store.mode"
)

// storeLinkMode is the mode label of a symbolic link. The certificate
// store names each certificate's current version by a link
// (<certs>/<name> -> .berth/<name>/<version>); without it a restored
// store lists no certificate and orders them all again.
const storeLinkMode = "symlink"

// storeMaxFile is the largest file mirrored. Swarm refuses configs over
// 500 KB; sealing adds 28 bytes, and certificates and state are a few KB.
const storeMaxFile = 400 << 10

// storeSumHex is how much of the sum names a config: 96 bits, so
// "<namespace>-<sum>" fits Swarm's 64-character names with a namespace of
// up to storeMaxNamespace characters.
const (
	storeSumHex       = 24
	storeMaxNamespace = 64 - 1 - storeSumHex
)

// storeNamespaceRE is what Swarm accepts at the start of an object name.
var storeNamespaceRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

func checkStoreNamespace(ns string) error {
	if len(ns) > storeMaxNamespace || !storeNamespaceRE.MatchString(ns) {
		return fmt.Errorf("store namespace %q: want 1-%d letters, digits, '_', '.' or '-', starting with a letter or digit", ns, storeMaxNamespace)
	}
	return nil
}

// storeKeys are the two keys derived from the store secret: one encrypts,
// the other names (an HMAC, so names and sums say nothing about contents
// to whoever lacks the secret).
type storeKeys struct {
	aead cipher.AEAD
	mac  []byte
}

// newStoreKeys derives the keys: AES-256-GCM under SHA-256(secret), and
// the HMAC key as HMAC(that key, "berth.store.sum") so that the cipher and
// the MAC never share a key.
func newStoreKeys(secret []byte) (storeKeys, error) {
	if len(secret) == 0 {
		return storeKeys{}, errors.New("store key is empty")
	}
	k := sha256.Sum256(secret)
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return storeKeys{}, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return storeKeys{}, err
	}
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte("berth.store.sum"))
	return storeKeys{aead: aead, mac: m.Sum(nil)}, nil
}

// storeEntry is one mirrored file or link.
type storeEntry struct {
	Root string // the roots map's name, not the local directory
	Path string // slash-separated, relative to the root
	Mode string // octal permissions ("0600"), or storeLinkMode
	Data []byte // the contents, or the link's target
}

// identity is what the sealed bytes and the sum are bound to: where the
// file goes and what it is. A blob replayed as another path, or another
// mode (a private key made world-readable, a file made a link), does not
// open.
func (e storeEntry) identity() string { return e.Root + "/" + e.Path + "\x00" + e.Mode }

// key is the (root, path) a config restores.
func (e storeEntry) key() string { return e.Root + "/" + e.Path }

// sum is the hex HMAC of identity and contents: equal sums, equal files.
func (k storeKeys) sum(e storeEntry) string {
	m := hmac.New(sha256.New, k.mac)
	m.Write([]byte(e.identity()))
	m.Write([]byte{0})
	m.Write(e.Data)
	return hex.EncodeToString(m.Sum(nil))
}

// seal encrypts e's contents: a random 12-byte nonce, then AES-256-GCM
// ciphertext and tag, with e's identity as additional data.
func (k storeKeys) seal(e storeEntry) []byte {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return k.aead.Seal(nonce, nonce, e.Data, []byte(e.identity()))
}

// errStoreKey says a blob does not open: the secret differs from the one
// that sealed it (or the blob or its labels were altered).
var errStoreKey = errors.New("does not decrypt: the store key does not match the one it was written with, or it was altered")

// open decrypts blob as the contents of e (whose Data it ignores).
func (k storeKeys) open(e storeEntry, blob []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(blob) < n+k.aead.Overhead() {
		return nil, errStoreKey
	}
	data, err := k.aead.Open(nil, blob[:n], blob[n:], []byte(e.identity()))
	if err != nil {
		return nil, errStoreKey
	}
	return data, nil
}

// storeConfigName is the config's name for a file with this sum.
func storeConfigName(namespace, sum string) string {
	return namespace + "-" + sum[:storeSumHex]
}

// storeModeLabel is the mode label of a file's permissions.
func storeModeOf(perm fs.FileMode) string { return fmt.Sprintf("%04o", perm&fs.ModePerm) }

// parseStoreMode reads a mode label: the permissions of a file, or link.
func parseStoreMode(s string) (perm fs.FileMode, link bool, err error) {
	if s == storeLinkMode {
		return 0, true, nil
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o777 {
		return 0, false, fmt.Errorf("mode %q is neither octal permissions nor %q", s, storeLinkMode)
	}
	return fs.FileMode(n), false, nil
}

// storeUserDir holds copies of the user's own certificates (acme's
// usercerts.go): the user's, remade from BERTH_USER_CERTS_DIR on every
// node, never the cluster's to keep.
const storeUserDir = ".berth/.user"

// storeAgentGeneration is the agent's own counter file, per node.
const storeAgentGeneration = "agent-generation"

// storeSkip says whether rel (slash-separated, under a root) is left out
// of the mirror: temporary files of atomic writes (atomicfile's
// ".<name>.<n>.tmp", the certificate store's ".tmp-" directories and
// ".<name>.tmp-link" links), the user's certificate copies, and the
// agent's generation file. It applies to directories too: nothing under a
// skipped directory is looked at.
func storeSkip(rel string) bool {
	base := path.Base(rel)
	switch {
	case strings.HasPrefix(base, ".tmp"), strings.HasSuffix(base, atomicfile.TempSuffix), strings.HasSuffix(base, ".tmp-link"):
		return true
	case rel == storeUserDir, strings.HasPrefix(rel, storeUserDir+"/"):
		return true
	case base == storeAgentGeneration:
		return true
	}
	return false
}

// storeLinkOK says whether a link at rel pointing at target is mirrored:
// a relative target that stays inside the root and is itself mirrored
// (the certificate store's links are). A link elsewhere would restore as
// one that dangles or points outside what the store owns.
func storeLinkOK(rel, target string) bool {
	if target == "" || path.IsAbs(target) {
		return false
	}
	to := path.Join(path.Dir(rel), target)
	return fs.ValidPath(to) && to != "." && !storeSkip(to)
}

// storedBlob is one config of the store, as listed.
type storedBlob struct {
	ID, Name string
	Entry    storeEntry // without Data
	Sum      string
	Created  time.Time
	Index    uint64 // the Swarm version, to order blobs created within one timestamp
	Blob     []byte // sealed; nil when the list did not carry it
}

// newer orders blobs of one path, newest last.
func (b storedBlob) compare(o storedBlob) int {
	return cmp.Or(b.Created.Compare(o.Created), cmp.Compare(b.Index, o.Index), strings.Compare(b.ID, o.ID))
}

// newestBlobs picks the newest blob of each (root, path): what Restore
// writes.
func newestBlobs(blobs []storedBlob) []storedBlob {
	newest := map[string]storedBlob{}
	for _, b := range blobs {
		if cur, ok := newest[b.Entry.key()]; !ok || cur.compare(b) < 0 {
			newest[b.Entry.key()] = b
		}
	}
	out := make([]storedBlob, 0, len(newest))
	for _, b := range newest {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b storedBlob) int { return strings.Compare(a.Entry.key(), b.Entry.key()) })
	return out
}

// storePlan is what one Sync does.
type storePlan struct {
	Create []storeEntry // with their sums in Sums
	Sums   []string
	Delete []storedBlob
}

// planSync compares local files (with their sums) with the store's blobs.
// A local file whose (root, path, sum) has no blob is created. A blob is
// deleted when its (root, path) has no local file, or when the local file
// has another sum: the blob matching the local file (existing or created
// now) is then the only one left for that path, even when the local file
// went back to older contents than another blob holds. Blobs of held
// paths (local files that could not be read) are kept.
func planSync(local []storeEntry, sums []string, held map[string]bool, remote []storedBlob) storePlan {
	have := map[string]bool{}
	for _, b := range remote {
		have[b.Entry.key()+"\x00"+b.Sum] = true
	}
	want := map[string]string{} // key → sum of the local file
	var p storePlan
	for i, e := range local {
		want[e.key()] = sums[i]
		if !have[e.key()+"\x00"+sums[i]] {
			p.Create = append(p.Create, e)
			p.Sums = append(p.Sums, sums[i])
		}
	}
	for _, b := range remote {
		if sum, ok := want[b.Entry.key()]; !isHeld(held, b.Entry.key()) && (!ok || sum != b.Sum) {
			p.Delete = append(p.Delete, b)
		}
	}
	return p
}

// isHeld says whether key, or a directory above it, is held.
func isHeld(held map[string]bool, key string) bool {
	for k := key; ; {
		if held[k] {
			return true
		}
		i := strings.LastIndexByte(k, '/')
		if i < 0 {
			return false
		}
		k = k[:i]
	}
}
