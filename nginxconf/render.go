package nginxconf

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// File names. A site's file is FileName(host), normally FilePrefix + host +
// FileSuffix; the default server uses an underscore, which no valid
// hostname contains, so a site called "default" can never collide with it.
const (
	FilePrefix = "berth-"
	FileSuffix = ".conf"
	// HtpasswdSuffix ends the files of basic-auth logins; nginx's "*.conf"
	// include never loads them as config.
	HtpasswdSuffix = ".htpasswd"
	// IncludeSuffix ends files that server blocks include; like htpasswd
	// files, nginx's "*.conf" include never loads them at http level.
	IncludeSuffix = ".inc"
	DefaultFile   = FilePrefix + "_default" + FileSuffix
)

// Files maps a file name inside the conf dir to its content.
type Files map[string][]byte

// SiteError says why one site was left out of the rendered output.
type SiteError struct {
	Host   string
	Reason string
}

func (e *SiteError) Error() string { return fmt.Sprintf("site %q: %s", e.Host, e.Reason) }

// Render turns cfg into berth's files. It is pure and deterministic: equal
// input (in any order) gives byte-identical output. A site with a value that
// is not safe to emit is left out and reported; the other sites still render,
// so one bad input never takes the rest down.
func Render(cfg Config) (Files, []error) {
	var errs []error
	files := make(Files, len(cfg.Sites)+2) // a file per site, plus the shared two
	webroot := cfg.Webroot
	if !safeToken(webroot) || !strings.HasPrefix(webroot, "/") {
		// Without a safe webroot no server block can be written.
		return files, []error{fmt.Errorf("webroot %q: not an absolute path of safe characters", webroot)}
	}
	httpListen, httpsListen := listenOr(cfg.HTTPListen, "80"), listenOr(cfg.HTTPSListen, "443")
	if !safeToken(httpListen) || !safeToken(httpsListen) {
		return files, []error{fmt.Errorf("listen %q/%q: unsafe characters", httpListen, httpsListen)}
	}
	switch cfg.HTTP2 {
	case HTTP2Off, HTTP2Listen, HTTP2Directive:
	default:
		return files, []error{fmt.Errorf("unknown HTTP/2 mode %q", cfg.HTTP2)}
	}
	proxies, err := trustedProxies(cfg.TrustedProxies)
	if err != nil {
		// Trusting fewer proxies than asked would show backends the load
		// balancer's address; rendering nothing keeps the running config.
		return files, []error{err}
	}
	hosts := make([]string, 0, len(cfg.Sites))
	for _, s := range sortedSites(cfg.Sites) {
		if err := cmp.Or(checkSite(s), checkResolve(s, cfg.Resolver)); err != nil {
			errs = append(errs, err)
			continue
		}
		name := FileName(s.Host)
		if _, dup := files[name]; dup {
			errs = append(errs, &SiteError{s.Host, "duplicate site"})
			continue
		}
		files[name] = renderSite(s, webroot, httpListen, httpsListen, cfg.HTTP2, cfg.IPv6, cfg.Resolver)
		for i, l := range s.Locations {
			if len(l.BasicAuth) > 0 {
				files[htpasswdFile(s.Host, i)] = []byte(strings.Join(l.BasicAuth, "\n") + "\n")
			}
		}
		hosts = append(hosts, s.Host)
	}
	files[ErrorPagesFile] = renderErrorPages()
	files[DefaultFile] = renderDefault(defaults{webroot, httpListen, httpsListen, cfg.IPv6, proxies, hosts})
	return files, errs
}

func listenOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// sortedSites returns a copy of sites sorted by host, each with its
// locations sorted by path and backends sorted, so output is independent of
// the order Docker listed containers in. The caller's slices are never
// changed: the locations of all sites are copied into one array (one
// allocation, not one per site), and a backend list is copied only when it
// is not already sorted and free of repeats (the controller's always is);
// otherwise it is shared, which is safe because rendering only reads it.
func sortedSites(sites []Site) []Site {
	if inOrder(sites) {
		return sites // as the controller passes them: nothing to copy
	}
	out := make([]Site, len(sites))
	n := 0
	for _, s := range sites {
		n += len(s.Locations)
	}
	all := make([]Location, 0, n)
	for i, s := range sites {
		start := len(all)
		all = append(all, s.Locations...)
		locs := all[start:len(all):len(all)]
		for j := range locs {
			locs[j].Backends = sortedUnique(locs[j].Backends)
		}
		slices.SortFunc(locs, func(a, b Location) int { return strings.Compare(a.Path, b.Path) })
		s.Locations = locs
		out[i] = s
	}
	slices.SortFunc(out, func(a, b Site) int { return strings.Compare(a.Host, b.Host) })
	return out
}

// inOrder reports whether sites are already what sortedSites would return:
// hosts, and each site's paths, strictly increasing (so no sort could
// reorder them, not even equal ones), and backends sorted without repeats.
// Such sites are rendered as they are, since rendering only reads them.
func inOrder(sites []Site) bool {
	for i, s := range sites {
		if i > 0 && sites[i-1].Host >= s.Host {
			return false
		}
		for j, l := range s.Locations {
			if j > 0 && s.Locations[j-1].Path >= l.Path || !strictlyIncreasing(l.Backends) {
				return false
			}
		}
	}
	return true
}

func strictlyIncreasing(values []string) bool {
	for i := 1; i < len(values); i++ {
		if values[i-1] >= values[i] {
			return false
		}
	}
	return true
}

// sortedUnique is backends sorted and without repeats: backends itself when
// it already is, else a sorted copy.
func sortedUnique(backends []string) []string {
	if strictlyIncreasing(backends) {
		return backends
	}
	backends = slices.Clone(backends)
	slices.Sort(backends)
	return slices.Compact(backends)
}

func checkSite(s Site) error {
	if !validHost(s.Host) {
		return &SiteError{s.Host, "host is not a lower-case DNS name or wildcard server name"}
	}
	switch s.HTTPS {
	case "", HTTPSRedirect, HTTPSBoth, HTTPSOff, HTTPSOnly:
	default:
		return &SiteError{s.Host, fmt.Sprintf("unknown https mode %q", s.HTTPS)}
	}
	if s.TLS != nil && (!safePath(s.TLS.CertFile) || !safePath(s.TLS.KeyFile)) {
		return &SiteError{s.Host, "certificate path has unsafe characters"}
	}
	if err := checkOptions(s); err != nil {
		return err
	}
	if len(s.Locations) == 0 && s.RedirectTo == "" {
		return &SiteError{s.Host, "no locations"}
	}
	for i, l := range s.Locations {
		if !safePath(l.Path) || strings.Contains(l.Path, "//") {
			return &SiteError{s.Host, fmt.Sprintf("path %q has unsafe characters", l.Path)}
		}
		if i > 0 && s.Locations[i-1].Path == l.Path {
			return &SiteError{s.Host, fmt.Sprintf("path %q appears twice", l.Path)}
		}
		for _, b := range l.Backends {
			if !safeToken(b) || strings.HasPrefix(b, "/") {
				return &SiteError{s.Host, fmt.Sprintf("backend %q is not host:port", b)}
			}
		}
	}
	return nil
}

func safePath(p string) bool { return strings.HasPrefix(p, "/") && safeToken(p) }
