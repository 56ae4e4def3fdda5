package controller

import (
	"cmp"
	"net"
	"slices"
	"strings"

	"github.com/berthproxy/berth/nginxconf"
)

// Upstreams nginx resolves itself (nginx 1.27.3 and later). Docker's DNS
// answers a network alias with the addresses of every running container
// that carries it, and Compose gives every replica of a service its
// service name as an alias (so does `docker run --network-alias`). When a
// location's backends are exactly the containers behind one such name,
// berth renders "server <name>:<port> resolve" instead of their addresses:
// the rendered bytes then do not depend on how many replicas run or where,
// so a replica that restarts, moves to another address, is added or is
// removed changes no file and causes no reload; nginx follows the name.
//
// A location is resolved only when all of these hold, because Docker's DNS
// answers for every running holder of a name and knows nothing of berth's
// rules:
//
//   - Exclusive name. Every container that carries the name on any of
//     nginx's networks (as an alias, a DNS name or its container name,
//     labelled or not, running or not) is a backend of this very location,
//     and the name lives on one network only (Docker's DNS answers from the
//     first network of the asker that knows it, so a second one could hide
//     replicas). A container whose alias is shared with another host's
//     containers, or with anything unlabelled, would otherwise get their
//     traffic; then the location keeps its addresses. A container's own
//     name and short ID never count: they cannot name a second replica,
//     and a name that stops fitting when one is added would reload anyway.
//   - No health checks. Docker's DNS answers for starting and unhealthy
//     containers alike, while berth promises that they get no traffic
//     while a healthy replica exists. So no holder may declare a health
//     check (its own or its image's, read from inspect, whatever its
//     state), nor report a health status: such locations keep addresses,
//     filtered by health as before.
//   - No paused holder: Docker's DNS still answers for it and nginx's
//     connections to it would hang; berth routes nothing to it.
//   - Same port, IPv4: the running backends share one port, and each has an
//     IPv4 address on the name's network (nginx asks for A records only,
//     as berth prefers IPv4 where it routes by address).
//   - At least one running backend. With none, the location answers 503 as
//     before (so the last replica leaving, or the first coming, is a
//     reload); and no Swarm task is a backend (there a service name
//     answers with a virtual IP, not the tasks).
//
// The name chosen is the first in sorted order that qualifies, so the same
// containers always give the same bytes. Between a new holder of the name
// starting and the reload that switches the location back to addresses,
// nginx may resolve it and send it requests: only when a container that
// must not get traffic (one with a health check, another host's, an
// unlabelled one) takes a name a routed service already uses, and only for
// one pass and one reload, since that switch is never paced (leavesResolve).
func resolveLocations(sites []nginxconf.Site, wants []Want, cs []Container, nginx Container) []nginxconf.Site {
	type key struct{ host, path string }
	members := map[key][]Want{}
	for _, w := range wants {
		for _, h := range w.Route.Hosts {
			k := key{h, w.Route.Path}
			members[k] = append(members[k], w)
		}
	}
	byName := make(map[string]Container, len(cs))
	for _, c := range cs {
		byName[c.Name] = c
	}
	out := slices.Clone(sites)
	for i, s := range out {
		locs := slices.Clone(s.Locations)
		for j, l := range locs {
			if name, port, ok := resolvedName(members[key{s.Host, l.Path}], byName, cs, nginx); ok {
				locs[j].Backends, locs[j].Resolve = []string{net.JoinHostPort(name, port)}, true
				locs[j].ConnectTimeout = cmp.Or(l.ConnectTimeout, resolvedConnectTimeout)
			}
		}
		out[i].Locations = locs
	}
	return out
}

// resolvedConnectTimeout is the connect timeout of a resolved location
// unless proxy.connect-timeout (or its setting) says otherwise. A replica
// that is gone stays in nginx's list until the next answer of Docker's DNS
// (up to the resolver's valid time), and connecting to its address is not
// refused but hangs, since nothing on the bridge answers for it any more:
// with nginx's default of 60 s every request sent there would hang that
// long. A connect between containers on one host takes well under a
// millisecond; a SYN dropped by a full accept queue is retried only after
// 1 s, and moving on to another replica is then the better choice anyway.
// A timed-out connect moves on to the next replica (proxy_next_upstream's
// default, for every method, since nothing was sent), so 500 ms is the most
// a request loses, and the replica is avoided for nginx's fail_timeout.
const resolvedConnectTimeout = "500ms"

// swarmTaskLabel marks the containers of Swarm tasks.
const swarmTaskLabel = "com.docker.swarm.task.id"

// resolvedName returns the DNS name and port nginx can resolve for the
// backends of one location, when the rules above allow. Pure.
func resolvedName(ws []Want, byName map[string]Container, cs []Container, nginx Container) (string, string, bool) {
	var group []Container
	port := ""
	for _, w := range ws {
		c, ok := byName[w.Container]
		if !ok || c.ID == nginx.ID || c.Labels[swarmTaskLabel] != "" || !resolvable(c) {
			return "", "", false // a routes-file backend, or one DNS may not answer for
		}
		if w.Backend != "" {
			_, p, err := net.SplitHostPort(w.Backend)
			if err != nil || (port != "" && p != port) {
				return "", "", false
			}
			port = p
		}
		if !slices.ContainsFunc(group, func(g Container) bool { return g.ID == c.ID }) {
			group = append(group, c)
		}
	}
	if port == "" {
		return "", "", false // nothing runs: 503, as with addresses
	}
	for _, n := range sortedKeys(nginx.Networks) {
		for _, name := range group[0].DNSNames[n] {
			if ownName(group[0], name) {
				continue
			}
			if carriedByAll(group, n, name) && exclusive(name, n, group, cs, nginx) {
				return name, port, true
			}
		}
	}
	return "", "", false
}

// resolvable: Docker's DNS answers for c only when berth would route to it.
func resolvable(c Container) bool {
	return !c.Healthcheck && c.Health == "" && c.State != "paused"
}

// ownName: name is the container's own, which no replica shares.
func ownName(c Container, name string) bool {
	return name == c.Name || (len(name) == 12 && strings.HasPrefix(c.ID, name))
}

// carriedByAll: every container of the group has name on network n, and
// those running have an IPv4 address there for nginx to reach.
func carriedByAll(group []Container, n, name string) bool {
	for _, c := range group {
		if !slices.Contains(c.DNSNames[n], name) || (c.Running && c.Networks[n] == "") {
			return false
		}
	}
	return true
}

// exclusive: on nginx's networks, only the group carries name, and only on
// network n. A container created and never started is not in Docker's DNS
// yet, and gets no Want of its own (project), so it does not count: a
// replica being added (docker run, compose scale) must not switch the
// location to addresses between its create and its start.
func exclusive(name, n string, group []Container, cs []Container, nginx Container) bool {
	for _, c := range cs {
		if c.State == StateCreated {
			continue
		}
		member := slices.ContainsFunc(group, func(g Container) bool { return g.ID == c.ID })
		for nw := range c.Networks {
			if _, shared := nginx.Networks[nw]; !shared {
				continue
			}
			holds := slices.Contains(c.DNSNames[nw], name) || c.Name == name
			if holds && (!member || nw != n) {
				return false
			}
		}
	}
	return true
}
