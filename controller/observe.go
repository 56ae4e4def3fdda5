package controller

import (
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berthproxy/berth/nginxconf"
	"github.com/berthproxy/berth/status"
)

// Observer receives what the loop knows, for "berth status", "berth why",
// /metrics and /healthz. Publish is called by the loop after every pass;
// Event and Stream by the event watcher, another goroutine: implementations
// must be safe for concurrent use and must not block (status.Board is one).
type Observer interface {
	Publish(status.ControllerPart)
	Event()
	// Stream: the event stream was subscribed (up) or broke; reconnect
	// marks a subscription after a break.
	Stream(up, reconnect bool)
}

// errRejected wraps a config that nginx -t refused, so a pass can tell a
// rejected reload from a failed one.
var errRejected = errors.New("nginx -t rejected the new config")

// passView is what one pass saw, filled in as the pass goes (see runPass)
// and published at its end.
type passView struct {
	listed   bool
	cs       []Container
	nginx    Container
	build    string
	cfg      nginxconf.Config
	wants    []Want
	problems []Problem
	plan     nginxconf.Plan
	applied  bool // write → nginx -t → signal was attempted
}

func (c *Controller) observeEvent() {
	if c.opts.Observer != nil {
		c.opts.Observer.Event()
	}
}

func (c *Controller) observeStream(up, reconnect bool) {
	if c.opts.Observer != nil {
		c.opts.Observer.Stream(up, reconnect)
	}
}

// publish hands the pass's view to the observer and forgets it.
func (c *Controller) publish(start time.Time, err error) {
	v := c.seen
	c.seen = passView{}
	if c.opts.Observer == nil {
		return
	}
	c.opts.Observer.Publish(controllerPart(v, c.pass, start, time.Since(start), err, c.notBefore, c.mismatched()))
}

// mismatched are the hosts whose served certificate was checked and found
// not to be the stored one.
func (c *Controller) mismatched() []string {
	if c.verifyFails == 0 {
		return nil
	}
	return sortedKeys(c.verify)
}

// controllerPart turns one pass's view into the status model. Pure.
func controllerPart(v passView, pass int, start time.Time, took time.Duration, err error, notBefore time.Time, mismatch []string) status.ControllerPart {
	p := status.ControllerPart{
		Pass:     status.Pass{Number: pass, Time: start, Seconds: took.Seconds(), ListedOK: v.listed},
		Nginx:    status.Nginx{Container: v.nginx.Name, ID: v.nginx.ID, Version: nginxVersionOf(v.build), Confirmed: v.nginx.ID != ""},
		Mismatch: mismatch,
		Skipped:  []status.Problem{}, Warnings: []status.Problem{},
	}
	if err != nil && !errors.Is(err, errPaced) {
		p.Pass.Error = err.Error()
	}
	if v.nginx.ID == "" && err != nil {
		p.Nginx.Error = err.Error()
	}
	if v.applied {
		p.Reload = reloadOf(start, v.plan, err)
	}
	if errors.Is(err, errPaced) {
		p.Pending = &status.Pending{Until: notBefore, Changes: slices.Concat(v.plan.Write, v.plan.Remove)}
	}
	for _, pr := range v.problems {
		sp := status.SafeProblem(status.Problem{Container: pr.Container, Label: pr.Label, Value: pr.Value, Reason: pr.Reason})
		if pr.Warning {
			p.Warnings = append(p.Warnings, sp)
		} else {
			p.Skipped = append(p.Skipped, sp)
		}
	}
	p.Hosts = hostsOf(v)
	p.Containers = containersOf(v)
	return p
}

func reloadOf(at time.Time, plan nginxconf.Plan, err error) *status.Reload {
	r := &status.Reload{Time: at, Result: status.ReloadOK, Written: plan.Write, Removed: plan.Remove}
	switch {
	case errors.Is(err, errRejected):
		r.Result, r.Error = status.ReloadRejected, err.Error()
	case err != nil:
		r.Result, r.Error = status.ReloadFailed, err.Error()
	}
	return r
}

// nginxVersionOf reads "1.22.1" from nginx -V output.
func nginxVersionOf(build string) string {
	if m := nginxVersion.FindStringSubmatch(build); m != nil {
		return m[1] + "." + m[2] + "." + m[3]
	}
	return ""
}

