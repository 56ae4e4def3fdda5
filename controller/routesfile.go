package controller

// Routes that are not containers: BERTH_ROUTES_FILE names a YAML file of
// routes whose backends are addresses (a service on the Docker host or on
// another machine). Each entry uses the label option names; ParseRoutesFile
// turns it into a label map for the one label parser, plus its validated
// backends. WatchRoutesFile polls the file, so no inotify dependency and no
// missed events on bind mounts, where inotify often sees nothing.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// FileRoute is one valid entry of the routes file.
type FileRoute struct {
	Name     string            // the entry's key: lower-case letters and digits
	Labels   map[string]string // "proxy.<option>" for each option of the entry
	Backends []string          // "host:port", "[v6]:port" or "name:port"; sorted, unique
}

// routesFile is the file's top level; decoded strictly, so a misspelt
// top-level key is an error rather than a file that silently routes nothing.
type routesFile struct {
	Routes yaml.Node `yaml:"routes"`
}

var (
	routeNameRe  = regexp.MustCompile(`^[a-z0-9]{1,63}$`)
	optionNameRe = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	dnsNameRe    = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// Keys of an entry that are not label options.
const (
	keyBackend  = "backend"
	keyBackends = "backends"
)

// ParseRoutesFile reads the routes file. err is set only when the file is
// not a routes file at all (not YAML, an unknown top-level key, routes not
// a mapping): then the caller keeps the entries of its last successful parse
// in use, since a half-saved file must not take every file route down. An
// invalid entry is left out with one problem naming the entry and the
// reason; the other entries are returned. Option values are not validated
// here: the label parser checks them like any label. Pure.
func ParseRoutesFile(data []byte) (entries []FileRoute, problems []string, err error) {
	var f routesFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		return nil, nil, fmt.Errorf("routes file: %w", err)
	}
	switch {
	case f.Routes.Kind == 0 || f.Routes.Tag == "!!null": // empty file, no or empty routes key: no file routes
		return nil, nil, nil
	case f.Routes.Kind == yaml.MappingNode:
	default:
		return nil, nil, fmt.Errorf("routes file: line %d: routes must be a mapping of route name to options", f.Routes.Line)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(f.Routes.Content); i += 2 {
		key, val := f.Routes.Content[i], f.Routes.Content[i+1]
		name := key.Value
		if seen[name] {
			problems = append(problems, fmt.Sprintf("route %q (line %d): defined twice; both skipped", name, key.Line))
			entries = slices.DeleteFunc(entries, func(e FileRoute) bool { return e.Name == name })
			continue
		}
		seen[name] = true
		e, err := parseFileRoute(name, val)
		if err != nil {
			problems = append(problems, fmt.Sprintf("route %q (line %d): %v; route skipped", name, key.Line, err))
			continue
		}
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b FileRoute) int { return strings.Compare(a.Name, b.Name) })
	return entries, problems, nil
}

// parseFileRoute validates one entry's shape and its backends.
func parseFileRoute(name string, n *yaml.Node) (FileRoute, error) {
	if !routeNameRe.MatchString(name) {
		return FileRoute{}, fmt.Errorf("a route name is 1-63 lower-case letters and digits")
	}
	if n.Kind != yaml.MappingNode {
		return FileRoute{}, fmt.Errorf("must be a mapping of options")
	}
	e := FileRoute{Name: name, Labels: map[string]string{}}
	var backends []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i].Value, n.Content[i+1]
		v, err := scalarOrList(val)
		if err != nil {
			return FileRoute{}, fmt.Errorf("option %s: %w", key, err)
		}
		switch {
		case key == keyBackend || key == keyBackends:
			backends = append(backends, splitList(v)...)
		case key == optPort || key == "network" || key == "nginx":
			return FileRoute{}, fmt.Errorf("option %s does not apply to a file route: its backends are addresses (host:port in %s)", key, keyBackend)
		case !optionNameRe.MatchString(key):
			// Also keeps "web.host" from forging a named route.
			return FileRoute{}, fmt.Errorf("option %q: option names are lower-case kebab-case words", key)
		default:
			e.Labels[LabelPrefix+key] = v
		}
	}
	if e.Labels[LabelPrefix+optHost] == "" {
		return FileRoute{}, fmt.Errorf("no %s given", optHost)
	}
	if len(backends) == 0 {
		return FileRoute{}, fmt.Errorf("no %s given", keyBackend)
	}
	for _, b := range backends {
		nb, err := NormalizeBackend(b)
		if err != nil {
			return FileRoute{}, fmt.Errorf("%s %q: %w", keyBackend, b, err)
		}
		e.Backends = append(e.Backends, nb)
	}
	slices.Sort(e.Backends)
	e.Backends = slices.Compact(e.Backends)
	return e, nil
}

