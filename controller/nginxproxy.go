package controller

// The drop-in path from nginx-proxy + acme-companion: their per-container
// environment variables, mapped onto berth's labels. Pure: the Docker adapter
// reads the environment (only with BERTH_NGINX_PROXY_ENV=on), these functions
// turn it into a label map, and the one label parser validates it like any
// other, so an env value gets exactly the checks a label value gets.

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The nginx-proxy and acme-companion variables berth reads. ACME_HOST is
// acme-companion's current name; LETSENCRYPT_HOST its legacy one.
const (
	EnvVirtualHost     = "VIRTUAL_HOST"
	EnvVirtualPort     = "VIRTUAL_PORT"
	EnvVirtualPath     = "VIRTUAL_PATH"
	EnvVirtualDest     = "VIRTUAL_DEST"
	EnvVirtualProto    = "VIRTUAL_PROTO"
	EnvHTTPSMethod     = "HTTPS_METHOD"
	EnvHSTS            = "HSTS"
	EnvACMEHost        = "ACME_HOST"
	EnvLetsEncryptHost = "LETSENCRYPT_HOST"
	EnvSingleDomain    = "ACME_SINGLE_DOMAIN_CERTS"
	EnvSingleDomainOld = "LETSENCRYPT_SINGLE_DOMAIN_CERTS"
	envMultiports      = "VIRTUAL_HOST_MULTIPORTS"
)

// IsNginxProxyEnv reports whether name is one of the variables
// NginxProxyLabels reads; the Docker adapter keeps only those.
func IsNginxProxyEnv(name string) bool {
	switch name {
	case EnvVirtualHost, EnvVirtualPort, EnvVirtualPath, EnvVirtualDest, EnvVirtualProto, EnvHTTPSMethod,
		EnvHSTS, EnvACMEHost, EnvLetsEncryptHost, EnvSingleDomain, EnvSingleDomainOld, envMultiports:
		return true
	}
	return false
}

// NginxProxyNoCertRoute names the extra route that carries the VIRTUAL_HOST
// names missing from ACME_HOST / LETSENCRYPT_HOST: acme-companion gives them
// no certificate, and berth's certificate switch is per route.
const NginxProxyNoCertRoute = "nocert"

// Synthesised option names (the part after "proxy."). Kept local so this
// file does not depend on how labels.go spells its constants.
const (
	optHost, optPort, optPath, optStripPath = "host", "port", "path", "strip-path"
	optScheme, optHTTPS, optHSTS, optACME   = "scheme", "https", "hsts", "acme"
	optCertPerHost                          = "cert-per-host"
)

// nginxProxySources says which variable each synthesised option came from,
// so a problem can name what the user actually wrote.
var nginxProxySources = map[string]string{
	optHost: EnvVirtualHost, optPort: EnvVirtualPort, optPath: EnvVirtualPath,
	optStripPath: EnvVirtualDest, optScheme: EnvVirtualProto, optHTTPS: EnvHTTPSMethod,
	optHSTS: EnvHSTS, optACME: EnvLetsEncryptHost, optCertPerHost: EnvSingleDomain,
}

// NginxProxySource returns the environment variable a label synthesised by
// NginxProxyLabels came from ("" for any other label), e.g. "proxy.hsts" →
// "HSTS", "proxy.nocert.port" → "VIRTUAL_PORT". The caller uses it to name
// the variable in a problem instead of a label the user never wrote.
func NginxProxySource(label string) string {
	opt, ok := strings.CutPrefix(label, LabelPrefix)
	if !ok {
		return ""
	}
	opt = strings.TrimPrefix(opt, NginxProxyNoCertRoute+".")
	return nginxProxySources[opt]
}

