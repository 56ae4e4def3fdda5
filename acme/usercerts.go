package acme

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/internal/atomicfile"
)

// Your own certificates: Options.UserDir (BERTH_USER_CERTS_DIR) is a
// read-only directory of certificates the user bought or got from a
// company CA. A valid one wins over ACME for the names it covers; berth
// never renews, revokes or deletes it, and orders nothing for its names
// while it is valid.
//
// berth copies each valid one into its own certificate volume as an
// immutable version, <certs>/.berth/.user/<hash of chain and key>/, and
// nginx is configured with the copy, not the user's file. So:
//   - nginx needs no mount of the user directory, and berth remains the
//     only writer of what nginx reads;
//   - what nginx serves is a file berth checked (principle 5): a user
//     half-way through replacing a file never feeds nginx a mismatched
//     pair, since the copy is made only from a pair that passed the checks;
//   - a replaced file has another hash, so another path: the config
//     changes and nginx reloads, exactly like an ACME renewal;
//   - a certificate served so far stays served from its copy while its
//     file is still there but fails the checks or cannot be read (the
//     user has replaced the certificate and not yet the key, or the
//     directory is unreadable for a moment): it goes, and berth orders
//     for its names, only once its file is removed or it expires.
//
// The ".user" directory can never be a certificate name (names never start
// with a dot), so the store's own versions and these never mix; Prune
// removes a copy once no nginx file names it and the user's file is gone.
// The directory is rescanned on every refresh tick (a couple of seconds,
// like the store); a pair is parsed again only when its content changes,
// and dates are checked on every pass.

// userVersions is the directory under .berth holding the copies.
const userVersions = ".user"

// Expiry warnings for user certificates, which berth cannot renew: from
// two weeks before expiry (time to buy or request a new one), once a day.
const (
	userWarnBefore = 14 * 24 * time.Hour
	userWarnEvery  = 24 * time.Hour
)

// userCert is a valid user certificate and its copy in the store.
type userCert struct {
	*Pair
	version string // .berth/.user/<hash>, as Stored.Version names versions
	copied  bool   // the copy exists: only then is it served
}

// userScan remembers checked pairs by content, so an unchanged directory
// costs a listing and reading a few KiB per certificate, and no parsing.
// Content, not file stamps: a file rewritten in place within the
// filesystem's timestamp granularity, at the same size, must still be
// noticed.
//
// It also remembers which problems the daemon has logged (told), so each
// is logged once while it lasts (refreshUser).
type userScan struct {
	dir   string
	cache map[scanKey]scannedPair
	told  map[problem]bool
}

// problem is a file (or the directory) that cannot be used, and why.
type problem struct {
	file, reason string
}

type scanKey struct {
	file pairFile
	hash string
}

type scannedPair struct {
	pair *Pair
	err  error
}

// scan returns the structurally valid pairs (one per content) and the
// files rejected with their reasons.
func (u *userScan) scan() ([]*Pair, []Rejected, error) {
	files, rejected, err := findPairs(u.dir)
	if err != nil {
		return nil, nil, err
	}
	next := make(map[scanKey]scannedPair, len(files))
	var pairs []*Pair
	seen := map[string]bool{}
	for _, f := range files {
		chain, key, err := readFiles(f)
		if err != nil {
			rejected = append(rejected, Rejected{f.Chain, err.Error()})
			continue
		}
		k := scanKey{f, pairHash(chain, key)}
		sp, ok := u.cache[k]
		if !ok {
			sp.pair, sp.err = filedPair(f, chain, key)
		}
		next[k] = sp
		switch {
		case sp.err != nil:
			rejected = append(rejected, Rejected{f.Chain, sp.err.Error()})
		case !seen[sp.pair.Hash]: // acme-companion style links name one pair twice
			seen[sp.pair.Hash] = true
			pairs = append(pairs, sp.pair)
		}
	}
	u.cache = next
	return pairs, rejected, nil
}

// currentPairs splits pairs into those valid at now and those not. Pure.
func currentPairs(pairs []*Pair, now time.Time) (valid []*Pair, rejected []Rejected) {
	for _, p := range pairs {
		if err := current(p.Leaf, now); err != nil {
			rejected = append(rejected, Rejected{p.File, err.Error()})
			continue
		}
		valid = append(valid, p)
	}
	return valid, rejected
}

