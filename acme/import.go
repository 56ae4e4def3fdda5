package acme

import (
	"cmp"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"
)

// "berth import DIR": certificates from an acme-companion / nginx-proxy
// certs volume or a certbot tree (pairs.go lists the layouts) become
// berth's own, saved through Store.Save like an order's result, so moving
// to berth orders nothing while they are valid and berth renews them later
// as its own. It runs next to the daemon, which picks the new store
// entries up on its refresh tick like those of "berth renew".

// ImportResult is what Import did with one certificate file.
type ImportResult struct {
	File     string
	Name     string // the store name it was saved under
	Domains  []string
	NotAfter time.Time
	// Skipped says why it was not imported; "" when it was. Problem marks
	// an unusable file (expired, mismatched, unparsable), as opposed to
	// one the store does not need.
	Skipped string
	Problem bool
}

// Import copies every valid certificate found in dir into store, newest
// first. A file is skipped, with the reason, when it is unusable or when
// the store already has a certificate at least as new for all its names
// (so importing twice imports once); another path to a pair already seen
// is left out. An unreadable dir is the only error.
func Import(store Store, dir string, now time.Time) ([]ImportResult, error) {
	files, rejected, err := findPairs(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, unwrapPath(err))
	}
	var out []ImportResult
	for _, r := range rejected {
		out = append(out, ImportResult{File: r.File, Skipped: r.Reason, Problem: true})
	}
	var pairs []*Pair
	seen := map[string]bool{}
	for _, f := range files {
		p, err := readPair(f)
		if err == nil {
			err = current(p.Leaf, now)
		}
		switch {
		case err != nil:
			out = append(out, ImportResult{File: f.Chain, Skipped: err.Error(), Problem: true})
		case seen[p.Hash]:
			// The same pair under another path (acme-companion links
			// <host>.crt to <host>/fullchain.pem, once per name): not a
			// certificate of its own, so not reported.
		default:
			seen[p.Hash] = true
			pairs = append(pairs, p)
		}
	}
	// Newest first: of two certificates for one name, the newer is
	// imported and the older skipped as not needed.
	slices.SortStableFunc(pairs, func(a, b *Pair) int { return b.Leaf.NotAfter.Compare(a.Leaf.NotAfter) })
	stored, err := storedValid(store, now)
	if err != nil {
		return out, err
	}
	for _, p := range pairs {
		r := ImportResult{File: p.File, Name: importName(p.Leaf), Domains: p.Names, NotAfter: p.Leaf.NotAfter}
		if r.Skipped = importSkip(p, r.Name, stored); r.Skipped == "" {
			meta := Meta{Domains: p.Names, Issuer: issuerName(p.Leaf), NotBefore: p.Leaf.NotBefore, NotAfter: p.Leaf.NotAfter,
				Obtained: now.UTC(), Source: SourceImport, File: p.File}
			if err := store.Save(r.Name, p.ChainPEM, p.KeyPEM, meta); err != nil {
				r.Skipped, r.Problem = err.Error(), true
			} else if st, err := store.Load(r.Name); err == nil {
				stored[r.Name] = st
			}
		}
		out = append(out, r)
	}
	slices.SortStableFunc(out, func(a, b ImportResult) int { return cmp.Compare(a.File, b.File) })
	return out, nil
}

// importName is the store name of an imported certificate: its first DNS
// name, sorted, spelled as berth names the certificates it orders
// (CertName: a wildcard's "*" as "_", which a path nginx reads may hold).
func importName(leaf *x509.Certificate) string {
	names := slices.Sorted(slices.Values(leaf.DNSNames))
	return CertName(names[0])
}

// storedValid loads the store's current certificates that are valid at now.
func storedValid(store Store, now time.Time) (map[string]*Stored, error) {
	list, err := store.List()
	if err != nil {
		return nil, err
	}
	out := map[string]*Stored{}
	for _, n := range list {
		if st, err := store.Load(n); err == nil && current(st.Leaf, now) == nil {
			out[n] = st
		}
	}
	return out, nil
}

// importSkip says why p is not imported under name given the store's
// valid certificates, or "". Pure.
func importSkip(p *Pair, name string, stored map[string]*Stored) string {
	if st := stored[name]; st != nil {
		switch {
		case st.Leaf.Equal(p.Leaf):
			return "already in the store as " + name
		case !st.Leaf.NotAfter.Before(p.Leaf.NotAfter):
			return fmt.Sprintf("the store's certificate %s is valid as long or longer (until %s)", name, st.Leaf.NotAfter.UTC().Format(time.RFC3339))
		case !covers(p.Names, st.Meta.Domains):
			return fmt.Sprintf("it would replace the store's certificate %s, which also covers %s", name,
				strings.Join(without(st.Meta.Domains, p.Names), ", "))
		}
		return ""
	}
	for _, n := range p.Names {
		newer := false
		for _, st := range stored {
			newer = newer || slices.Contains(st.Meta.Domains, n) && !st.Leaf.NotAfter.Before(p.Leaf.NotAfter)
		}
		if !newer {
			return ""
		}
	}
	return "every name already has a certificate in the store valid as long or longer"
}