// NginxProxyLabels maps nginx-proxy / acme-companion variables onto berth
// labels, following nginx-proxy's semantics:
//   - VIRTUAL_HOST (comma list; wildcards kept, regular expressions dropped
//     with a warning) → proxy.host; without it nothing is mapped.
//   - VIRTUAL_PORT → proxy.port; VIRTUAL_PATH → proxy.path.
//   - VIRTUAL_DEST=/ with a VIRTUAL_PATH → proxy.strip-path=on; other values
//     are a warning (berth only strips the prefix).
//   - VIRTUAL_PROTO http/https/grpc/grpcs → proxy.scheme; uwsgi and fastcgi
//     are a warning (proxied over HTTP).
//   - ACME_HOST (or legacy LETSENCRYPT_HOST) names the hosts that get a
//     certificate. Absent: proxy.acme=off, as nginx-proxy without the
//     companion. A subset of VIRTUAL_HOST: the other hosts go to a second
//     route, proxy.nocert.*, with the same options and proxy.acme=off.
//     Names outside VIRTUAL_HOST are a warning (nginx-proxy routes only
//     VIRTUAL_HOST, so their challenge could not be answered either).
//   - ACME_SINGLE_DOMAIN_CERTS=true → proxy.cert-per-host=on.
//   - HTTPS_METHOD redirect/noredirect/nohttp/nohttps → proxy.https
//     redirect/both/only/off. noredirect also turns HSTS off, as nginx-proxy
//     does (an HSTS value beside it is a warning).
//   - HSTS (off or a value) → proxy.hsts.
//
// Values are copied, not validated: the label parser checks them. Pure.
func NginxProxyLabels(env map[string]string) (labels map[string]string, warnings []string) {
	hosts, warnings := virtualHosts(env[EnvVirtualHost])
	if v := env[envMultiports]; v != "" {
		warnings = append(warnings, envMultiports+" is not supported (ignored); use proxy.<route>.* labels")
	}
	if len(hosts) == 0 {
		return nil, warnings
	}
	opts, ws := nginxProxyOptions(env)
	warnings = append(warnings, ws...)
	certHosts, noCert, ws := splitCertHosts(hosts, env)
	warnings = append(warnings, ws...)
	labels = map[string]string{}
	if len(certHosts) == 0 {
		set(labels, "", opts, noCert, "off")
		return labels, warnings
	}
	set(labels, "", opts, certHosts, "on")
	if isTrue(firstSet(env, EnvSingleDomain, EnvSingleDomainOld)) {
		labels[LabelPrefix+optCertPerHost] = "on"
	}
	if len(noCert) > 0 {
		set(labels, NginxProxyNoCertRoute+".", opts, noCert, "off")
	}
	return labels, warnings
}

// set writes one route's labels under prefix ("" or "<route>.").
func set(labels map[string]string, prefix string, opts map[string]string, hosts []string, acme string) {
	for k, v := range opts {
		labels[LabelPrefix+prefix+k] = v
	}
	labels[LabelPrefix+prefix+optHost] = strings.Join(hosts, ",")
	labels[LabelPrefix+prefix+optACME] = acme
}

// virtualHosts splits VIRTUAL_HOST, keeping order and dropping duplicates
// and nginx regular expressions (~...), which berth cannot route.
func virtualHosts(v string) (hosts, warnings []string) {
	for _, h := range strings.Split(v, ",") {
		h = strings.TrimSpace(h)
		switch {
		case h == "" || slices.Contains(hosts, h):
		case strings.HasPrefix(h, "~"):
			warnings = append(warnings, fmt.Sprintf("%s: regular expression %q is not supported (ignored)", EnvVirtualHost, h))
		default:
			hosts = append(hosts, h)
		}
	}
	return hosts, warnings
}

// nginxProxyOptions maps the per-route variables other than the hosts.
func nginxProxyOptions(env map[string]string) (map[string]string, []string) {
	opts := map[string]string{}
	var warnings []string
	if v := strings.TrimSpace(env[EnvVirtualPort]); v != "" {
		opts[optPort] = v
	}
	path := strings.TrimSpace(env[EnvVirtualPath])
	if path != "" {
		// A regular expression goes through as it is, so the label parser
		// skips the container: served at "/" instead, it would take every
		// path of the host, which nginx-proxy never sent it.
		opts[optPath] = path
	}
	if dest := strings.TrimSpace(env[EnvVirtualDest]); dest != "" {
		switch {
		case dest == "/" && path != "" && path != "/":
			opts[optStripPath] = "on"
		case dest == "/":
		default:
			warnings = append(warnings, fmt.Sprintf("%s=%q is not supported (ignored): berth can only strip the path prefix, with %s=/", EnvVirtualDest, dest, EnvVirtualDest))
		}
	}
	if proto := strings.ToLower(strings.TrimSpace(env[EnvVirtualProto])); proto != "" {
		switch proto {
		case "http", "https", "grpc", "grpcs":
			opts[optScheme] = proto
		default:
			warnings = append(warnings, fmt.Sprintf("%s=%q is not supported (ignored): proxied over http; berth speaks http, https, grpc and grpcs to backends", EnvVirtualProto, proto))
		}
	}
	method := strings.ToLower(strings.TrimSpace(env[EnvHTTPSMethod]))
	switch method {
	case "":
	case "redirect":
		opts[optHTTPS] = "redirect"
	case "noredirect":
		opts[optHTTPS] = "both"
	case "nohttp":
		opts[optHTTPS] = "only"
	case "nohttps":
		opts[optHTTPS] = "off"
	default:
		// Through as it is: the label parser names the bad value.
		opts[optHTTPS] = method
	}
	if hsts := strings.TrimSpace(env[EnvHSTS]); hsts != "" {
		opts[optHSTS] = hsts
	}
	if method == "noredirect" {
		// nginx-proxy sends no HSTS with noredirect: clients told to use
		// HTTPS would never see the HTTP site the user asked for.
		if v, ok := opts[optHSTS]; ok && v != "off" {
			warnings = append(warnings, fmt.Sprintf("%s=%q is ignored with %s=noredirect, as nginx-proxy does", EnvHSTS, v, EnvHTTPSMethod))
		}
		opts[optHSTS] = "off"
	}
	return opts, warnings
}

