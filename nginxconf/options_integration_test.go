package nginxconf

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// What nginx answers for the per-service options and for berth's error
// statuses, on a loopback nginx: the fast layer under the e2e tests, which
// prove the same through the Docker engine.

// slowBackend answers after delay, so a read timeout can fire.
func slowBackend(t *testing.T, delay time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
		}
		w.Write([]byte("slow"))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// refusedAddr is a loopback address nothing listens on.
func refusedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestBerthsErrorPagesNameNoSoftware(t *testing.T) {
	lb := newLoopback(t)
	slow := slowBackend(t, 5*time.Second)
	lb.start(t, Config{Sites: []Site{
		{Host: "refused.test", Locations: []Location{{Path: "/", Backends: []string{refusedAddr(t)}}}},
		{Host: "down.test", Locations: []Location{{Path: "/"}}},
		{Host: "slow.test", Locations: []Location{{Path: "/", Backends: []string{slow}, ReadTimeout: "1s"}}},
		{Host: "only.test", HTTPS: HTTPSOnly, TLS: certFor(t, lb.prefix, "only.test").files, Locations: []Location{{Path: "/", Backends: []string{slow}}}},
	}})
	client := newClient(nil)
	for _, c := range []struct {
		host  string
		code  int
		title string
	}{
		{"refused.test", 502, "502 Bad Gateway"},
		{"down.test", 503, "503 Service Unavailable"},
		{"unknown.test", 503, "503 Service Unavailable"}, // the default server
		{"only.test", 503, "503 Service Unavailable"},    // https=only on port 80
		{"slow.test", 504, "504 Gateway Timeout"},
	} {
		status, body, hdr := get(t, client, lb.httpURL(), c.host, "/", nil)
		if status != c.code || !strings.Contains(body, "<title>"+c.title+"</title>") || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
			t.Errorf("%s: got %d %q (%s), want %d with berth's page %q", c.host, status, body, hdr.Get("Content-Type"), c.code, c.title)
		}
		if strings.Contains(strings.ToLower(body), "nginx") || strings.ContainsAny(hdr.Get("Server"), "0123456789") {
			t.Errorf("%s: the answer names the software or its version: Server %q, body %q", c.host, hdr.Get("Server"), body)
		}
	}
}

func TestOptionsOnLoopback(t *testing.T) {
	lb := newLoopback(t)
	api := echoBackend(t, "api")
	// {SHA} of "secret".
	login := "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="
	lb.start(t, Config{Sites: []Site{
		{Host: "strip.test", Locations: []Location{{Path: "/api", Backends: []string{api}, StripPath: true}}},
		{Host: "auth.test", Locations: []Location{{Path: "/", Backends: []string{api}, BasicAuth: []string{login}}}},
		{Host: "deny.test", Locations: []Location{{Path: "/", Backends: []string{api}, Allow: []string{"10.0.0.0/8", "2001:db8::/32"}}}},
		{Host: "allow.test", Locations: []Location{{Path: "/", Backends: []string{api}, Allow: []string{"127.0.0.1"}}}},
		{Host: "www.apex.test", RedirectTo: "apex.test"},
	}})
	client := newClient(nil)
	for path, want := range map[string]string{"/api": "/", "/api/x?q=1": "/x?q=1", "/api/": "/"} {
		if e := mustEcho(t, client, lb.httpURL(), "strip.test", path, nil); e.URI != want {
			t.Errorf("strip-path: %s reached the backend as %q, want %q", path, e.URI, want)
		}
	}
	if status, _, hdr := get(t, client, lb.httpURL(), "auth.test", "/", nil); status != 401 || hdr.Get("WWW-Authenticate") == "" {
		t.Errorf("basic auth without a login: %d, WWW-Authenticate %q; want 401 with a challenge", status, hdr.Get("WWW-Authenticate"))
	}
	req, _ := http.NewRequest(http.MethodGet, lb.httpURL()+"/", nil)
	req.Host = "auth.test"
	req.SetBasicAuth("alice", "secret")
	if resp, err := client.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("basic auth with the right login: %v %v, want 200", resp, err)
	} else {
		resp.Body.Close()
	}
	for host, want := range map[string]int{"deny.test": 403, "allow.test": 200} {
		if status, _, _ := get(t, client, lb.httpURL(), host, "/", nil); status != want {
			t.Errorf("%s from 127.0.0.1: %d, want %d", host, status, want)
		}
	}
	// The challenge path answers whatever the access rules say.
	writeFile(t, lb.prefix+"/webroot/.well-known/acme-challenge/tok", "tok.key", 0o644)
	for _, host := range []string{"auth.test", "deny.test"} {
		if status, body, _ := get(t, client, lb.httpURL(), host, "/.well-known/acme-challenge/tok", nil); status != 200 || body != "tok.key" {
			t.Errorf("%s challenge path: %d %q, want the token", host, status, body)
		}
	}
	if status, _, hdr := get(t, client, lb.httpURL(), "www.apex.test", "/p?q=1", nil); status != 301 || hdr.Get("Location") != "http://apex.test/p?q=1" {
		t.Errorf("redirect-from: %d to %q, want 301 to http://apex.test/p?q=1", status, hdr.Get("Location"))
	}
}