// scalarOrList returns a scalar's text, or a list of scalars joined by
// commas (the label syntax of every list option). YAML booleans become
// on/off, the label spelling, so "strip-path: true" means what it says.
func scalarOrList(n *yaml.Node) (string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!bool" {
			if b, err := strconv.ParseBool(strings.ToLower(n.Value)); err == nil {
				return map[bool]string{true: "on", false: "off"}[b], nil
			}
		}
		if n.Tag == "!!null" {
			return "", nil
		}
		return n.Value, nil
	case yaml.SequenceNode:
		parts := make([]string, 0, len(n.Content))
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return "", fmt.Errorf("a list may hold only plain values")
			}
			parts = append(parts, c.Value)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("must be a value or a list of values")
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// NormalizeBackend checks a backend address and returns its canonical form:
// "1.2.3.4:80", "[fd00::1]:80" (IPv6 in brackets, compressed) or
// "name.example:80" (lower case). ResolveBackends turns names into
// addresses before they reach nginx.
func NormalizeBackend(b string) (string, error) {
	host, port, err := net.SplitHostPort(strings.TrimSpace(b))
	if err != nil {
		return "", fmt.Errorf("must be host:port, with an IPv6 address in brackets ([addr]:port)")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || strings.ContainsAny(port, "+-") {
		return "", fmt.Errorf("port %q: must be a number from 1 to 65535", port)
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if addr.Zone() != "" {
			return "", fmt.Errorf("an IPv6 zone is not supported")
		}
		return net.JoinHostPort(addr.Unmap().String(), port), nil
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if len(name) > 253 || !dnsNameRe.MatchString(name) {
		return "", fmt.Errorf("%q is neither an IP address nor a DNS name", host)
	}
	return net.JoinHostPort(name, port), nil
}

// Lookup resolves a DNS name to addresses; net.DefaultResolver.LookupNetIP
// has this shape.
type Lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)

// ResolveBackends replaces the DNS names among a file route's backends by
// their addresses ("ip:port", sorted, unique). nginx resolves a name in an
// upstream when it loads its config, and one name that does not resolve
// fails nginx -t for every site; resolved here, at the edge and on every
// pass, a name that does not resolve costs only its own route (the caller
// skips it with the returned error), and a changed address is a changed
// config like any other.
func ResolveBackends(ctx context.Context, lookup Lookup, backends []string) ([]string, error) {
	var out []string
	for _, b := range backends {
		host, port, err := net.SplitHostPort(b)
		if err != nil {
			return nil, fmt.Errorf("backend %q: %w", b, err)
		}
		if _, err := netip.ParseAddr(host); err == nil {
			out = append(out, b)
			continue
		}
		addrs, err := lookup(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("resolve backend %s: %w", host, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("resolve backend %s: no addresses", host)
		}
		for _, a := range addrs {
			out = append(out, net.JoinHostPort(a.Unmap().WithZone("").String(), port))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// RoutesFileContent is one change of the routes file: its new bytes, or why
// it cannot be read (a missing file is an error, not an empty route set, so
// a mount that is briefly absent keeps the last good routes).
type RoutesFileContent struct {
	Data []byte
	Err  error
}

// WatchRoutesFile polls path every interval and sends its content at the
// start and whenever it changes; a read error is sent once until it
// changes. It stats first and reads only when the modification time or size
// moved, then compares a hash, so touching the file sends nothing. The
// channel closes when ctx ends.
func WatchRoutesFile(ctx context.Context, path string, every time.Duration) <-chan RoutesFileContent {
	out := make(chan RoutesFileContent)
	go func() {
		defer close(out)
		t := time.NewTicker(every)
		defer t.Stop()
		var last fileVersion
		for first := true; ; first = false {
			if cur, changed := pollFile(path, last); changed || first {
				last = cur
				select {
				case out <- RoutesFileContent{Data: cur.data, Err: cur.err}:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// fileVersion is what the watcher last sent.
type fileVersion struct {
	mod    time.Time
	size   int64
	sum    [sha256.Size]byte
	data   []byte
	err    error
	errMsg string
}

// pollFile returns the file's current version and whether it differs from
// last in content (or in the error that stops it being read).
func pollFile(path string, last fileVersion) (fileVersion, bool) {
	st, err := os.Stat(path)
	if err == nil && last.err == nil && last.data != nil && st.ModTime().Equal(last.mod) && st.Size() == last.size {
		return last, false
	}
	var data []byte
	if err == nil {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		err = fmt.Errorf("read routes file: %w", err)
		cur := fileVersion{err: err, errMsg: err.Error()}
		return cur, cur.errMsg != last.errMsg
	}
	if data == nil {
		data = []byte{}
	}
	cur := fileVersion{mod: st.ModTime(), size: st.Size(), sum: sha256.Sum256(data), data: data}
	return cur, last.err != nil || last.data == nil || cur.sum != last.sum
}
