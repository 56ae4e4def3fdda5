// Package nginxconf owns the nginx model berth renders, the pure renderer that
// turns it into bytes, and the atomic writer of berth's own files.
//
// It must not know about Docker, ACME or labels: it takes a fully validated
// Config and trusts only that its values passed validation upstream. Every
// value that reaches the output is also checked here against a strict
// character set (see safeToken), so a validation bug upstream produces a
// render error instead of injected configuration.
package nginxconf

// HTTPS modes for a Site, matching the proxy.https label.
const (
	HTTPSRedirect = "redirect" // HTTP answers 301 to HTTPS once a certificate exists
	HTTPSBoth     = "both"     // HTTP and HTTPS both proxy
	HTTPSOff      = "off"      // HTTP only, even with a certificate
	HTTPSOnly     = "only"     // port 80 serves only the challenge path (the rest 503); HTTPS serves
)

// Backend schemes for a Location, matching the proxy.scheme label.
const (
	SchemeHTTP  = "http"
	SchemeHTTPS = "https"
	SchemeGRPC  = "grpc"
	SchemeGRPCS = "grpcs"
)

// HTTP/2 modes: how (and whether) TLS servers enable HTTP/2.
const (
	HTTP2Off       = ""          // no HTTP/2 module
	HTTP2Listen    = "listen"    // "listen 443 ssl http2;" (nginx before 1.25.1)
	HTTP2Directive = "directive" // "http2 on;" (nginx 1.25.1 and later)
)

// Config is the whole desired nginx state berth owns.
type Config struct {
	// Listen addresses; empty means "80" and "443". Tests bind loopback ports.
	HTTPListen  string
	HTTPSListen string
	// Webroot is the directory served for /.well-known/acme-challenge/.
	Webroot string
	// HTTP2 says how the nginx in use enables HTTP/2 on TLS servers: one of
	// the HTTP2* values. The controller decides from "nginx -V".
	HTTP2 string
	// TrustedProxies are the IPv4/IPv6 addresses or CIDRs of a CDN or load
	// balancer in front of nginx. Requests from them have their client
	// address taken from X-Forwarded-For (nginx's real-IP module); from
	// anyone else a client-sent X-Forwarded-For is replaced. Empty: berth
	// is the edge and trusts no forwarded address.
	TrustedProxies []string
	// IPv6 adds [::]:80 and [::]:443 listeners (with the ports of
	// HTTPListen/HTTPSListen) when the nginx container has an IPv6 address.
	IPv6 bool
	// Resolver is the IPv4 address of the DNS server nginx itself
	// re-resolves the names of Resolve locations against (the controller
	// passes Docker's embedded DNS). The controller sets it only for nginx
	// 1.27.3 and later, the first open source nginx with "server ...
	// resolve" and "resolver" in upstream blocks. A site with a Resolve
	// location and no Resolver is left out and reported.
	Resolver string
	// Sites, one per hostname. Order does not matter: rendering sorts.
	Sites []Site
}

// Site is one virtual host.
type Site struct {
	// Host is a lower-case DNS name, or a wildcard server name
	// ("*.example.com", "example.*"), which nginx matches after exact names.
	Host string
	// HTTPS is one of the HTTPS* modes; empty means HTTPSRedirect.
	HTTPS string
	// HSTS is the Strict-Transport-Security value sent on this site's
	// HTTPS responses ("" sends none; never sent over plain HTTP).
	HSTS string
	// TLS is set when a certificate for Host exists on disk.
	TLS *TLS
	// RedirectTo, when set, makes this site answer every request (except
	// the challenge path) with 301 to the same path and query on
	// RedirectTo: over https once TLS is set, else http. It then has no
	// Locations (proxy.redirect-from).
	RedirectTo string
	// ServerSnippet is raw nginx directives placed inside this site's
	// server blocks (BERTH_SNIPPETS=on only). Validated upstream: balanced
	// braces, never leaving its block. The renderer checks the braces again.
	ServerSnippet string
	// Locations by path prefix; several backends per location are balanced.
	Locations []Location
}

// TLS points at certificate files readable by nginx.
type TLS struct {
	CertFile string // full chain, PEM
	KeyFile  string // private key, PEM
}

// Location routes one path prefix of a Site. Every option is already
// validated; empty means "not set": nothing is rendered and nginx's (or the
// user's own http-level) setting applies.
type Location struct {
	Path string // absolute prefix, "/" for everything
	// Backends are "ip:port" or "[ipv6]:port"; none means the location answers 503.
	// With Resolve, it is the one "name:port" whose addresses nginx looks up.
	Backends []string
	// Resolve: nginx resolves the backend name through Config.Resolver and
	// follows its addresses as they change, so replicas that come, go or
	// move behind the name need no new config and no reload.
	Resolve bool
	// Scheme is how nginx talks to the backends: one of the Scheme*
	// values; empty means SchemeHTTP.
	Scheme string
	// StripPath: the backend sees the request path without Path.
	StripPath bool
	// MaxBodySize is an nginx size ("10m", "1g", "0" = no limit);
	// empty renders "0": berth sets no body limit unless asked.
	MaxBodySize string
	// Timeouts as nginx durations ("5s", "10m"); empty: not rendered.
	ConnectTimeout, ReadTimeout, SendTimeout string
	// BasicAuth holds htpasswd lines ("user:hash"); non-empty requires a
	// login. The renderer writes them to a file of its own next to the
	// site's file.
	BasicAuth []string
	// Allow lists addresses/CIDRs allowed; non-empty: everyone else 403.
	Allow []string
	// LocationSnippet is raw nginx directives inside this location
	// (BERTH_SNIPPETS=on only; validated upstream like ServerSnippet).
	LocationSnippet string
}
