package acme

import (
	"maps"
	"path/filepath"
	"slices"
	"time"

	"github.com/sirupsen/logrus"
)

// The inventory: which certificates are stored, as this process last saw
// them, and what nginx should serve from them.

// refresh picks up certificates and name state changed by another process
// ("berth renew", "berth revoke") or found on disk at start. It is cheap
// when nothing changed: one directory listing, a readlink per certificate
// and a stat of names.json; a certificate is reread only when its link
// points at a new version.
func (m *Manager) refresh() {
	list, err := m.opts.Store.List()
	if err != nil {
		m.opts.Log.WithError(err).Debug("cannot list stored certificates")
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := make(map[string]bool, len(list))
	for _, name := range list {
		seen[name] = true
		v := m.opts.Store.current(name)
		if ci := m.certs[name]; ci != nil && ci.version == v {
			continue
		}
		st, err := m.opts.Store.loadVersion(name, v)
		if err != nil {
			if key := "load " + name + " " + v; !m.reported[key] {
				m.reported[key] = true
				m.opts.Log.WithError(err).WithField("cert", name).Warn("stored certificate unusable; it will be re-issued if wanted")
			}
			delete(m.certs, name)
			continue
		}
		m.certs[name] = newCertInfo(st)
	}
	for name := range m.certs {
		if !seen[name] {
			delete(m.certs, name)
		}
	}
	now := time.Now()
	m.retired = slices.DeleteFunc(m.retired, func(ci *certInfo) bool { return !ci.leaf().NotAfter.After(now) })
	if stampOf(m.book.path) != m.namesStamp {
		if names, stamp, err := m.book.load(); err == nil {
			m.names, m.namesStamp = names, stamp
		}
	}
}

// Certs returns, for every host with a valid stored certificate, the files
// of its current version. When several certificates cover a host, the one
// that expires last wins; a valid user certificate (usercerts.go) wins
// over every stored one. A version handed out here is kept on disk until
// an InUse call made after this one no longer names it.
func (m *Manager) Certs() map[string]Paths {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.viewLocked(time.Now())
	if m.offered == nil {
		m.offered = map[string]bool{}
	}
	for _, p := range out {
		m.offered[versionOf(m.opts.Store.Dir, p.Chain)] = true
	}
	return out
}

// all is every certificate that may be served: current and retired.
func (m *Manager) all() []*certInfo {
	out := slices.AppendSeq(make([]*certInfo, 0, len(m.certs)+len(m.retired)), maps.Values(m.certs))
	return append(out, m.retired...)
}

func (m *Manager) view(now time.Time) map[string]Paths {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.viewLocked(now)
}

func (m *Manager) viewLocked(now time.Time) map[string]Paths {
	best := map[string]*certInfo{}
	for _, ci := range m.all() {
		if !usable(ci, m.names, now) {
			continue
		}
		for _, h := range ci.stored.Meta.Domains {
			if b := best[h]; b == nil || ci.leaf().NotAfter.After(b.leaf().NotAfter) {
				best[h] = ci
			}
		}
	}
	out := make(map[string]Paths, len(best))
	for h, ci := range best {
		dir := m.opts.Store.versionDir(ci.version)
		out[h] = Paths{Chain: filepath.Join(dir, "fullchain.pem"), Key: filepath.Join(dir, "privkey.pem"),
			Serial: ci.leaf().SerialNumber.Text(16), Name: ci.stored.Name}
	}
	// The user's own certificates win, a wildcard included: berth's
	// certificate for a.example.com gives way to the user's *.example.com,
	// since the controller looks a host's own name up before the wildcard,
	// and berth stops renewing the names a user certificate covers
	// (withoutCovered), so it would otherwise serve its own until expiry.
	user := m.userViewLocked(now)
	for h := range out {
		if p, ok := user[wildcardOver(h)]; ok {
			out[h] = p
		}
	}
	maps.Copy(out, user) // a user certificate naming the host itself wins over a user wildcard
	return out
}

// signalIfChanged sends on Changed when what Certs returns differs from
// what was last signalled: this covers stores, renewals, revocations,
// removals and expiry alike, without each of them having to remember.
func (m *Manager) signalIfChanged(now time.Time) {
	v := m.view(now)
	m.mu.Lock()
	same := maps.Equal(v, m.lastView)
	m.lastView = v
	m.mu.Unlock()
	if same {
		return
	}
	m.opts.Log.WithFields(logrus.Fields{"hosts": len(v)}).Debug("certificates changed")
	select {
	case m.changed <- struct{}{}:
	default:
	}
}
