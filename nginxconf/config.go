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
	// Sites, one per hostname. Order does not matter: rendering sorts.
	Sites []Site
}

// Site is one virtual host.
type Site struct {
	Host string
	// HTTPS is one of the HTTPS* modes; empty means HTTPSRedirect.
	HTTPS string
	// TLS is set when a certificate for Host exists on disk.
	TLS *TLS
	// Locations by path prefix; several backends per location are balanced.
	Locations []Location
}

// TLS points at certificate files readable by nginx.
type TLS struct {
	CertFile string // full chain, PEM
	KeyFile  string // private key, PEM
}

// Location routes one path prefix of a Site.
type Location struct {
	Path string // absolute prefix, "/" for everything
	// Backends are "ip:port"; none means the location answers 503.
	Backends []string
}
