package controller

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestParseRoutesFile(t *testing.T) {
	data := []byte(`
routes:
  nas:
    host: nas.example.com
    backend: 192.168.1.10:5000
    max-body-size: 1g
    strip-path: true
  pool:
    host: [a.example.com, b.example.com]
    backends: [b.internal:2, "[FD00::1]:8080", a.internal:1, b.internal:2]
  broken:
    host: broken.example.com
    backend: 10.0.0.1
  Bad_Name:
    host: x.example.com
    backend: 10.0.0.1:80
`)
	entries, problems, err := ParseRoutesFile(data)
	if err != nil {
		t.Fatal(err)
	}
	want := []FileRoute{
		{Name: "nas", Labels: map[string]string{"proxy.host": "nas.example.com", "proxy.max-body-size": "1g", "proxy.strip-path": "on"},
			Backends: []string{"192.168.1.10:5000"}},
		{Name: "pool", Labels: map[string]string{"proxy.host": "a.example.com,b.example.com"},
			Backends: []string{"[fd00::1]:8080", "a.internal:1", "b.internal:2"}},
	}
	if !slices.EqualFunc(entries, want, equalFileRoute) {
		t.Errorf("entries:\n got %+v\nwant %+v", entries, want)
	}
	if len(problems) != 2 || !strings.Contains(problems[0], `route "broken"`) || !strings.Contains(problems[0], "host:port") ||
		!strings.Contains(problems[1], `route "Bad_Name"`) || !strings.Contains(problems[1], "lower-case") {
		t.Errorf("problems: %q", problems)
	}
}

func equalFileRoute(a, b FileRoute) bool {
	return a.Name == b.Name && maps.Equal(a.Labels, b.Labels) && slices.Equal(a.Backends, b.Backends)
}

func TestParseRoutesFileSkipsOnlyTheBadEntry(t *testing.T) {
	tests := []struct {
		name, entry, reason string
	}{
		{"an entry without host", "{backend: 10.0.0.1:80}", "no host"},
		{"an entry without backend", "{host: x.example.com}", "no backend"},
		{"a port option (the port is in the backend)", "{host: x.example.com, backend: 10.0.0.1:80, port: 81}", "port does not apply"},
		{"a dotted option that would forge a named route", "{host: x.example.com, backend: 10.0.0.1:80, web.host: y.example.com}", "kebab-case"},
		{"a nested mapping as a value", "{host: x.example.com, backend: 10.0.0.1:80, allow: {a: b}}", "option allow"},
		{"an entry that is not a mapping", "just-a-string", "mapping of options"},
		{"a backend port out of range", "{host: x.example.com, backend: 10.0.0.1:70000}", "1 to 65535"},
		{"an IPv6 backend without brackets", "{host: x.example.com, backend: 'fd00::1:80'}", "brackets"},
		{"a backend that is neither address nor name", "{host: x.example.com, backend: 'a_b:80'}", "neither"},
		{"a backend with an IPv6 zone", "{host: x.example.com, backend: '[fe80::1%eth0]:80'}", "zone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := "routes:\n  good:\n    host: good.example.com\n    backend: 10.0.0.2:80\n  bad: " + tc.entry + "\n"
			entries, problems, err := ParseRoutesFile([]byte(data))
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Name != "good" {
				t.Errorf("the good entry should stay: %+v", entries)
			}
			if len(problems) != 1 || !strings.Contains(problems[0], `route "bad"`) || !strings.Contains(problems[0], tc.reason) {
				t.Errorf("want one problem naming route \"bad\" and %q, got %q", tc.reason, problems)
			}
		})
	}
}

