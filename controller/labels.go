package controller

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/net/idna"

	"github.com/berthproxy/berth/nginxconf"
)

// Label names. Kebab-case for values; the prefix is fixed.
const (
	LabelPrefix          = "proxy."
	LabelHost            = "proxy.host"
	LabelPort            = "proxy.port"
	LabelPath            = "proxy.path"
	LabelNetwork         = "proxy.network"
	LabelHTTPS           = "proxy.https"
	LabelACME            = "proxy.acme"
	LabelACMEChallenge   = "proxy.acme-challenge"
	LabelACMEProfile     = "proxy.acme-profile"
	LabelCertPerHost     = "proxy.cert-per-host"
	LabelNginx           = "proxy.nginx"
	LabelScheme          = "proxy.scheme"
	LabelStripPath       = "proxy.strip-path"
	LabelHSTS            = "proxy.hsts"
	LabelRedirectFrom    = "proxy.redirect-from"
	LabelMaxBodySize     = "proxy.max-body-size"
	LabelConnectTimeout  = "proxy.connect-timeout"
	LabelReadTimeout     = "proxy.read-timeout"
	LabelSendTimeout     = "proxy.send-timeout"
	LabelBasicAuth       = "proxy.basic-auth"
	LabelAllow           = "proxy.allow"
	LabelServerSnippet   = "proxy.server-snippet"
	LabelLocationSnippet = "proxy.location-snippet"
)

// routeOptions are the options a route takes, as label suffixes after
// "proxy." (default route) or "proxy.<route>." (named route).
var routeOptions = []string{"host", "port", "path", "network", "https", "acme", "acme-challenge", "acme-profile",
	"cert-per-host", "scheme", "strip-path", "hsts", "redirect-from", "max-body-size", "connect-timeout",
	"read-timeout", "send-timeout", "basic-auth", "allow", "server-snippet", "location-snippet"}

// ownOptions are not inherited by named routes from the unnamed labels:
// they say where a route is, the rest say how it is served.
var ownOptions = []string{"host", "port", "path", "redirect-from"}

// Redacted replaces the value of proxy.basic-auth in every LabelError, so
// password hashes never reach a log.
const Redacted = "(redacted)"

// Route is what one route of a container asks for, validated and
// normalised, with the Defaults applied.
type Route struct {
	Name    string   // "" for the default route (the unnamed labels)
	Hosts   []string // lower-case ASCII (punycode) or wildcard server names, sorted, unique
	Primary string   // the first host as written (normalised): the redirect target
	Port    int      // 0: not set, use the exposed-port rule
	Path    string   // "/" or "/a/b" (no trailing slash)
	Network string   // "" : the network shared with nginx
	HTTPS   string   // one of nginxconf.HTTPS*
	ACME    bool
	Cert    CertOptions
	Site    SiteOptions
	// Loc carries the per-location options (scheme, strip-path, body
	// size, timeouts, basic auth, allow-list, snippet) in the model's own
	// type; "" or nil is "not set". Desired fills in Path and Backends.
	Loc nginxconf.Location
}

// CertOptions say how a route's certificate is ordered.
type CertOptions struct {
	Challenge string // ChallengeHTTP01 or ChallengeDNS01 (wildcards use DNS-01 whatever this says)
	Profile   string // ACME profile; "" is BERTH_ACME_PROFILE
	PerHost   bool   // one certificate per name instead of one for the route's names
}

// SiteOptions are the options of a route that belong to its hosts' server
// blocks rather than to its location.
type SiteOptions struct {
	HSTS          string   // "" sends none
	RedirectFrom  []string // normalised hostnames, sorted, unique
	ServerSnippet string
}

// LabelError is one invalid label value: it names the label, the value and why.
type LabelError struct {
	Label, Value, Reason string
}

func (e LabelError) Error() string {
	return fmt.Sprintf("label %s=%q: %s", e.Label, e.Value, e.Reason)
}

var routeName = regexp.MustCompile(`^[a-z0-9]+$`)