// splitCertHosts divides VIRTUAL_HOST into the names acme-companion would
// order a certificate for and the rest, in VIRTUAL_HOST's order.
func splitCertHosts(hosts []string, env map[string]string) (cert, noCert, warnings []string) {
	name := EnvACMEHost
	v, ok := env[EnvACMEHost]
	if !ok || strings.TrimSpace(v) == "" {
		name, v = EnvLetsEncryptHost, env[EnvLetsEncryptHost]
	}
	want := map[string]bool{}
	for _, h := range strings.Split(v, ",") {
		if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
			want[h] = true
		}
	}
	for _, h := range hosts {
		if want[strings.ToLower(h)] {
			cert = append(cert, h)
			delete(want, strings.ToLower(h))
		} else {
			noCert = append(noCert, h)
		}
	}
	if len(want) > 0 {
		warnings = append(warnings, fmt.Sprintf("%s names %s, which %s does not: no certificate for them (berth routes only %s)",
			name, strings.Join(slices.Sorted(maps.Keys(want)), ", "), EnvVirtualHost, EnvVirtualHost))
	}
	return cert, noCert, warnings
}

func firstSet(env map[string]string, names ...string) string {
	for _, n := range names {
		if v := strings.TrimSpace(env[n]); v != "" {
			return v
		}
	}
	return ""
}

func isTrue(v string) bool {
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on":
		return true
	}
	return false
}

// MergeNginxProxy combines a container's labels with the labels its
// nginx-proxy environment maps to. Labels win: a container that sets
// proxy.host (or any proxy.<route>.host) is configured by its labels alone,
// and a VIRTUAL_HOST beside it gets one warning; otherwise the env labels
// are added under the container's own proxy.* labels, so a migrating user
// can keep VIRTUAL_HOST and add, say, proxy.max-body-size. Env warnings are
// joined into the one warning string. Pure; labels is not modified.
func MergeNginxProxy(labels, env map[string]string) (merged map[string]string, warning string) {
	if strings.TrimSpace(env[EnvVirtualHost]) == "" && env[envMultiports] == "" {
		return labels, ""
	}
	if hostLabel(labels) != "" {
		return labels, fmt.Sprintf("label %s is set, so %s=%q and the other nginx-proxy variables are ignored (labels win)",
			hostLabel(labels), EnvVirtualHost, env[EnvVirtualHost])
	}
	fromEnv, warnings := NginxProxyLabels(env)
	merged = make(map[string]string, len(labels)+len(fromEnv))
	for k, v := range fromEnv {
		merged[k] = v
	}
	for k, v := range labels {
		merged[k] = v
	}
	return merged, strings.Join(warnings, "; ")
}

// hostLabel returns the first label (sorted) that opts a route in:
// proxy.host or proxy.<route>.host.
func hostLabel(labels map[string]string) string {
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		rest, ok := strings.CutPrefix(k, LabelPrefix)
		if !ok {
			continue
		}
		if rest == optHost {
			return k
		}
		if route, opt, ok := strings.Cut(rest, "."); ok && opt == optHost && route != "" {
			return k
		}
	}
	return ""
}