// expiryWarningDue says whether to warn now that a user certificate
// expiring at notAfter will not be renewed by berth, given when that was
// last said (zero: never). Pure.
func expiryWarningDue(notAfter, now, last time.Time) bool {
	return !now.Before(notAfter.Add(-userWarnBefore)) && now.Before(notAfter) &&
		(last.IsZero() || now.Sub(last) >= userWarnEvery)
}

// nameMatches: name is pattern, or pattern is a wildcard for one more
// label (*.example.com matches a.example.com, not a.b.example.com).
func nameMatches(pattern, name string) bool {
	if pattern == name {
		return true
	}
	suffix, ok := strings.CutPrefix(pattern, "*")
	i := strings.IndexByte(name, '.')
	return ok && strings.HasPrefix(suffix, ".") && i > 0 && name[i:] == suffix
}

// wildcardOver is the wildcard that covers name one label up
// ("*.example.com" for "a.example.com"; nameMatches(wildcardOver(n), n)),
// or "" for a wildcard or a name of one label.
func wildcardOver(name string) string {
	if _, parent, ok := strings.Cut(name, "."); ok && parent != "" && !strings.HasPrefix(name, "*") {
		return "*." + parent
	}
	return ""
}

// coveredBy reports whether one of the name lists covers name. Pure.
func coveredBy(covering [][]string, name string) bool {
	return slices.ContainsFunc(covering, func(names []string) bool {
		return slices.ContainsFunc(names, func(p string) bool { return nameMatches(p, name) })
	})
}

// withoutCovered drops from each group the names a user certificate
// covers (wildcards included: berth orders nothing a valid user
// certificate can serve), and groups left empty. Pure.
func withoutCovered(groups []group, covering [][]string) []group {
	if len(covering) == 0 {
		return groups
	}
	var out []group
	for _, g := range groups {
		left := slices.DeleteFunc(slices.Clone(g.names), func(n string) bool { return coveredBy(covering, n) })
		if len(left) > 0 {
			g.names = left
			out = append(out, g)
		}
	}
	return out
}

// refreshUser rescans the user directory and reports the files it cannot
// use. A certificate served so far goes on being served, from its checked
// copy, while its file is still there but fails the checks or cannot be
// read (keptUser): a user replaces a certificate file and then its key,
// not both at once, and a directory can be unreadable for a moment;
// neither is a reason to order certificates for its names or to switch
// nginx to others.
func (m *Manager) refreshUser(now time.Time) {
	if m.opts.UserDir == "" {
		return
	}
	pairs, rejected, err := m.userScan.scan()
	valid, late := currentPairs(pairs, now)
	rejected = append(rejected, late...)
	m.mu.Lock()
	old := slices.Clone(m.user)
	m.mu.Unlock()
	certs := m.userCerts(valid, old)
	kept := keptUser(old, certs, rejected, now, removed)
	for file := range kept {
		if err == nil && !slices.ContainsFunc(rejected, func(r Rejected) bool { return r.File == file }) {
			rejected = append(rejected, Rejected{file, unreadable(file)})
		}
	}
	m.reportUser(rejected, kept, err)
	for _, file := range slices.Sorted(maps.Keys(kept)) {
		certs = append(certs, kept[file])
	}
	m.mu.Lock()
	for _, uc := range old {
		if !slices.ContainsFunc(certs, func(c *userCert) bool { return c.Hash == uc.Hash }) {
			delete(m.reported, "serving "+uc.Hash) // say so again if it comes back
		}
	}
	m.user = certs
	m.mu.Unlock()
}

