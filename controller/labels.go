package controller

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/idna"

	"github.com/berthproxy/berth/nginxconf"
)

// Label names. Kebab-case for values; the prefix is fixed.
const (
	LabelPrefix  = "proxy."
	LabelHost    = "proxy.host"
	LabelPort    = "proxy.port"
	LabelPath    = "proxy.path"
	LabelNetwork = "proxy.network"
	LabelHTTPS   = "proxy.https"
	LabelACME    = "proxy.acme"
	LabelNginx   = "proxy.nginx"
)

var knownLabels = []string{LabelHost, LabelPort, LabelPath, LabelNetwork, LabelHTTPS, LabelACME, LabelNginx}

// Route is what one container's labels ask for, validated and normalised.
type Route struct {
	Hosts   []string // lower-case ASCII (punycode), sorted, unique
	Port    int      // 0: not set, use the exposed-port rule
	Path    string   // "/" or "/a/b" (no trailing slash)
	Network string   // "" : the network shared with nginx
	HTTPS   string   // one of nginxconf.HTTPS*
	ACME    bool
}

// LabelError is one invalid label value: it names the label, the value and why.
type LabelError struct {
	Label, Value, Reason string
}

func (e LabelError) Error() string {
	return fmt.Sprintf("label %s=%q: %s", e.Label, e.Value, e.Reason)
}

// ParseLabels reads the proxy.* labels. ok is false when the container did
// not opt in (no proxy.host). Any error means the container must get no
// vhost; warnings (unknown proxy.* labels) do not stop it. Pure.
func ParseLabels(labels map[string]string) (r Route, ok bool, errs []LabelError, warnings []LabelError) {
	hostVal, ok := labels[LabelHost]
	if !ok {
		return Route{}, false, nil, nil
	}
	r = Route{Path: "/", HTTPS: nginxconf.HTTPSRedirect, ACME: true}
	add := func(label, value string, err error) {
		if err != nil {
			errs = append(errs, LabelError{label, value, err.Error()})
		}
	}
	var err error
	r.Hosts, err = parseHosts(hostVal)
	add(LabelHost, hostVal, err)
	if v, set := labels[LabelPort]; set {
		r.Port, err = parsePort(v)
		add(LabelPort, v, err)
	}
	if v, set := labels[LabelPath]; set {
		r.Path, err = parsePath(v)
		add(LabelPath, v, err)
	}
	if v, set := labels[LabelNetwork]; set {
		r.Network, err = parseNetwork(v)
		add(LabelNetwork, v, err)
	}
	if v, set := labels[LabelHTTPS]; set {
		r.HTTPS, err = oneOf(v, nginxconf.HTTPSRedirect, nginxconf.HTTPSBoth, nginxconf.HTTPSOff)
		add(LabelHTTPS, v, err)
	}
	if v, set := labels[LabelACME]; set {
		var mode string
		mode, err = oneOf(v, "on", "off")
		r.ACME = mode == "on"
		add(LabelACME, v, err)
	}
	for name, v := range labels {
		if strings.HasPrefix(name, LabelPrefix) && !slices.Contains(knownLabels, name) {
			warnings = append(warnings, LabelError{name, v, "unknown label, ignored (known: " + strings.Join(knownLabels, ", ") + ")"})
		}
	}
	slices.SortFunc(errs, func(a, b LabelError) int { return strings.Compare(a.Label, b.Label) })
	slices.SortFunc(warnings, func(a, b LabelError) int { return strings.Compare(a.Label, b.Label) })
	return r, true, errs, warnings
}

// parseHosts splits a comma-separated list and normalises each name.
func parseHosts(v string) ([]string, error) {
	var hosts []string
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		h, err := NormalizeHost(part)
		if err != nil {
			return nil, err
		}
		hosts = append(hosts, h)
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("no hostname given")
	}
	slices.Sort(hosts)
	return slices.Compact(hosts), nil
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// idnaProfile maps and validates internationalised names per UTS #46 for
// lookup (as browsers do) and yields the punycode form nginx matches on.
var idnaProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.StrictDomainName(true), idna.Transitional(false))

// NormalizeHost returns the lower-case ASCII form of a hostname, converting
// internationalised names to punycode, or says why the name is invalid.
func NormalizeHost(h string) (string, error) {
	h = strings.TrimSuffix(h, ".")
	if strings.HasPrefix(h, "*") {
		return "", fmt.Errorf("%q: wildcard names are not supported (HTTP-01 cannot validate them)", h)
	}
	ascii := strings.ToLower(h)
	if !isASCII(h) {
		var err error
		if ascii, err = idnaProfile.ToASCII(h); err != nil {
			return "", fmt.Errorf("%q: not a valid internationalised name: %v", h, err)
		}
	}
	if len(ascii) > 253 {
		return "", fmt.Errorf("%q: longer than 253 characters", h)
	}
	for _, l := range strings.Split(ascii, ".") {
		if !dnsLabel.MatchString(l) {
			return "", fmt.Errorf("%q: label %q must be 1-63 letters, digits or inner hyphens", h, l)
		}
	}
	return ascii, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func parsePort(v string) (int, error) {
	p, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || p < 1 || p > 65535 || strings.ContainsAny(v, "+-") {
		return 0, fmt.Errorf("must be a port number from 1 to 65535")
	}
	return p, nil
}

var pathChars = regexp.MustCompile(`^[A-Za-z0-9._~/-]+$`)

// challengePrefix is served from the webroot on every host; no service may claim it.
const challengePrefix = "/.well-known/acme-challenge"

func parsePath(v string) (string, error) {
	p := strings.TrimSpace(v)
	switch {
	case !strings.HasPrefix(p, "/"):
		return "", fmt.Errorf("must start with /")
	case len(p) > 256:
		return "", fmt.Errorf("longer than 256 characters")
	case !pathChars.MatchString(p):
		return "", fmt.Errorf("may contain only letters, digits and . _ ~ / -")
	case strings.Contains(p, "//"):
		return "", fmt.Errorf("must not contain an empty segment (//)")
	}
	if p != "/" {
		p = strings.TrimSuffix(p, "/")
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return "", fmt.Errorf("must not contain . or .. segments")
		}
	}
	if p == challengePrefix || strings.HasPrefix(p, challengePrefix+"/") {
		return "", fmt.Errorf("%s is reserved for ACME challenges", challengePrefix)
	}
	return p, nil
}

var networkName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$`)

func parseNetwork(v string) (string, error) {
	n := strings.TrimSpace(v)
	if !networkName.MatchString(n) {
		return "", fmt.Errorf("not a Docker network name")
	}
	return n, nil
}

func oneOf(v string, allowed ...string) (string, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	if !slices.Contains(allowed, s) {
		return "", fmt.Errorf("must be one of %s", strings.Join(allowed, ", "))
	}
	return s, nil
}
