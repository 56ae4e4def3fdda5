package acme

import (
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// Clean-up: last-use times, certificates no site uses, and versions no
// nginx file names.

// persistServed records, to the hour, that the hosts with a site now were
// used: only the entries that moved on, so it writes at most hourly.
func (m *Manager) persistServed(now time.Time) {
	m.mu.Lock()
	var stale []string
	for h := range m.served {
		if now.Sub(m.names[h].LastServed) >= servedResolution {
			stale = append(stale, h)
		}
	}
	m.mu.Unlock()
	if len(stale) == 0 {
		return
	}
	mark := now.Truncate(servedResolution)
	if err := m.updateNames(stale, func(st NameState) NameState { st.LastServed = mark; return st }); err != nil {
		m.opts.Log.WithError(err).Error("cannot persist last-use times")
	}
}

// cleanUnused unpublishes certificates that no site has used for
// UnusedGrace. A certificate berth has never seen in use counts from when
// it was loaded, so a restored backup is not removed at once.
func (m *Manager) cleanUnused(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, ci := range m.certs {
		last, inUse := ci.loaded, false
		for _, d := range ci.stored.Meta.Domains {
			inUse = inUse || m.served[d]
			if t := m.names[d].LastServed; t.After(last) {
				last = t
			}
		}
		if inUse || m.running[name] || now.Sub(last) < m.opts.UnusedGrace {
			continue
		}
		if err := m.opts.Store.Delete(name); err != nil {
			m.opts.Log.WithError(err).WithField("cert", name).Error("cannot remove unused certificate")
			continue
		}
		delete(m.certs, name)
		m.opts.Log.WithFields(logrus.Fields{"cert": name, "last_used": last.UTC().Format(time.RFC3339)}).
			Info("removed a certificate no site has used for the grace period")
	}
}

// InUse says which certificate and key files the nginx files on disk name
// now. Versions that are not current and not named here (nor handed out
// by Certs since) are removed; before the first call nothing is removed.
func (m *Manager) InUse(files []string) {
	set := make(map[string]bool, len(files))
	for _, f := range files {
		if v := versionOf(m.opts.Store.Dir, f); v != "" {
			set[v] = true
		}
	}
	m.mu.Lock()
	m.inUse, m.offered, m.pruneDue = set, nil, true
	m.mu.Unlock()
	m.poke()
}

// versionOf returns the version directory (as Stored.Version names it) a
// file lies in, or "" when it is not in one of dir's versions.
func versionOf(dir, file string) string {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(file))
	if err != nil {
		return ""
	}
	parts := strings.Split(rel, string(filepath.Separator))
	if len(parts) < 4 || parts[0] != versionsDir {
		return ""
	}
	return filepath.Join(parts[:3]...)
}

// prune removes the versions nothing refers to. It holds the lock while it
// does, so Certs cannot hand out a version that is being removed.
func (m *Manager) prune() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.pruneDue || m.inUse == nil {
		return
	}
	m.pruneDue = false
	loaded := make(map[string]bool, len(m.certs))
	for _, ci := range m.all() {
		loaded[filepath.Clean(ci.version)] = true
	}
	for _, uc := range m.user {
		loaded[filepath.Clean(uc.version)] = true
	}
	removed, err := m.opts.Store.Prune(func(v string) bool { return m.inUse[v] || m.offered[v] || loaded[v] })
	if err != nil {
		m.opts.Log.WithError(err).Error("cannot remove old certificate versions")
	}
	for _, v := range removed {
		m.opts.Log.WithField("version", v).Debug("removed a certificate version no nginx file names")
	}
}