// reportUser logs each problem of this pass that was not already there
// in the last one: once while it lasts, but again when a file breaks the
// same way after it was fixed or removed in between (the user must hear
// of it then too). While the directory cannot be read, the files'
// problems are unknown, so those logged stay remembered.
func (m *Manager) reportUser(rejected []Rejected, kept map[string]*userCert, scanErr error) {
	told := map[problem]bool{}
	if scanErr != nil {
		for p := range m.userScan.told {
			if p.file != m.opts.UserDir {
				told[p] = true
			}
		}
		level, msg := logrus.WarnLevel, "cannot read the user certificate directory; the certificates read before are still served"
		if errors.Is(scanErr, fs.ErrNotExist) {
			level, msg = logrus.DebugLevel, "no user certificate directory"
		}
		m.tellUser(told, problem{m.opts.UserDir, scanErr.Error()}, m.opts.Log.WithError(scanErr).WithField("dir", m.opts.UserDir), level, msg)
	}
	for _, r := range rejected {
		log := m.opts.Log.WithFields(logrus.Fields{"file": r.File, "reason": r.Reason})
		if k := kept[r.File]; k != nil {
			// Another problem: the previous version going (it expired, or the
			// file was removed in between) must be said.
			m.tellUser(told, problem{r.File, r.Reason + " (previous version served)"}, log.WithField("not_after", k.Leaf.NotAfter.UTC().Format(time.RFC3339)),
				logrus.WarnLevel, "user certificate file rejected; the version berth checked before is still served until the file is fixed or removed")
			continue
		}
		m.tellUser(told, problem{r.File, r.Reason}, log, logrus.WarnLevel, "user certificate ignored")
	}
	m.userScan.told = told
}

// tellUser logs p unless the last pass did, and records it in told.
func (m *Manager) tellUser(told map[problem]bool, p problem, e *logrus.Entry, level logrus.Level, msg string) {
	if !m.userScan.told[p] {
		e.Log(level, msg)
	}
	told[p] = true
}

// userCerts are the valid pairs as user certificates, each knowing
// whether its copy exists.
func (m *Manager) userCerts(valid []*Pair, old []*userCert) []*userCert {
	copied := map[string]bool{}
	for _, uc := range old {
		copied[uc.Hash] = copied[uc.Hash] || uc.copied
	}
	certs := make([]*userCert, 0, len(valid))
	for _, p := range valid {
		uc := &userCert{Pair: p, version: filepath.Join(versionsDir, userVersions, p.Hash), copied: copied[p.Hash]}
		if !uc.copied {
			uc.copied = m.opts.Store.hasVersion(uc.version)
		}
		certs = append(certs, uc)
	}
	return certs
}

// keptUser is, by file, the user certificates of the last pass (old) that
// stay in service although this pass did not find them valid: each one
// still valid at now whose file is still there, whether the checks
// rejected it or it could not be read (the listing failed, or a link
// dangles). Its copy in the store is immutable and was checked, so nginx
// still serves a pair that passed the checks. One goes once its file is
// removed (removed says so: a listing is not trusted to say it, since it
// also misses what it cannot read), once it expires, or once its file
// holds a valid pair again (fresh has it: the new pair takes over).
// Pure but for removed.
func keptUser(old, fresh []*userCert, rejected []Rejected, now time.Time, removed func(file string) bool) map[string]*userCert {
	freshHash, freshFile := map[string]bool{}, map[string]bool{}
	for _, uc := range fresh {
		freshHash[uc.Hash], freshFile[uc.File] = true, true
	}
	listed := map[string]bool{}
	for _, r := range rejected {
		listed[r.File] = true
	}
	kept := map[string]*userCert{}
	for _, uc := range old {
		if current(uc.Leaf, now) == nil && !freshHash[uc.Hash] && !freshFile[uc.File] && kept[uc.File] == nil &&
			(listed[uc.File] || !removed(uc.File)) {
			kept[uc.File] = uc
		}
	}
	return kept
}

// unreadable says why a file that is there was not listed.
func unreadable(file string) string {
	if _, err := os.Stat(file); err != nil {
		return "cannot read: " + unwrapPath(err).Error()
	}
	return "not a regular file"
}

// removed: the file is gone (it does not exist, or a directory on its
// path does not), as opposed to unreadable.
func removed(file string) bool {
	_, err := os.Lstat(file)
	return errors.Is(err, fs.ErrNotExist)
}

func (m *Manager) logUserOnce(key string, e *logrus.Entry, level logrus.Level, msg string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.reported[key] {
		m.reported[key] = true
		e.Log(level, msg)
	}
}

