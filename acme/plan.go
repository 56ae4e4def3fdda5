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
// never queued behind routine work. Pure.
func planJobs(groups [][]string, certs map[string]*certInfo, names map[string]NameState, running map[string]bool, now time.Time) ([]job, time.Time) {
	var fresh, renewals []job
	next := now.Add(maxSleep)
	for _, g := range groups {
		name := g[0]
		if running[name] {
			continue
		}
		var eligible []string
		for _, n := range g {
			st := names[n]
			switch {
			case st.Revoked:
			case st.NextAttempt.After(now):
				next = earliest(next, st.NextAttempt)
			default:
				eligible = append(eligible, n)
			}
		}
		if len(eligible) == 0 {
			continue
		}
		ci := certs[name]
		if ci == nil || !ci.leaf().NotAfter.After(now) || revoked(ci, names) {
			fresh = append(fresh, job{cert: name, names: eligible})
			continue
		}
		if !covers(ci.stored.Meta.Domains, eligible) {
			fresh = append(fresh, job{cert: name, names: eligible})
			continue
		}
		if now.Before(ci.renewAt) {
			next = earliest(next, ci.renewAt)
			continue
		}
		renewals = append(renewals, job{cert: name, names: eligible, replaces: ci, renewal: true})
	}
	return append(fresh, renewals...), next
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
