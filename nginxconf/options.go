package nginxconf

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// The per-service options (the proxy.* labels of issue 7): the renderer's
// own checks, and the directives each option becomes. Values were validated
// upstream; these checks are the renderer's guard against a validation bug
// turning into injected configuration.

// htpasswdLine: a user and a hash of a kind nginx verifies; no space,
// quote or newline, so the line is one line of the file. (The other checks
// are loops, in tokens.go; this one runs only for sites with logins.)
var htpasswdLine = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,64}:(\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}|\$apr1\$[./A-Za-z0-9]{1,8}\$[./A-Za-z0-9]{22}|\{SHA\}[A-Za-z0-9+/]{27}=)$`)

// validHost accepts a DNS name or a wildcard server name.
func validHost(h string) bool {
	return len(h) <= 253 && (hostToken(h) || wildHost(h))
}

// fileSafe is host as it appears in file and upstream names: "*" (only in
// wildcards) becomes "_", which no DNS name contains.
func fileSafe(host string) string { return strings.ReplaceAll(host, "*", "_") }

// checkOptions checks the per-site and per-location options of s.
func checkOptions(s Site) error {
	bad := func(format string, args ...any) error { return &SiteError{s.Host, fmt.Sprintf(format, args...)} }
	if s.HSTS != "" && !hstsValue(s.HSTS) {
		return bad("HSTS value %q is not max-age=N[; includeSubDomains][; preload]", s.HSTS)
	}
	if s.RedirectTo != "" && (!hostToken(s.RedirectTo) || len(s.Locations) > 0) {
		return bad("redirect target %q is not a DNS name, or the site also has locations", s.RedirectTo)
	}
	if err := checkSnippet(s.ServerSnippet); err != nil {
		return bad("server snippet: %v", err)
	}
	for _, l := range s.Locations {
		switch l.Scheme {
		case "", SchemeHTTP, SchemeHTTPS, SchemeGRPC, SchemeGRPCS:
		default:
			return bad("unknown scheme %q", l.Scheme)
		}
		if l.MaxBodySize != "" && !sizeValue(l.MaxBodySize) {
			return bad("body size %q is not an nginx size", l.MaxBodySize)
		}
		for _, t := range []string{l.ConnectTimeout, l.ReadTimeout, l.SendTimeout} {
			if t != "" && !timeValue(t) {
				return bad("timeout %q is not an nginx duration", t)
			}
		}
		for _, line := range l.BasicAuth {
			if !htpasswdLine.MatchString(line) {
				return bad("a basic-auth line is not user:hash with a bcrypt, apr1 or {SHA} hash")
			}
		}
		for _, a := range l.Allow {
			if _, err := netip.ParsePrefix(a); err != nil {
				if _, err := netip.ParseAddr(a); err != nil {
					return bad("allow %q is not an address or CIDR", a)
				}
			}
		}
		if err := checkSnippet(l.LocationSnippet); err != nil {
			return bad("location snippet: %v", err)
		}
	}
	return nil
}

// checkSnippet: the braces of a snippet balance and never close the block
// it sits in. Braces inside quotes or a comment do not count, as nginx
// reads them; upstream validation is stricter still.
func checkSnippet(s string) error {
	depth := 0
	var quote rune
	escaped, comment := false, false
	for _, r := range s {
		switch {
		case comment:
			comment = r != '\n'
		case escaped:
			escaped = false
		case r == '\\':
			escaped = true
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case r == '#':
			comment = true
		case r == '{':
			depth++
		case r == '}':
			if depth--; depth < 0 {
				return fmt.Errorf("closes the block it is in")
			}
		}
	}
	if depth != 0 || quote != 0 {
		return fmt.Errorf("braces or quotes do not balance")
	}
	return nil
}

// htpasswdFile is the name of the file holding location i's logins; the
// index ends the name, after the last "-", so two hosts never share one.
func htpasswdFile(host string, i int) string {
	return hostFile(host, "-"+strconv.Itoa(i)+HtpasswdSuffix)
}

// writeSnippet puts raw directives on lines of their own, so a trailing
// comment in them cannot swallow the brace that closes the block.
func writeSnippet(b *strings.Builder, indent, snippet string) {
	if snippet == "" {
		return
	}
	put(b, indent, "# snippet (BERTH_SNIPPETS=on)\n")
	for line := range strings.SplitSeq(snippet, "\n") {
		put(b, indent, strings.TrimSpace(line), "\n")
	}
}

// writeLocationOptions emits a proxied location's limits and access rules.
// nginx's defaults (and a user's own http-level file) apply to every option
// not set; the body size is the exception: berth sets no limit unless asked.
func writeLocationOptions(b *strings.Builder, host string, i int, l Location) {
	size := l.MaxBodySize
	if size == "" {
		size = "0"
	}
	put(b, "        client_max_body_size ", size, ";\n")
	for _, a := range l.Allow {
		put(b, "        allow ", a, ";\n")
	}
	if len(l.Allow) > 0 {
		b.WriteString("        deny all;\n")
	}
	if len(l.BasicAuth) > 0 {
		// Relative to nginx's config prefix (/etc/nginx), where conf.d is.
		put(b, "        auth_basic \"restricted\";\n        auth_basic_user_file conf.d/", htpasswdFile(host, i), ";\n")
	}
}

// writePass emits the pass to the upstream with its headers and timeouts.
// With StripPath the URI "/" after the upstream replaces the matched
// prefix, so /api/x reaches the backend as /x and /api as /.
func writePass(b *strings.Builder, host string, i int, l Location) {
	uri := ""
	if l.StripPath && l.Path != "/" {
		uri = "/"
	}
	prefix, directives := "proxy", proxyBlock
	switch l.Scheme {
	case SchemeGRPC, SchemeGRPCS:
		prefix, directives = "grpc", grpcBlock
		put(b, "        grpc_pass ", l.Scheme, "://")
		writeUpstreamName(b, host, i)
		b.WriteString(";\n")
	default:
		scheme := SchemeHTTP
		if l.Scheme == SchemeHTTPS {
			scheme = SchemeHTTPS
		}
		put(b, "        proxy_pass ", scheme, "://")
		writeUpstreamName(b, host, i)
		put(b, uri, ";\n")
		if scheme == SchemeHTTPS {
			b.WriteString("        proxy_ssl_server_name on;\n")
		}
	}
	b.WriteString(directives)
	for _, t := range []struct{ name, v string }{{"connect", l.ConnectTimeout}, {"send", l.SendTimeout}, {"read", l.ReadTimeout}} {
		if t.v != "" {
			put(b, "        ", prefix, "_", t.name, "_timeout ", t.v, ";\n")
		}
	}
}

// grpcDirectives are proxyDirectives for grpc_pass: the same edge rules
// for client-sent headers.
var grpcDirectives = []string{
	"grpc_set_header Host $host;",
	"grpc_set_header X-Real-IP $remote_addr;",
	"grpc_set_header X-Forwarded-For $remote_addr;",
	"grpc_set_header X-Forwarded-Proto $scheme;",
	`grpc_set_header Forwarded "";`,
	`grpc_set_header X-Forwarded-Ssl "";`,
	`grpc_set_header Proxy "";`,
}

// ipv6Listen is the [::] listen beside listen (which may be "80" or
// "127.0.0.1:8080"), or "" without IPv6.
func ipv6Listen(listen string, ipv6 bool) string {
	if !ipv6 {
		return ""
	}
	port := listen
	if i := strings.LastIndex(listen, ":"); i >= 0 {
		port = listen[i+1:]
	}
	return "[::]:" + port
}