// ParseRoutes reads the proxy.* labels of one container: the default route
// (unnamed labels, present when proxy.host is set) first, then the named
// routes proxy.<route>.<option> sorted by name. A named route inherits the
// unnamed labels other than host, port, path and redirect-from, so e.g.
// proxy.network applies to every route. opted is false when no route has a
// host. Any error means the container must get no vhost; warnings (unknown
// proxy.* labels) do not stop it. Values of proxy.basic-auth are redacted
// in errors and warnings. Pure; other sources of routes (a routes file,
// nginx-proxy environment) call it with a synthesised labels map.
func ParseRoutes(labels map[string]string, d Defaults) (routes []Route, opted bool, errs, warnings []LabelError) {
	byRoute := map[string]map[string]string{"": {}} // route → option → value
	for name, v := range labels {
		rest, ok := strings.CutPrefix(name, LabelPrefix)
		if !ok || name == LabelNginx {
			continue
		}
		route, opt, named := strings.Cut(rest, ".")
		switch {
		case !named && slices.Contains(routeOptions, rest):
			byRoute[""][rest] = v
		case named && routeName.MatchString(route) && !slices.Contains(routeOptions, route) && slices.Contains(routeOptions, opt):
			if byRoute[route] == nil {
				byRoute[route] = map[string]string{}
			}
			byRoute[route][opt] = v
		default:
			warnings = append(warnings, LabelError{name, redact(name, v), "unknown label, ignored (options: " +
				strings.Join(routeOptions, ", ") + "; a route name is lower-case letters and digits, not an option name)"})
		}
	}
	for _, name := range sortedKeys(byRoute) {
		opts := byRoute[name]
		if name != "" {
			for opt, v := range byRoute[""] {
				if _, set := opts[opt]; !set && !slices.Contains(ownOptions, opt) {
					opts[opt] = v
				}
			}
		}
		if _, set := opts["host"]; !set {
			if name != "" {
				errs = append(errs, LabelError{labelName(name, "host"), "", "route " + name + " has options but no host"})
			}
			continue
		}
		r, es := parseRoute(name, opts, d)
		errs = append(errs, es...)
		routes = append(routes, r)
	}
	sortErrs := func(a, b LabelError) int { return strings.Compare(a.Label, b.Label) }
	slices.SortFunc(errs, sortErrs)
	slices.SortFunc(warnings, sortErrs)
	return routes, len(routes) > 0, errs, warnings
}

// labelName is the label that set option opt of route name.
func labelName(route, opt string) string {
	if route == "" {
		return LabelPrefix + opt
	}
	return LabelPrefix + route + "." + opt
}

func redact(label, v string) string {
	if label == LabelBasicAuth || strings.HasSuffix(label, ".basic-auth") {
		return Redacted
	}
	return v
}

// parseRoute validates one route's options (option name → value).
func parseRoute(name string, opts map[string]string, d Defaults) (Route, []LabelError) {
	var errs []LabelError
	r := Route{Name: name, Path: "/", HTTPS: nginxconf.HTTPSRedirect, ACME: true}
	r.Cert.Challenge = or(d.ACMEChallenge, ChallengeHTTP01)
	r.Loc.MaxBodySize = or(d.MaxBodySize, "0")
	r.Loc.ConnectTimeout, r.Loc.ReadTimeout, r.Loc.SendTimeout = d.ConnectTimeout, d.ReadTimeout, d.SendTimeout
	r.Site.HSTS = hstsValue(or(d.HSTS, DefaultHSTS))
	for _, opt := range sortedKeys(opts) {
		v := opts[opt]
		if err := r.set(opt, v, d); err != nil {
			label := labelName(name, opt)
			errs = append(errs, LabelError{label, redact(label, v), err.Error()})
		}
	}
	if len(errs) == 0 {
		if err := r.check(); err != nil {
			errs = append(errs, LabelError{labelName(name, "redirect-from"), opts["redirect-from"], err.Error()})
		}
	}
	return r, errs
}

