package acme

import (
	"cmp"
	"slices"
	"strings"
)

// Challenge types a CertRequest may ask for.
const (
	ChallengeHTTP01 = "http-01"
	ChallengeDNS01  = "dns-01"
)

// CertRequest is one certificate the controller wants and how to order it.
type CertRequest struct {
	Names     []string
	Challenge string // ChallengeHTTP01 ("http-01", the default when "") or ChallengeDNS01
	Profile   string // ACME profile; "" = the manager's default
}

// Requests turns plain host lists into HTTP-01 requests with the default
// profile: what Want took before requests said how to order.
func Requests(sets [][]string) []CertRequest {
	out := make([]CertRequest, len(sets))
	for i, s := range sets {
		out[i] = CertRequest{Names: s}
	}
	return out
}

// group is one certificate to keep: its names and how to order it. The
// profile is the effective one (the default filled in), so a change of the
// default is seen like a change of a label.
type group struct {
	names     []string
	challenge string
	profile   string
	fallback  string // the default profile, which a certificate that records none counts as
}

// IsWildcard reports whether name is a wildcard DNS name ("*.example.com").
// Only DNS-01 can prove control of one.
func IsWildcard(name string) bool { return strings.HasPrefix(name, "*.") }

// CertName is the name a certificate is stored under: its first host, with
// a wildcard's "*" spelled "_" ("_.example.com", nginx-proxy's spelling),
// since the path goes into nginx's config and a shell glob character has
// no place in either.
func CertName(first string) string {
	if rest, ok := strings.CutPrefix(first, "*."); ok {
		return "_." + rest
	}
	return first
}

// groupRequests merges requests that share a name (Groups) and decides how
// each group is ordered: by DNS-01 when any of its requests asks for it or
// any name is a wildcard, else HTTP-01; with the first non-empty profile of
// its requests in the order of their sorted names (so the result does not
// depend on the order containers were listed in), else defaultProfile. Pure.
func groupRequests(reqs []CertRequest, defaultProfile string) []group {
	reqs = slices.Clone(reqs)
	for i := range reqs {
		reqs[i].Names = slices.Sorted(slices.Values(reqs[i].Names))
	}
	slices.SortStableFunc(reqs, func(a, b CertRequest) int {
		return cmp.Or(slices.Compare(a.Names, b.Names), strings.Compare(a.Profile, b.Profile))
	})
	sets := make([][]string, 0, len(reqs))
	for _, r := range reqs {
		if len(r.Names) > 0 {
			sets = append(sets, r.Names)
		}
	}
	merged := Groups(sets)
	out := make([]group, len(merged))
	for i, names := range merged {
		g := group{names: names, challenge: ChallengeHTTP01}
		for _, r := range reqs {
			if len(r.Names) == 0 || !slices.Contains(names, r.Names[0]) {
				continue
			}
			if r.Challenge == ChallengeDNS01 {
				g.challenge = ChallengeDNS01
			}
			if g.profile == "" {
				g.profile = r.Profile
			}
		}
		if slices.ContainsFunc(names, IsWildcard) {
			g.challenge = ChallengeDNS01
		}
		g.profile, g.fallback = cmp.Or(g.profile, defaultProfile), defaultProfile
		out[i] = g
	}
	return out
}

// profileStale says whether a certificate stored with profile stored must be
// renewed because the group now wants another. A certificate with no
// recorded profile (imported, or ordered before berth recorded it) counts
// as ordered with the default, so it is not renewed for that alone.
func (g group) profileStale(stored string) bool {
	return cmp.Or(stored, g.fallback) != g.profile
}