// copyUser writes the copy of each valid user certificate that has none
// yet (only the daemon's Run does: "berth render" writes nothing), and
// warns about those close to expiry.
func (m *Manager) copyUser(now time.Time) {
	m.mu.Lock()
	certs := slices.Clone(m.user)
	m.mu.Unlock()
	for _, uc := range certs {
		log := m.opts.Log.WithFields(logrus.Fields{"file": uc.File, "hosts": strings.Join(uc.Names, ","),
			"not_after": uc.Leaf.NotAfter.UTC().Format(time.RFC3339)})
		if !uc.copied {
			meta := Meta{Domains: uc.Names, Issuer: issuerName(uc.Leaf), NotBefore: uc.Leaf.NotBefore, NotAfter: uc.Leaf.NotAfter,
				Obtained: now.UTC(), Source: SourceUser, File: uc.File}
			if err := m.opts.Store.saveVersion(uc.version, uc.ChainPEM, uc.KeyPEM, meta); err != nil {
				m.logUserOnce("copy "+uc.Hash+" "+err.Error(), log.WithError(err), logrus.ErrorLevel, "cannot copy user certificate into the certificate volume")
				continue
			}
			m.mu.Lock()
			uc.copied = true
			m.mu.Unlock()
		}
		m.logUserOnce("serving "+uc.Hash, log, logrus.InfoLevel, "serving your own certificate for its names; berth orders none for them while it is valid")
		m.mu.Lock()
		due := expiryWarningDue(uc.Leaf.NotAfter, now, m.userWarned[uc.Hash])
		if due {
			m.userWarned[uc.Hash] = now
		}
		m.mu.Unlock()
		if due {
			log.WithField("days_left", int(uc.Leaf.NotAfter.Sub(now).Hours()/24)).
				Warn("your own certificate expires soon and berth does not renew it: replace the file")
		}
	}
}

// userNamesLocked lists the names of each valid user certificate.
func (m *Manager) userNamesLocked(now time.Time) [][]string {
	var out [][]string
	for _, uc := range m.user {
		if current(uc.Leaf, now) == nil {
			out = append(out, uc.Names)
		}
	}
	return out
}

// userViewLocked is, per name, the copied user certificate to serve: the
// one that expires last (then the first file), valid at now.
func (m *Manager) userViewLocked(now time.Time) map[string]Paths {
	best := map[string]*userCert{}
	for _, uc := range m.user {
		if !uc.copied || current(uc.Leaf, now) != nil {
			continue
		}
		for _, h := range uc.Names {
			b := best[h]
			if b == nil || uc.Leaf.NotAfter.After(b.Leaf.NotAfter) || uc.Leaf.NotAfter.Equal(b.Leaf.NotAfter) && uc.File < b.File {
				best[h] = uc
			}
		}
	}
	out := make(map[string]Paths, len(best))
	for h, uc := range best {
		dir := m.opts.Store.versionDir(uc.version)
		out[h] = Paths{Chain: filepath.Join(dir, "fullchain.pem"), Key: filepath.Join(dir, "privkey.pem"),
			Serial: uc.Leaf.SerialNumber.Text(16), Name: userName(m.opts.UserDir, uc.File)}
	}
	return out
}

// userName is how a user certificate is named in status and logs: its
// file, relative to the user directory.
func userName(dir, file string) string {
	if rel, err := filepath.Rel(dir, file); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return file
}

// hasVersion: the version's files exist.
func (s Store) hasVersion(version string) bool {
	dir := s.versionDir(version)
	return isFile(filepath.Join(dir, "fullchain.pem")) && isFile(filepath.Join(dir, "privkey.pem"))
}

// saveVersion writes an immutable version directory at a path of the
// caller's choosing (a content hash): written under a temporary name and
// renamed into place, so it exists whole or not at all. A version that is
// already there is left as it is (same name, same content).
func (s Store) saveVersion(version string, chainPEM, keyPEM []byte, meta Meta) error {
	dir := s.versionDir(version)
	if s.hasVersion(version) {
		return nil
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("copy to %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(parent, ".tmp-")
	if err != nil {
		return fmt.Errorf("copy to %s: %w", dir, err)
	}
	if err := s.writeVersionFiles(tmp, chainPEM, keyPEM, meta); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("copy to %s: %w", dir, err)
	}
	os.RemoveAll(dir) // a partial directory from elsewhere; never a published copy (hasVersion)
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("copy to %s: %w", dir, err)
	}
	return atomicfile.SyncDir(parent)
}
