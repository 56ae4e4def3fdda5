package nginxconf

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// trustedProxies re-validates Config.TrustedProxies and returns them,
// sorted and without repeats, in the canonical form nginx's set_real_ip_from takes: an address, or a
// prefix with its host bits cleared (nginx warns "low address bits are
// meaningless" otherwise). A value that is neither, or carries an IPv6
// zone nginx cannot parse, is an error naming it: trusting the wrong peer
// would let any client choose the address backends see.
func trustedProxies(values []string) ([]string, error) {
	out := make([]string, 0, len(values))
	for _, v := range values {
		canon, err := canonicalProxy(v)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: %w", v, err)
		}
		out = append(out, canon)
	}
	// Order means nothing to nginx here; sorting keeps equal input equal bytes.
	slices.Sort(out)
	return slices.Compact(out), nil
}

func canonicalProxy(v string) (string, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return "", errors.New("not an IP address or CIDR")
		}
		return p.Masked().String(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return "", errors.New("not an IP address or CIDR")
	}
	if a.Zone() != "" {
		return "", errors.New("an IPv6 zone is not allowed")
	}
	return a.String(), nil
}

// writeRealIP turns on nginx's real-IP module for the trusted proxies, at
// http level so every server inherits it. real_ip_recursive walks
// X-Forwarded-For from the right past every trusted hop, so the address a
// backend sees is the last one no trusted proxy vouches for: a client that
// prepends its own X-Forwarded-For through the load balancer cannot choose
// it. Without trusted proxies nothing is written and the peer address is
// the client's.
func writeRealIP(b *strings.Builder, proxies []string) {
	if len(proxies) == 0 {
		return
	}
	b.WriteString("\n")
	for _, p := range proxies {
		put(b, "set_real_ip_from ", p, ";\n")
	}
	b.WriteString("real_ip_header X-Forwarded-For;\nreal_ip_recursive on;\n")
}