func TestParseRoutesFileDuplicateNamesSkipBoth(t *testing.T) {
	data := "routes:\n  a: {host: a.example.com, backend: 10.0.0.1:80}\n  a: {host: b.example.com, backend: 10.0.0.2:80}\n  c: {host: c.example.com, backend: 10.0.0.3:80}\n"
	entries, problems, err := ParseRoutesFile([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name != "c" || len(problems) != 1 || !strings.Contains(problems[0], "defined twice") {
		t.Errorf("entries %+v, problems %q", entries, problems)
	}
}

func TestParseRoutesFileRejectsWhatIsNotARoutesFile(t *testing.T) {
	for name, data := range map[string]string{
		"not YAML":                 "routes: [unclosed\n",
		"tab-indented YAML":        "routes:\n\tnas: {}\n",
		"an unknown top-level key": "route:\n  nas: {host: a.example.com, backend: 10.0.0.1:80}\n",
		"routes as a list":         "routes:\n  - host: a.example.com\n",
		"a top-level list":         "- a\n- b\n",
	} {
		t.Run(name, func(t *testing.T) {
			entries, problems, err := ParseRoutesFile([]byte(data))
			if err == nil || entries != nil || problems != nil {
				t.Errorf("want one error and nothing else, got %+v %q %v", entries, problems, err)
			}
		})
	}
}

func TestParseRoutesFileEmptyMeansNoRoutes(t *testing.T) {
	for _, data := range []string{"", "# nothing yet\n", "routes:\n", "routes: {}\n"} {
		entries, problems, err := ParseRoutesFile([]byte(data))
		if err != nil || len(entries) != 0 || len(problems) != 0 {
			t.Errorf("%q: got %+v %q %v", data, entries, problems, err)
		}
	}
}

func TestNormalizeBackend(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:80":          "10.0.0.1:80",
		"[FD00:0::1]:443":      "[fd00::1]:443",
		"[::ffff:10.0.0.1]:80": "10.0.0.1:80",
		"NAS.Local.:5000":      "nas.local:5000",
		"localhost:8080":       "localhost:8080",
	} {
		if got, err := NormalizeBackend(in); got != want || err != nil {
			t.Errorf("NormalizeBackend(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.1", ":80", "10.0.0.1:0", "10.0.0.1:+80", "-a.example:80", "a..b:80", "a b:80"} {
		if got, err := NormalizeBackend(in); err == nil {
			t.Errorf("NormalizeBackend(%q) = %q, want an error", in, got)
		}
	}
}

func TestWatchRoutesFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "routes.yml")
		write := func(s string) {
			t.Helper()
			if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(t.Context())
		ch := WatchRoutesFile(ctx, path, time.Second)
		next := func() (RoutesFileContent, bool) {
			time.Sleep(time.Second)
			synctest.Wait()
			select {
			case c := <-ch:
				return c, true
			default:
				return RoutesFileContent{}, false
			}
		}

		if c := <-ch; c.Err == nil {
			t.Fatalf("a missing file should be an error at start, got %q", c.Data)
		}
		if c, ok := next(); ok {
			t.Fatalf("the same error should not be sent again: %+v", c)
		}
		write("routes: {}\n")
		if c, ok := next(); !ok || c.Err != nil || string(c.Data) != "routes: {}\n" {
			t.Fatalf("the new file should be sent: %+v %v", c, ok)
		}
		if c, ok := next(); ok {
			t.Fatalf("an unchanged file should send nothing: %+v", c)
		}
		write("routes: {}\n") // rewritten, same bytes
		if err := os.Chtimes(path, time.Time{}, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if c, ok := next(); ok {
			t.Fatalf("a touched file with the same content should send nothing: %+v", c)
		}
		write("routes: {a: {}}\n")
		if c, ok := next(); !ok || string(c.Data) != "routes: {a: {}}\n" {
			t.Fatalf("the changed file should be sent: %+v %v", c, ok)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if c, ok := next(); !ok || c.Err == nil {
			t.Fatalf("a removed file should be sent as an error: %+v %v", c, ok)
		}
		write("routes: {a: {}}\n")
		if c, ok := next(); !ok || c.Err != nil || string(c.Data) != "routes: {a: {}}\n" {
			t.Fatalf("the file back after an error should be sent again: %+v %v", c, ok)
		}
		cancel()
		if _, open := <-ch; open {
			t.Fatal("the channel should close when ctx ends")
		}
	})
}

func TestResolveBackends(t *testing.T) {
	lookup := func(_ context.Context, network, host string) ([]netip.Addr, error) {
		switch host {
		case "nas.lan":
			return []netip.Addr{netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("fd00::9"), netip.MustParseAddr("::ffff:10.0.0.9")}, nil
		case "empty.lan":
			return nil, nil
		}
		return nil, errors.New("no such host")
	}
	got, err := ResolveBackends(t.Context(), lookup, []string{"nas.lan:5000", "10.0.0.1:80", "[fd00::1]:80"})
	want := []string{"10.0.0.1:80", "10.0.0.9:5000", "[fd00::1]:80", "[fd00::9]:5000"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("ResolveBackends = %q, %v; want %q", got, err, want)
	}
	for _, name := range []string{"gone.lan:80", "empty.lan:80"} {
		if got, err := ResolveBackends(t.Context(), lookup, []string{"10.0.0.1:80", name}); err == nil || !strings.Contains(err.Error(), strings.TrimSuffix(name, ":80")) {
			t.Errorf("%s: got %q, %v; want an error naming it", name, got, err)
		}
	}
}
