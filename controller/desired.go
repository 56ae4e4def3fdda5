package controller

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/berthproxy/berth/nginxconf"
)

// Container is the plain projection of a Docker container that the pure
// core works on. The Docker adapter fills it; tests build it by hand.
type Container struct {
	ID       string
	Name     string
	Labels   map[string]string
	Running  bool
	State    string            // Docker's state: running, exited, paused, restarting, created…
	Health   string            // "", HealthStarting, HealthHealthy or HealthUnhealthy
	Networks map[string]string // network name → IPv4 address ("" when none yet)
	Exposed  []int             // exposed TCP ports, sorted
	Env      map[string]string // environment, only when the engine reads it (BERTH_NGINX_PROXY_ENV=on)
}

// Health states as Docker reports them.
const (
	HealthStarting  = "starting"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// Problem is one reason a container is (partly) not routed. Problems are
// values, collected per pass and logged when they change.
type Problem struct {
	Container string // name
	Label     string // the label at fault, if any
	Value     string
	Reason    string
	Warning   bool // the container is still routed
}

func (p Problem) String() string {
	if p.Label != "" {
		return fmt.Sprintf("container %s: label %s=%q: %s", p.Container, p.Label, p.Value, p.Reason)
	}
	return fmt.Sprintf("container %s: %s", p.Container, p.Reason)
}

// Want is one container's validated request, reduced to what the config needs.
type Want struct {
	Container string
	Route     Route
	Backend   string // "ip:port"; "" while the container is not running
	Ready     bool   // false while health is starting/unhealthy or not running
}

// Inputs for Desired beyond the containers.
type Inputs struct {
	Nginx   Container                // the nginx container (its networks decide reachability)
	Webroot string                   // ACME webroot path inside nginx
	Certs   map[string]nginxconf.TLS // hosts with a certificate on disk
	Listen  [2]string                // optional HTTP/HTTPS listen overrides (tests)
	HTTP2   string                   // nginxconf.HTTP2* for the nginx in use
	// TrustedProxies are CIDRs whose forwarded client address is honoured.
	TrustedProxies []string
}

// Desired computes the nginx config for the given containers. Pure: no
// Docker, disk or clock. Containers with invalid labels or that nginx cannot
// reach are left out and reported; everything else is routed. A labelled
// container that exists but is not running (exited, paused, restarting)
// keeps its host with no backend, so its site answers 503 from nginx, with
// its certificate, until the container is removed: a stop for maintenance
// must not turn into another site's content or a TLS error.
func Desired(cs []Container, in Inputs) (nginxconf.Config, []Want, []Problem) {
	var wants []Want
	var problems []Problem
	for _, c := range cs {
		if c.ID == in.Nginx.ID {
			continue
		}
		w, ok, ps := project(c, in.Nginx)
		problems = append(problems, ps...)
		if ok {
			wants = append(wants, w)
		}
	}
	cfg := nginxconf.Config{Webroot: in.Webroot, HTTPListen: in.Listen[0], HTTPSListen: in.Listen[1], HTTP2: in.HTTP2,
		TrustedProxies: in.TrustedProxies}
	cfg.Sites = buildSites(wants, in.Certs)
	slices.SortFunc(problems, func(a, b Problem) int { return strings.Compare(a.String(), b.String()) })
	return cfg, wants, problems
}

// project validates one container and resolves its backend address.
func project(c Container, nginx Container) (Want, bool, []Problem) {
	route, opted, errs, warns := ParseLabels(c.Labels)
	if !opted {
		return Want{}, false, nil
	}
	var ps []Problem
	for _, w := range warns {
		ps = append(ps, Problem{c.Name, w.Label, w.Value, w.Reason, true})
	}
	for _, e := range errs {
		ps = append(ps, Problem{Container: c.Name, Label: e.Label, Value: e.Value, Reason: e.Reason + "; container not routed"})
	}
	if len(errs) > 0 {
		return Want{}, false, ps
	}
	if !c.Running {
		// No address to route to, but the scope rule still holds: only a
		// container nginx could reach when running keeps a host here.
		if err := sharesNetwork(route.Network, c.Networks, nginx.Networks); err != nil {
			return Want{}, false, append(ps, Problem{Container: c.Name, Reason: err.Error() + "; container not routed"})
		}
		return Want{Container: c.Name, Route: route}, true, ps
	}
	port, err := choosePort(route.Port, c.Exposed)
	if err != nil {
		return Want{}, false, append(ps, Problem{Container: c.Name, Label: LabelPort, Reason: err.Error() + "; container not routed"})
	}
	ip, err := chooseAddress(route.Network, c.Networks, nginx.Networks)
	if err != nil {
		p := Problem{Container: c.Name, Reason: err.Error() + "; container not routed"}
		if route.Network != "" {
			p.Label, p.Value = LabelNetwork, route.Network
		}
		return Want{}, false, append(ps, p)
	}
	w := Want{
		Container: c.Name,
		Route:     route,
		Backend:   net.JoinHostPort(ip, strconv.Itoa(port)),
		Ready:     c.Health != HealthStarting && c.Health != HealthUnhealthy,
	}
	return w, true, ps
}

// choosePort applies the port rule: the label; else the only exposed port;
// else 80 if exposed; else an error that lists what is exposed.
func choosePort(label int, exposed []int) (int, error) {
	switch {
	case label != 0:
		return label, nil
	case len(exposed) == 1:
		return exposed[0], nil
	case slices.Contains(exposed, 80):
		return 80, nil
	case len(exposed) == 0:
		return 0, fmt.Errorf("no %s label and no exposed port", LabelPort)
	}
	return 0, fmt.Errorf("no %s label and several exposed ports %v: set %s", LabelPort, exposed, LabelPort)
}

// chooseAddress finds the container's IP on a network nginx is also on:
// the named one, or the first shared one by name (deterministic).
func chooseAddress(want string, mine, nginxNets map[string]string) (string, error) {
	if want != "" {
		ip, onIt := mine[want]
		_, nginxOn := nginxNets[want]
		switch {
		case !onIt:
			return "", fmt.Errorf("not attached to network %s (its networks: %s)", want, names(mine))
		case !nginxOn:
			return "", fmt.Errorf("nginx is not on network %s (nginx networks: %s)", want, names(nginxNets))
		case ip == "":
			return "", fmt.Errorf("no IPv4 address on network %s", want)
		}
		return ip, nil
	}
	for _, n := range sortedKeys(mine) {
		if _, shared := nginxNets[n]; shared && mine[n] != "" {
			return mine[n], nil
		}
	}
	return "", fmt.Errorf("shares no network with nginx (container networks: %s; nginx networks: %s)", names(mine), names(nginxNets))
}

// sharesNetwork is chooseAddress without the address, for a container
// that is not running and so has none.
func sharesNetwork(want string, mine, nginxNets map[string]string) error {
	for _, n := range sortedKeys(mine) {
		if _, shared := nginxNets[n]; shared && (want == "" || want == n) {
			return nil
		}
	}
	if want != "" {
		return fmt.Errorf("not attached to network %s shared with nginx (its networks: %s; nginx networks: %s)", want, names(mine), names(nginxNets))
	}
	return fmt.Errorf("shares no network with nginx (container networks: %s; nginx networks: %s)", names(mine), names(nginxNets))
}

func names(m map[string]string) string {
	if len(m) == 0 {
		return "none"
	}
	return strings.Join(sortedKeys(m), ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// buildSites groups wants by host and path. A location balances across its
// ready backends; only when none is ready do the others get traffic, since
// a possibly-broken backend beats a certain 503.
func buildSites(wants []Want, certs map[string]nginxconf.TLS) []nginxconf.Site {
	type loc struct{ ready, notReady []string }
	paths := map[string]map[string]*loc{}
	https := map[string]string{}
	for _, w := range wants {
		for _, h := range w.Route.Hosts {
			if paths[h] == nil {
				paths[h] = map[string]*loc{}
			}
			l := paths[h][w.Route.Path]
			if l == nil {
				l = &loc{}
				paths[h][w.Route.Path] = l
			}
			switch {
			case w.Backend == "": // not running: keeps the location, adds no server
			case w.Ready:
				l.ready = append(l.ready, w.Backend)
			default:
				l.notReady = append(l.notReady, w.Backend)
			}
			// The strictest mode wins, so adding a replica never weakens HTTPS.
			if cur, ok := https[h]; !ok || httpsRank(w.Route.HTTPS) < httpsRank(cur) {
				https[h] = w.Route.HTTPS
			}
		}
	}
	sites := make([]nginxconf.Site, 0, len(paths))
	for _, h := range sortedKeys(paths) {
		s := nginxconf.Site{Host: h, HTTPS: https[h]}
		if tls, ok := certs[h]; ok {
			s.TLS = &tls
		}
		for _, p := range sortedKeys(paths[h]) {
			l := paths[h][p]
			backends := l.ready
			if len(backends) == 0 {
				backends = l.notReady
			}
			slices.Sort(backends)
			s.Locations = append(s.Locations, nginxconf.Location{Path: p, Backends: slices.Compact(backends)})
		}
		sites = append(sites, s)
	}
	return sites
}

func httpsRank(mode string) int {
	switch mode {
	case nginxconf.HTTPSRedirect:
		return 0
	case nginxconf.HTTPSBoth:
		return 1
	}
	return 2
}
