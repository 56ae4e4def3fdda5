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
	State    string            // Docker's state: running, exited, paused, restarting, created (StateCreated)…
	Health   string            // "", HealthStarting, HealthHealthy or HealthUnhealthy
	Networks map[string]string // network name → IPv4 address ("" when none yet)
	IPv6     map[string]string // network name → global IPv6 address, where it has one
	Exposed  []int             // exposed TCP ports, sorted
	Env      map[string]string // environment, only when the engine reads it (BERTH_NGINX_PROXY_ENV=on)
	// DNSNames are, per network, the names besides its own that Docker's
	// DNS answers with the container's address there: its network aliases
	// (Compose gives each replica its service name) and its short ID.
	// The engine fills them for containers on user-defined networks.
	DNSNames map[string][]string
	// Healthcheck: the container declares a health check (its own or its
	// image's), whatever state it is in.
	Healthcheck bool
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

// Want is one route of a container, validated, reduced to what the config needs.
type Want struct {
	Container string
	Route     Route
	Backend   string // "ip:port" or "[ipv6]:port"; "" while the container is not running
	Ready     bool   // false while health is starting/unhealthy or not running
}

// CertNames are the names this want's certificate covers: its hosts and
// the hosts that redirect to it, so the redirect is served over HTTPS.
func (w Want) CertNames() []string {
	names := slices.Concat(w.Route.Hosts, w.Route.Site.RedirectFrom)
	slices.Sort(names)
	return slices.Compact(names)
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
	// Defaults give unset labels their values (validated settings).
	Defaults Defaults
	// NginxProxyEnv: containers' nginx-proxy variables count as labels
	// (BERTH_NGINX_PROXY_ENV=on; the Docker adapter reads Env only then).
	NginxProxyEnv bool
	// FileRoutes are the routes file's entries, backends resolved to addresses.
	FileRoutes []FileRoute
	// Resolver is the DNS server the nginx in use re-resolves backend names
	// against (ResolverFor its "nginx -V"); "" for nginx before 1.27.3,
	// which gets addresses only. See resolved.go for which locations use it.
	Resolver string
}

// Desired computes the nginx config for the given containers. Pure: no
// Docker, disk or clock. Containers with invalid labels or that nginx cannot
// reach are left out and reported; everything else is routed. A labelled
// container that exists but is not running (exited, paused, restarting)
// keeps its host with no backend, so its site answers 503 from nginx, with
// its certificate, until the container is removed: a stop for maintenance
// must not turn into another site's content or a TLS error.
func Desired(cs []Container, in Inputs) (nginxconf.Config, []Want, []Problem) {
	// Most containers have one route: sized for that, appending never
	// copies the (large) wants again.
	wants := make([]Want, 0, len(cs))
	var problems []Problem
	for _, c := range cs {
		if c.ID == in.Nginx.ID {
			continue
		}
		if in.NginxProxyEnv {
			var warning *Problem
			if c, warning = withNginxProxyEnv(c); warning != nil {
				problems = append(problems, *warning)
			}
		}
		var ps []Problem
		wants, ps = project(wants, c, in.Nginx, in.Defaults)
		problems = append(problems, ps...)
	}
	fws, fps := fileWants(in.FileRoutes, in.Defaults)
	wants, problems = append(wants, fws...), append(problems, fps...)
	cfg := nginxconf.Config{Webroot: in.Webroot, HTTPListen: in.Listen[0], HTTPSListen: in.Listen[1], HTTP2: in.HTTP2,
		TrustedProxies: in.TrustedProxies, IPv6: hasIPv6(in.Nginx), Resolver: in.Resolver}
	sites, ps := buildSites(wants, in.Certs)
	if in.Resolver != "" {
		sites = resolveLocations(sites, wants, cs, in.Nginx)
	}
	cfg.Sites = sites
	problems = append(problems, ps...)
	slices.SortFunc(problems, func(a, b Problem) int { return strings.Compare(a.String(), b.String()) })
	return cfg, wants, problems
}

// StateCreated is Docker's state of a container that was never started.
const StateCreated = "created"