// set parses one option into the route.
func (r *Route) set(opt, v string, d Defaults) error {
	var err error
	switch opt {
	case "host":
		r.Hosts, r.Primary, err = parseHosts(v)
	case "port":
		r.Port, err = parsePort(v)
	case "path":
		r.Path, err = parsePath(v)
	case "network":
		r.Network, err = parseNetwork(v)
	case "https":
		r.HTTPS, err = oneOf(v, nginxconf.HTTPSRedirect, nginxconf.HTTPSBoth, nginxconf.HTTPSOnly, nginxconf.HTTPSOff)
	case "acme":
		r.ACME, err = onOff(v)
	case "acme-challenge":
		r.Cert.Challenge, err = oneOf(v, ChallengeHTTP01, ChallengeDNS01)
	case "acme-profile":
		r.Cert.Profile, err = parseProfile(v)
	case "cert-per-host":
		r.Cert.PerHost, err = onOff(v)
	case "scheme":
		r.Loc.Scheme, err = oneOf(v, nginxconf.SchemeHTTP, nginxconf.SchemeHTTPS, nginxconf.SchemeGRPC, nginxconf.SchemeGRPCS)
	case "strip-path":
		r.Loc.StripPath, err = onOff(v)
	case "hsts":
		var h string
		h, err = ParseHSTS(v)
		r.Site.HSTS = hstsValue(h)
	case "redirect-from":
		r.Site.RedirectFrom, _, err = parseHosts(v)
	case "max-body-size":
		r.Loc.MaxBodySize, err = ParseSize(v)
	case "connect-timeout":
		r.Loc.ConnectTimeout, err = ParseTimeout(v)
	case "read-timeout":
		r.Loc.ReadTimeout, err = ParseTimeout(v)
	case "send-timeout":
		r.Loc.SendTimeout, err = ParseTimeout(v)
	case "basic-auth":
		r.Loc.BasicAuth, err = ParseBasicAuth(v)
	case "allow":
		r.Loc.Allow, err = ParseAddrs(v)
		if err == nil && len(r.Loc.Allow) == 0 {
			err = fmt.Errorf("no address given")
		}
	case "server-snippet", "location-snippet":
		var s string
		if s, err = parseSnippet(v, d.Snippets); opt == "server-snippet" {
			r.Site.ServerSnippet = s
		} else {
			r.Loc.LocationSnippet = s
		}
	}
	return err
}

// check the rules across options of one route.
func (r *Route) check() error {
	if len(r.Site.RedirectFrom) == 0 {
		return nil
	}
	if isWildcard(r.Primary) {
		return fmt.Errorf("the first host %s is a wildcard: redirects need a plain name to go to", r.Primary)
	}
	for _, h := range r.Site.RedirectFrom {
		if slices.Contains(r.Hosts, h) {
			return fmt.Errorf("%s is also in the route's host", h)
		}
	}
	return nil
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// parseHosts splits a comma-separated list and normalises each name; first
// is the first name as written.
func parseHosts(v string) (hosts []string, first string, err error) {
	for part := range strings.SplitSeq(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		h, err := normalizeServerName(part)
		if err != nil {
			return nil, "", err
		}
		hosts = append(hosts, h)
	}
	if len(hosts) == 0 {
		return nil, "", fmt.Errorf("no hostname given")
	}
	first = hosts[0]
	slices.Sort(hosts)
	return slices.Compact(hosts), first, nil
}

// normalizeServerName accepts a hostname or an nginx wildcard server name
// with "*" as the whole first or last label ("*.example.com", "example.*").
func normalizeServerName(h string) (string, error) {
	h = strings.TrimSuffix(h, ".")
	switch {
	case strings.HasPrefix(h, "*.") && !strings.Contains(h[2:], "*"):
		n, err := NormalizeHost(h[2:])
		return "*." + n, err
	case strings.HasSuffix(h, ".*") && !strings.Contains(h[:len(h)-2], "*"):
		n, err := NormalizeHost(h[:len(h)-2])
		return n + ".*", err
	}
	return NormalizeHost(h)
}

func isWildcard(h string) bool { return strings.Contains(h, "*") }

// idnaProfile maps and validates internationalised names per UTS #46 for
// lookup (as browsers do) and yields the punycode form nginx matches on.
var idnaProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.StrictDomainName(true), idna.Transitional(false))

// NormalizeHost returns the lower-case ASCII form of a hostname, converting
// internationalised names to punycode, or says why the name is invalid.
// Wildcards are not hostnames: see normalizeServerName.
func NormalizeHost(h string) (string, error) {
	h = strings.TrimSuffix(h, ".")
	if strings.Contains(h, "*") {
		return "", fmt.Errorf("%q: a wildcard must be the whole first or last label (*.example.com, example.*)", h)
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
	for l := range strings.SplitSeq(ascii, ".") {
		if !dnsLabel(l) {
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

// OptedIn says, without validating anything, whether labels name a host
// for some route (proxy.host or proxy.<route>.host): whether the Docker
// adapter must look up the container's exposed ports for the port rule.
func OptedIn(labels map[string]string) bool {
	for name, v := range labels {
		if v == "" {
			continue
		}
		if name == LabelHost {
			return true
		}
		if rest, ok := strings.CutPrefix(name, LabelPrefix); ok {
			if route, opt, named := strings.Cut(rest, "."); named && opt == "host" && routeName.MatchString(route) {
				return true
			}
		}
	}
	return false
}
