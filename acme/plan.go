package acme

import (
	"crypto/x509"
	"slices"
	"strings"
	"time"
)

// Issued is a certificate fresh from the CA.
type Issued struct {
	ChainPEM, KeyPEM []byte
	CertURL, Profile string
}

// OrderError is a failed order: which names failed validation (the rest
// may be retried at once), and whether the CA rate-limited us.
type OrderError struct {
	Err         error
	Failed      []string
	RateLimited bool
	RetryAfter  time.Duration // the CA's Retry-After, 0 when none
}

func (e *OrderError) Error() string { return e.Err.Error() }
func (e *OrderError) Unwrap() error { return e.Err }

// certInfo is a stored certificate and when to renew it.
type certInfo struct {
	stored     *Stored
	version    string    // the store's version of these files
	loaded     time.Time // when this process loaded or stored it
	renewAt    time.Time
	jitter     float64
	ariChecked time.Time
}

func (c *certInfo) leaf() *x509.Certificate { return c.stored.Leaf }

// job is one order to place.
type job struct {
	cert     string   // certificate name (its first host)
	names    []string // names to order
	replaces *certInfo
	renewal  bool
	order    OrderOptions // challenge and profile; Replaces is set when the order is placed
}

// Groups merges host sets that share a name, so each name is in exactly one
// certificate: the union of every container's list it appears in. Sorted;
// pure.
func Groups(sets [][]string) [][]string {
	parent := map[string]string{}
	var find func(string) string
	find = func(x string) string {
		if parent[x] != x {
			parent[x] = find(parent[x])
		}
		return parent[x]
	}
	for _, set := range sets {
		for _, n := range set {
			if _, ok := parent[n]; !ok {
				parent[n] = n
			}
		}
		for _, n := range set[1:] {
			a, b := find(set[0]), find(n)
			if a != b {
				parent[max(a, b)] = min(a, b)
			}
		}
	}
	byRoot := map[string][]string{}
	for n := range parent {
		r := find(n)
		byRoot[r] = append(byRoot[r], n)
	}
	out := make([][]string, 0, len(byRoot))
	for _, g := range byRoot {
		slices.Sort(g)
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	return out
}

// planJobs decides which orders are due at now and when to look again.
// New and expanded certificates come before renewals, so a new service is
// never queued behind routine work. Two rules keep certificates from
// shrinking: a group whose names are all covered by ANY valid stored
// certificate places no new order (a host list that loses its first host
// keeps the certificate it has), and a renewal waits while one of the
// certificate's names is backed off, unless the certificate is close to
// expiry (then the failing name is split off). A certificate ordered with
// another profile than its group now wants is due at once. Pure.
func planJobs(groups []group, certs map[string]*certInfo, names map[string]NameState, running map[string]bool, now time.Time) ([]job, time.Time) {
	var fresh, renewals []job
	next := now.Add(maxSleep)
	planned := map[string]bool{} // certificate names with a job: one order per name at a time
	for _, gr := range groups {
		g, how := gr.names, OrderOptions{Challenge: gr.challenge, Profile: gr.profile}
		name := CertName(g[0])
		eligible, held := splitEligible(g, names, now)
		for _, n := range held {
			next = earliest(next, names[n].NextAttempt)
		}
		if len(eligible) == 0 || running[name] {
			continue
		}
		have := covering(certs, names, eligible, name, now)
		switch {
		case have == nil && !planned[name]:
			planned[name] = true
			fresh = append(fresh, job{cert: name, names: eligible, order: how})
		case have == nil:
		case running[have.stored.Name] || planned[have.stored.Name]:
		case now.Before(have.renewAt) && !gr.profileStale(have.stored.Meta.Profile):
			next = earliest(next, have.renewAt)
		case heldBack(have, held) && !closeToExpiry(have.leaf(), now):
			// Renewing now would drop the failing names from a certificate
			// that still covers them; retry with them when their backoff
			// ends, or without them once it is close to expiry.
			next = earliest(next, splitAt(have.leaf()))
		default:
			planned[have.stored.Name] = true
			renewals = append(renewals, job{cert: have.stored.Name, names: eligible, replaces: have, renewal: true, order: how})
		}
	}
	return append(fresh, renewals...), next
}

// splitEligible separates the names that may be ordered now from those
// backing off; revoked names are in neither.
func splitEligible(g []string, names map[string]NameState, now time.Time) (eligible, held []string) {
	for _, n := range g {
		switch st := names[n]; {
		case st.Revoked:
		case st.NextAttempt.After(now):
			held = append(held, n)
		default:
			eligible = append(eligible, n)
		}
	}
	return eligible, held
}

// covering returns the valid, unrevoked stored certificate that covers all
// of want: the one named prefer if it does, else the one that expires last.
func covering(certs map[string]*certInfo, names map[string]NameState, want []string, prefer string, now time.Time) *certInfo {
	if ci := certs[prefer]; ci != nil && usable(ci, names, now) && covers(ci.stored.Meta.Domains, want) {
		return ci
	}
	var best *certInfo
	for _, ci := range certs {
		if usable(ci, names, now) && covers(ci.stored.Meta.Domains, want) &&
			(best == nil || ci.leaf().NotAfter.After(best.leaf().NotAfter)) {
			best = ci
		}
	}
	return best
}

// usable: valid now and not revoked.
func usable(ci *certInfo, names map[string]NameState, now time.Time) bool {
	return ci.leaf().NotAfter.After(now) && !ci.leaf().NotBefore.After(now) && !revoked(ci, names)
}

func heldBack(ci *certInfo, held []string) bool {
	for _, n := range held {
		if slices.Contains(ci.stored.Meta.Domains, n) {
			return true
		}
	}
	return false
}

// closeToExpiry is when a certificate has less than a sixth of its
// lifetime left (15 days of 90, one of 6). Until then a renewal that a
// failing name would shrink waits for that name's backoff: a shrunken
// certificate breaks the failing name at once, a held one keeps serving it.
// After it, the remaining names must not expire with the failing one, so
// the failing name is split off. Renewal starts with a third (half, for
// short-lived certificates) left, so backoff gets several tries first.
func closeToExpiry(leaf *x509.Certificate, now time.Time) bool {
	return !now.Before(splitAt(leaf))
}

// splitAt is when a certificate becomes close to expiry.
func splitAt(leaf *x509.Certificate) time.Time {
	return leaf.NotAfter.Add(-leaf.NotAfter.Sub(leaf.NotBefore) / 6)
}

// maxSleep makes the manager look at every certificate at least twice a
// day even when nothing is due.
const maxSleep = 12 * time.Hour

// revoked reports whether any name of the certificate was revoked with
// "berth revoke": the certificate itself is then revoked and never served.
func revoked(ci *certInfo, names map[string]NameState) bool {
	for _, d := range ci.stored.Meta.Domains {
		if names[d].Revoked {
			return true
		}
	}
	return false
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func covers(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