// project validates one container and resolves its backend address: it
// appends one Want per route to wants, or none when any label is bad (one
// Problem per label). It appends to the caller's slice rather than
// returning one of its own so that each (large) Want is copied once.
//
// A container that was created and never started ("docker run" between its
// create and its start, "docker create") is not routed and keeps no host:
// it has never served, and the pass that caught it would reload nginx for a
// 503 site only to reload again a moment later when it starts.
func project(wants []Want, c Container, nginx Container, d Defaults) ([]Want, []Problem) {
	if c.State == StateCreated {
		return wants, nil
	}
	routes, opted, errs, warns := ParseRoutes(c.Labels, d)
	if !opted && len(errs) == 0 {
		return wants, nil
	}
	var ps []Problem
	for _, w := range warns {
		ps = append(ps, Problem{c.Name, w.Label, w.Value, w.Reason, true})
	}
	for _, e := range errs {
		ps = append(ps, Problem{Container: c.Name, Label: e.Label, Value: e.Value, Reason: e.Reason + "; container not routed"})
	}
	if len(errs) > 0 {
		return wants, ps
	}
	before := len(wants)
	for _, r := range routes {
		w, err := resolve(c, r, nginx)
		if err != nil {
			return wants[:before], append(ps, err.problem(c.Name))
		}
		wants = append(wants, w)
	}
	return wants, ps
}

// routeError is why one route has no backend; it skips the container.
type routeError struct {
	label, value string
	err          error
}

func (e *routeError) problem(container string) Problem {
	return Problem{Container: container, Label: e.label, Value: e.value, Reason: e.err.Error() + "; container not routed"}
}

// resolve finds one route's backend address.
func resolve(c Container, r Route, nginx Container) (Want, *routeError) {
	if !c.Running {
		// No address to route to, but the scope rule still holds: only a
		// container nginx could reach when running keeps a host here.
		if err := sharesNetwork(r.Network, c.Networks, nginx.Networks); err != nil {
			return Want{}, &routeError{err: err}
		}
		return Want{Container: c.Name, Route: r}, nil
	}
	port, err := choosePort(r.Port, c.Exposed)
	if err != nil {
		return Want{}, &routeError{label: labelName(r.Name, "port"), err: err}
	}
	ip, err := chooseAddress(r.Network, c, nginx)
	if err != nil {
		e := &routeError{err: err}
		if r.Network != "" {
			e.label, e.value = labelName(r.Name, "network"), r.Network
		}
		return Want{}, e
	}
	return Want{
		Container: c.Name,
		Route:     r,
		Backend:   net.JoinHostPort(ip, strconv.Itoa(port)),
		Ready:     c.Health != HealthStarting && c.Health != HealthUnhealthy,
	}, nil
}

// hasIPv6 is true when the nginx container has an IPv6 address.
func hasIPv6(nginx Container) bool {
	for _, a := range nginx.IPv6 {
		if a != "" {
			return true
		}
	}
	return false
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

// chooseAddress finds the container's address on a network nginx is also
// on: the named one, or the first shared one by name (deterministic). IPv4
// is preferred; a network where the container has only an IPv6 address is
// used when nginx has one there too.
func chooseAddress(want string, c Container, nginx Container) (string, error) {
	mine, nginxNets := c.Networks, nginx.Networks
	addr := func(n string) string {
		if ip := mine[n]; ip != "" {
			return ip
		}
		if c.IPv6[n] != "" && nginx.IPv6[n] != "" {
			return c.IPv6[n]
		}
		return ""
	}
	if want != "" {
		_, onIt := mine[want]
		_, nginxOn := nginxNets[want]
		switch {
		case !onIt:
			return "", fmt.Errorf("not attached to network %s (its networks: %s)", want, names(mine))
		case !nginxOn:
			return "", fmt.Errorf("nginx is not on network %s (nginx networks: %s)", want, names(nginxNets))
		case addr(want) == "":
			return "", fmt.Errorf("no IPv4 address, nor an IPv6 address nginx can reach, on network %s", want)
		}
		return addr(want), nil
	}
	for _, n := range sortedKeys(mine) {
		if _, shared := nginxNets[n]; shared && addr(n) != "" && mine[n] != "" {
			return mine[n], nil
		}
	}
	for _, n := range sortedKeys(mine) {
		if _, shared := nginxNets[n]; shared && addr(n) != "" {
			return addr(n), nil
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
