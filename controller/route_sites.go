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
	order := byContainerAndRoute(wants)
	sites := make(map[string]*nginxconf.Site, len(wants))
	locs := newLocations(len(wants))
	for _, i := range order {
		w := &wants[i]
		for _, h := range w.Route.Hosts {
			s := sites[h]
			if s == nil {
				s = &nginxconf.Site{Host: h, HTTPS: w.Route.HTTPS, HSTS: w.Route.Site.HSTS, ServerSnippet: w.Route.Site.ServerSnippet}
				sites[h] = s
			}
			if httpsRank(w.Route.HTTPS) < httpsRank(s.HTTPS) {
				s.HTTPS = w.Route.HTTPS
			}
			locs.add(hostPath{h, w.Route.Path}, w)
		}
	}
	locs.addTo(sites)
	problems := addRedirects(sites, wants, order)
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

// byContainerAndRoute is the order the rules of buildSites take wants in:
// by container name, then route name, then as listed. It sorts indices,
// not the wants: moving those large values (with the GC's write barriers
// on their pointers) cost more than all the rest of buildSites.
func byContainerAndRoute(wants []Want) []int {
	order := make([]int, len(wants))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(strings.Compare(wants[a].Container, wants[b].Container),
			strings.Compare(wants[a].Route.Name, wants[b].Route.Name), cmp.Compare(a, b))
	})
	return order
}

// hostPath is what one location of one site is keyed by.
type hostPath struct{ host, path string }

// locations gathers, per host and path, the options of the first want and
// the backends of all. The locations are values in one slice, found through
// index, rather than one allocation each.
type locations struct {
	index map[hostPath]int
	list  []siteLocation
	keys  []hostPath // parallel to list
}

// newLocations is sized for n locations: one per want is the usual case,
// so the list of large values is not copied as it grows.
func newLocations(n int) locations {
	return locations{index: make(map[hostPath]int, n), list: make([]siteLocation, 0, n), keys: make([]hostPath, 0, n)}
}

type siteLocation struct {
	opts            nginxconf.Location
	ready, notReady []string
}

// add counts w in the location at k, which it creates with w's options
// when w is the first want there.
func (ls *locations) add(k hostPath, w *Want) {
	i, ok := ls.index[k]
	if !ok {
		i = len(ls.list)
		ls.index[k] = i
		ls.list = append(ls.list, siteLocation{opts: w.Route.Loc})
		ls.keys = append(ls.keys, k)
	}
	l := &ls.list[i]
	switch {
	case w.Backend == "": // not running: keeps the location, adds no server
	case w.Ready:
		l.ready = append(l.ready, w.Backend)
	default:
		l.notReady = append(l.notReady, w.Backend)
	}
}

// addTo gives every site its locations, sorted by path, each balancing
// across its ready backends, or when none is ready across the others. The
// locations of all sites share one array, each site's part capped so that
// appending to it copies.
func (ls *locations) addTo(sites map[string]*nginxconf.Site) {
	order := make([]int, len(ls.list))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		ka, kb := ls.keys[a], ls.keys[b]
		return cmp.Or(strings.Compare(ka.host, kb.host), strings.Compare(ka.path, kb.path))
	})
	all := make([]nginxconf.Location, len(order))
	for start := 0; start < len(order); {
		host, end := ls.keys[order[start]].host, start
		for ; end < len(order) && ls.keys[order[end]].host == host; end++ {
			l := &ls.list[order[end]]
			backends := l.ready
			if len(backends) == 0 {
				backends = l.notReady
			}
			slices.Sort(backends)
			all[end] = l.opts
			all[end].Path, all[end].Backends = ls.keys[order[end]].path, slices.Compact(backends)
		}
		sites[host].Locations = all[start:end:end]
		start = end
	}
}

// addRedirects adds the proxy.redirect-from sites: each answers 301 to the
// first host of its route, with that route's HTTPS mode and HSTS. It takes
// wants in buildSites' order.
func addRedirects(sites map[string]*nginxconf.Site, wants []Want, order []int) []Problem {
	var problems []Problem
	for _, i := range order {
		w := &wants[i]
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
