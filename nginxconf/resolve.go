package nginxconf

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Upstreams that nginx re-resolves itself (nginx 1.27.3 and later): a
// Resolve location's upstream names one "name:port" instead of addresses,
// so its bytes do not depend on how many replicas answer to the name or
// where they are, and a replica that restarts, moves, comes or goes needs
// no new file and no reload.
//
// The upstream carries everything it needs, so nothing is added at http
// level: its own "resolver" (allowed in upstream blocks since 1.27.3), so a
// user's own http-level resolver is neither duplicated (nginx refuses two)
// nor used for berth's names; and a "zone", which nginx requires for
// "resolve" because the workers share the resolved addresses. Locations
// that are not Resolve render exactly as before, byte for byte.

// resolveValid is how long nginx trusts an answer of Docker's DNS before it
// asks again, overriding the answer's TTL (600 s there). It bounds how long
// nginx keeps sending to a replica that is gone (connecting to its address
// hangs: nothing answers for it on the bridge), how long a new replica waits
// for its first request, and how long an address freed by a removed replica
// could still be reached after Docker hands it to another container (it
// gives out the lowest free address). Docker's embedded DNS answers from
// memory inside nginx's own network namespace, so one query a second per
// resolved upstream is cheap.
const resolveValid = "1s"

// resolveZoneSize is each resolved upstream's shared memory: one page-sized
// slab plus room for the peers of a few hundred replicas. nginx keeps a
// zone's size fixed across reloads, so it is a constant.
const resolveZoneSize = "64k"

// resolveFailTimeout is how long nginx avoids a resolved replica after a
// failed connect, instead of its default 10 s. A replica that is gone leaves
// Docker's answers within resolveValid anyway; the one that comes back on
// the same address (Docker hands out the lowest free one, so a restarted
// or replaced replica usually gets its old address) would otherwise wait
// 10 s for its first request.
const resolveFailTimeout = "2s"

// checkResolve is the renderer's guard for Resolve locations: a resolver
// address to render, and a backend that is exactly one DNS name and port
// (never an address list, which would be resolved once and frozen, nor a
// value that could end the directive).
func checkResolve(s Site, resolver string) error {
	for _, l := range s.Locations {
		if !l.Resolve || len(l.Backends) == 0 {
			continue
		}
		if resolver == "" {
			return &SiteError{s.Host, "a location resolves its backend but no resolver is set (nginx before 1.27.3 cannot)"}
		}
		if a, err := netip.ParseAddr(resolver); err != nil || !a.Is4() {
			return &SiteError{s.Host, fmt.Sprintf("resolver %q is not an IPv4 address", resolver)}
		}
		if len(l.Backends) != 1 || !resolvableBackend(l.Backends[0]) {
			return &SiteError{s.Host, fmt.Sprintf("resolved backends %q are not one name:port", l.Backends)}
		}
	}
	return nil
}

// resolvableBackend is "name:port" with a lower-case DNS name that is not
// an address.
func resolvableBackend(b string) bool {
	name, port, ok := strings.Cut(b, ":")
	if !ok || !hostToken(name) {
		return false
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n > 0 && n < 65536 && strconv.Itoa(n) == port
}

// writeUpstreamServers emits the servers of the upstream of host's
// location i: the addresses as they are, or for a Resolve location the
// zone, the resolver and the one resolved name. IPv6 answers are not used
// (ipv6=off): berth reaches containers over IPv4 where they have it, as
// with addresses.
func writeUpstreamServers(b *strings.Builder, host string, i int, l Location, resolver string) {
	if !l.Resolve {
		for _, addr := range l.Backends {
			put(b, "    server ", addr, ";\n")
		}
		return
	}
	b.WriteString("    zone ")
	writeUpstreamName(b, host, i)
	b.WriteString(" " + resolveZoneSize + ";\n")
	put(b, "    resolver ", resolver, " valid="+resolveValid+" ipv6=off;\n")
	put(b, "    server ", l.Backends[0], " resolve fail_timeout="+resolveFailTimeout+";\n")
}
