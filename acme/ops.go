package acme

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"
)

// Operations behind the "berth certs", "berth renew" and "berth revoke"
// commands. They run in a separate process next to the daemon and share
// only the files, changed through the same owners (Store, nameBook) and
// the same order routine as the daemon's; the daemon's refresh notices
// within refreshInterval.

// CertStatus is one line of "berth certs".
type CertStatus struct {
	Name        string
	Domains     []string
	Issuer      string
	NotAfter    time.Time
	NextRenewal time.Time // from the certificate's dates; ARI may move it earlier
	LastError   string    // the newest error of any of its names
	Revoked     bool      // revoked with "berth revoke": no longer served
	Source      string    // SourceUser: the user's own (Name is its file; never renewed); SourceImport: imported, renewed by berth
}

// NameStatus is a name with no certificate but with state (failing or revoked).
type NameStatus struct {
	Name string
	NameState
}

// Status reads the stored certificates and per-name state.
func Status(store Store, stateDir string) ([]CertStatus, []NameStatus, error) {
	names, _, err := newNameBook(stateDir, store.Log).load()
	if err != nil {
		return nil, nil, err
	}
	list, err := store.List()
	if err != nil {
		return nil, nil, err
	}
	covered := map[string]bool{} // names with a certificate, listed with it
	var certs []CertStatus
	for _, n := range list {
		st, err := store.Load(n)
		if err != nil {
			certs = append(certs, CertStatus{Name: n, LastError: err.Error()})
			continue
		}
		cs := CertStatus{Name: n, Domains: st.Meta.Domains, Issuer: st.Meta.Issuer, NotAfter: st.Leaf.NotAfter,
			NextRenewal: RenewAt(st.Leaf.NotBefore, st.Leaf.NotAfter, nil, 0), Source: st.Meta.Source}
		for _, d := range st.Meta.Domains {
			covered[d] = true
			if e := names[d].LastError; e != "" {
				cs.LastError = d + ": " + e
			}
			cs.Revoked = cs.Revoked || names[d].Revoked
		}
		certs = append(certs, cs)
	}
	var rest []NameStatus
	for _, n := range sortedNames(names) {
		if st := names[n]; !covered[n] && (st.Failures > 0 || st.Revoked) {
			rest = append(rest, NameStatus{n, names[n]})
		}
	}
	return certs, rest, nil
}

// UserStatus checks the user certificate directory as the daemon does:
// the certificates berth serves from it, and the files it ignores with
// the reason. A missing directory has none.
func UserStatus(dir string, now time.Time) ([]CertStatus, []Rejected, error) {
	if dir == "" {
		return nil, nil, nil
	}
	pairs, rejected, err := (&userScan{dir: dir}).scan()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("user certificates: %w", err)
	}
	valid, late := currentPairs(pairs, now)
	var certs []CertStatus
	for _, p := range valid {
		certs = append(certs, CertStatus{Name: userName(dir, p.File), Domains: p.Names, Issuer: issuerName(p.Leaf),
			NotAfter: p.Leaf.NotAfter, Source: SourceUser})
	}
	return certs, append(rejected, late...), nil
}

func sortedNames(m map[string]NameState) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// findCovering returns the stored certificate that serves host, skipping
// certificates with a revoked name.
func findCovering(store Store, host string, names map[string]NameState) (*Stored, error) {
	list, err := store.List()
	if err != nil {
		return nil, err
	}
	var best *Stored
	for _, n := range list {
		st, err := store.Load(n)
		if err != nil || !slices.Contains(st.Meta.Domains, host) || slices.ContainsFunc(st.Meta.Domains, func(d string) bool { return names[d].Revoked }) {
			continue
		}
		if best == nil || st.Leaf.NotAfter.After(best.Leaf.NotAfter) {
			best = st
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no stored certificate covers %s", host)
	}
	return best, nil
}

// RevokeHost revokes the certificate serving host at the CA and marks its
// names revoked: the daemon stops serving it on its next refresh and does
// not re-issue those names until "berth renew --force". The files stay, so
// the nginx config that still names them stays valid until then.
func RevokeHost(ctx context.Context, store Store, stateDir string, issuer Issuer, host string) (*Stored, error) {
	book := newNameBook(stateDir, store.Log)
	names, _, err := book.load()
	if err != nil {
		return nil, err
	}
	st, err := findCovering(store, host, names)
	if err != nil {
		return nil, err
	}
	if err := issuer.Revoke(ctx, st.ChainPEM); err != nil {
		return nil, err
	}
	if _, _, err := book.update(st.Meta.Domains, func(s NameState) NameState { s.Revoked = true; return s }); err != nil {
		return nil, fmt.Errorf("revoked at the CA, but not recorded (berth may keep serving it): %w", err)
	}
	return st, nil
}

// RenewHost orders a new certificate for the names of the one serving host
// (or for host alone when none does). Without force it refuses while the
// certificate is not due. force also clears the names' backoff and a
// revocation hold.
func RenewHost(ctx context.Context, store Store, stateDir string, issuer Issuer, host string, force bool, now time.Time) (*Stored, error) {
	if why := Unissuable(strings.TrimPrefix(host, "*.")); why != "" {
		return nil, fmt.Errorf("%s: %s", host, why)
	}
	book := newNameBook(stateDir, store.Log)
	state, _, err := book.load()
	if err != nil {
		return nil, err
	}
	if !force && state[host].Revoked {
		return nil, fmt.Errorf("%s was revoked; use --force to re-issue it", host)
	}
	if force {
		state = nil // a revoked certificate may be renewed: that is what lifts the hold
	}
	names, name := []string{host}, CertName(host)
	var opts OrderOptions
	if st, err := findCovering(store, host, state); err == nil {
		due := RenewAt(st.Leaf.NotBefore, st.Leaf.NotAfter, nil, 0)
		if !force && now.Before(due) {
			return nil, fmt.Errorf("%s is not due for renewal until %s; use --force to renew now", host, due.Format(time.RFC3339))
		}
		names, name = st.Meta.Domains, st.Name
		opts = OrderOptions{Replaces: ariReplaces(st), Challenge: st.Meta.Challenge, Profile: st.Meta.Profile}
	}
	if force {
		if _, _, err := book.update(names, func(s NameState) NameState { return NameState{LastServed: s.LastServed} }); err != nil {
			return nil, err
		}
	}
	return orderer{store: store, issuer: issuer, update: bookUpdate(book)}.place(ctx, name, names, opts, now)
}