// hostsOf lists the sites with their backends: every want on the host and
// path, ready when its address is among the location's servers.
func hostsOf(v passView) []status.Host {
	health := make(map[string]string, len(v.cs))
	for _, c := range v.cs {
		health[c.Name] = backendHealth(c)
	}
	byLoc := make(map[[2]string][]Want, len(v.wants)) // host, path → wants: linear, not sites × wants
	for _, w := range v.wants {
		for _, h := range w.Route.Hosts {
			k := [2]string{h, w.Route.Path}
			byLoc[k] = append(byLoc[k], w)
		}
	}
	var out []status.Host
	for _, s := range v.cfg.Sites {
		h := status.Host{Host: s.Host, HTTPS: orDefault(s.HTTPS, nginxconf.HTTPSRedirect), HSTS: s.HSTS, RedirectTo: s.RedirectTo, Paths: []status.Path{}}
		for _, l := range s.Locations {
			path := status.Path{Path: l.Path, Backends: []status.Backend{}}
			for _, w := range byLoc[[2]string{s.Host, l.Path}] {
				hl := health[w.Container]
				if hl == "" {
					hl = status.HealthNone // a routes-file backend
				}
				path.Backends = append(path.Backends, status.Backend{Container: w.Container, Address: w.Backend, Health: hl,
					Ready: w.Backend != "" && slices.Contains(l.Backends, w.Backend)})
			}
			h.Paths = append(h.Paths, path)
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b status.Host) int { return strings.Compare(a.Host, b.Host) })
	return out
}

func backendHealth(c Container) string {
	switch {
	case !c.Running:
		return status.HealthStopped
	case c.Health == "":
		return status.HealthNone
	}
	return c.Health
}

// containersOf describes the containers that asked to be routed, with
// the port and network chosen for each route and why.
func containersOf(v passView) []status.Container {
	asked := make(map[string]bool, len(v.wants))
	byContainer := make(map[string][]Want, len(v.wants))
	for _, w := range v.wants {
		asked[w.Container] = true
		byContainer[w.Container] = append(byContainer[w.Container], w)
	}
	for _, p := range v.problems {
		asked[p.Container] = true
	}
	var out []status.Container
	for _, c := range v.cs {
		if c.ID == v.nginx.ID || !(asked[c.Name] || OptedIn(c.Labels)) {
			continue
		}
		sc := status.Container{Name: c.Name, ID: c.ID, State: c.State, Health: c.Health, Labels: status.SafeLabels(c.Labels),
			Networks: sortedKeys(c.Networks), SharedNetworks: []string{}, Routes: []status.Route{}, Source: "labels"}
		if !OptedIn(c.Labels) {
			sc.Source = "nginx-proxy environment variables"
		}
		for _, n := range sc.Networks {
			if _, ok := v.nginx.Networks[n]; ok {
				sc.SharedNetworks = append(sc.SharedNetworks, n)
			}
		}
		for _, w := range byContainer[c.Name] {
			sc.Routes = append(sc.Routes, routeOf(c, w))
		}
		out = append(out, sc)
	}
	return out
}

func routeOf(c Container, w Want) status.Route {
	r := status.Route{Name: w.Route.Name, Hosts: w.Route.Hosts, Path: w.Route.Path, Address: w.Backend,
		HTTPS: orDefault(w.Route.HTTPS, nginxconf.HTTPSRedirect), ACME: w.Route.ACME, Ready: w.Ready}
	if w.Backend == "" {
		return r
	}
	ip, port, _ := net.SplitHostPort(w.Backend)
	r.Port, _ = strconv.Atoi(port)
	r.PortReason = portReason(w.Route, c.Exposed)
	r.Network = networkOf(c, ip)
	r.NetworkReason = "the first network (by name) that nginx is on too"
	if w.Route.Network != "" {
		r.NetworkReason = "set by " + labelName(w.Route.Name, "network")
	}
	return r
}

// portReason says which step of the port rule (choosePort) gave the port.
func portReason(r Route, exposed []int) string {
	switch {
	case r.Port != 0:
		return "set by " + labelName(r.Name, "port")
	case len(exposed) == 1:
		return "the only port the image exposes"
	}
	return "80 is among the exposed ports " + strconv.Quote(joinInts(exposed)) + " and no " + labelName(r.Name, "port") + " label is set"
}

func networkOf(c Container, ip string) string {
	for _, n := range sortedKeys(c.Networks) {
		if c.Networks[n] == ip || c.IPv6[n] == ip {
			return n
		}
	}
	return ""
}

func joinInts(xs []int) string {
	out := ""
	for i, x := range xs {
		if i > 0 {
			out += ","
		}
		out += strconv.Itoa(x)
	}
	return out
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
