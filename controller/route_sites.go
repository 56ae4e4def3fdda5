package controller

import (
	"cmp"
	"slices"
	"strings"

	"github.com/berthproxy/berth/nginxconf"
)

// buildSites groups wants by host and path. A location balances across its
// ready backends; only when none is ready do the others get traffic, since
// a possibly-broken backend beats a certain 503.
//
// When the wants of one host disagree on an option, the rules are: for
// proxy.https the strictest mode wins (only, redirect, both, off), so
// adding a replica never weakens HTTPS; every other per-site option (hsts,
// server-snippet) and every per-location option comes from the first want
// by container name, then route name, so the result does not depend on the
// order Docker lists containers in. A redirect-from host that some route
// also serves is served, not redirected (a warning says so); one that two
// routes redirect goes to the first one's host.
func buildSites(wants []Want, certs map[string]nginxconf.TLS) ([]nginxconf.Site, []Problem) {
	wants = slices.Clone(wants)
	slices.SortStableFunc(wants, func(a, b Want) int {
		return cmp.Or(strings.Compare(a.Container, b.Container), strings.Compare(a.Route.Name, b.Route.Name))
	})
	type loc struct {
		opts            nginxconf.Location
		ready, notReady []string
	}
	paths := map[string]map[string]*loc{}
	sites := map[string]*nginxconf.Site{}
	for _, w := range wants {
		for _, h := range w.Route.Hosts {
			s := sites[h]
			if s == nil {
				s = &nginxconf.Site{Host: h, HTTPS: w.Route.HTTPS, HSTS: w.Route.Site.HSTS, ServerSnippet: w.Route.Site.ServerSnippet}
				sites[h], paths[h] = s, map[string]*loc{}
			}
			if httpsRank(w.Route.HTTPS) < httpsRank(s.HTTPS) {
				s.HTTPS = w.Route.HTTPS
			}
			l := paths[h][w.Route.Path]
			if l == nil {
				l = &loc{opts: w.Route.Loc}
				paths[h][w.Route.Path] = l
			}
			switch {
			case w.Backend == "": // not running: keeps the location, adds no server
			case w.Ready:
				l.ready = append(l.ready, w.Backend)
			default:
				l.notReady = append(l.notReady, w.Backend)
			}
		}
	}
	for h, s := range sites {
		for _, p := range sortedKeys(paths[h]) {
			l := paths[h][p]
			backends := l.ready
			if len(backends) == 0 {
				backends = l.notReady
			}
			slices.Sort(backends)
			l.opts.Path, l.opts.Backends = p, slices.Compact(backends)
			s.Locations = append(s.Locations, l.opts)
		}
	}
	problems := addRedirects(sites, wants)
	out := make([]nginxconf.Site, 0, len(sites))
	for _, h := range sortedKeys(sites) {
		s := *sites[h]
		if tls, ok := CertFor(certs, h); ok {
			s.TLS = &tls
		}
		out = append(out, s)
	}
	return out, problems
}

// addRedirects adds the proxy.redirect-from sites: each answers 301 to the
// first host of its route, with that route's HTTPS mode and HSTS.
func addRedirects(sites map[string]*nginxconf.Site, wants []Want) []Problem {
	var problems []Problem
	for _, w := range wants {
		for _, r := range w.Route.Site.RedirectFrom {
			s, taken := sites[r]
			switch {
			case taken && s.RedirectTo == "":
				problems = append(problems, Problem{Container: w.Container, Label: labelName(w.Route.Name, "redirect-from"), Value: r,
					Reason: r + " is also a routed host: it is served, not redirected", Warning: true})
			case !taken:
				sites[r] = &nginxconf.Site{Host: r, HTTPS: w.Route.HTTPS, HSTS: w.Route.Site.HSTS, RedirectTo: w.Route.Primary}
			}
		}
	}
	return problems
}

// httpsRank orders the HTTPS modes from strictest (lowest) to weakest.
func httpsRank(mode string) int {
	switch mode {
	case nginxconf.HTTPSOnly:
		return 0
	case nginxconf.HTTPSRedirect:
		return 1
	case nginxconf.HTTPSBoth:
		return 2
	}
	return 3
}

// CertFor finds the certificate that serves host: its own, else the
// wildcard one label up ("*.example.com" for "a.example.com", as TLS
// wildcards match one label and no more), so a wildcard certificate covers
// the exact hosts that have none of their own. Pure.
func CertFor[V any](certs map[string]V, host string) (V, bool) {
	if v, ok := certs[host]; ok {
		return v, true
	}
	if _, parent, ok := strings.Cut(host, "."); ok && strings.Contains(parent, ".") && !isWildcard(host) {
		v, ok := certs["*."+parent]
		return v, ok
	}
	var zero V
	return zero, false
}
