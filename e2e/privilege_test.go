package e2e

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/berthproxy/berth/internal/testenv"
)

// TestBerthNeedsOnlyItsListOfDockerCalls runs berth with no Docker socket:
// its only way to the engine is testenv.DockerProxy, which forwards the
// calls that README "Security" lists and refuses (and fails the test on)
// anything else. Routing a backend and issuing a certificate from Pebble
// exercises every call berth makes: list, inspect, events, exec of nginx -V
// and nginx -t, and HUP.
func TestBerthNeedsOnlyItsListOfDockerCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e with Pebble; not a -short test")
	}
	s, ca := newPebbleStack(t, func(t *testing.T, o stackOptions) *stack {
		o.dockerProxy = true
		return newStackWith(t, o)
	})
	roots := ca.IssuerRoots(t)
	s.run(backend{name: "plain", labels: []string{"proxy.host=plain.test"}})
	s.run(backend{name: "secure", labels: []string{"proxy.host=least.test", "proxy.acme=on"}})
	s.expectServed("plain.test", "/", "plain")
	testenv.Eventually(t, certDeadline, func() error {
		_, err := s.servedTLS("least.test", "secure", roots)
		return err
	})
	// The stream of events must survive too: a removal is seen at once.
	testenv.Docker(t, "rm", "-f", "berth-e2e-"+s.id+"-plain")
	s.expectNoVhost("plain.test")

	if refused := s.proxy.Refused(); len(refused) > 0 {
		t.Errorf("berth made calls outside its list: %v", refused)
	}
	used := endpoints(s.proxy.Requests())
	t.Logf("berth called, through the proxy: %s", strings.Join(used, ", "))
	for _, want := range []string{
		"GET /containers/json", "GET /containers/{id}/json", "GET /events",
		"POST /containers/{id}/exec", "POST /exec/{id}/start", "GET /exec/{id}/json", "POST /containers/{id}/kill",
	} {
		if !slices.Contains(used, want) {
			t.Errorf("berth never called %s: the test did not exercise it, or berth reached the engine another way", want)
		}
	}
}

var (
	idSegment = regexp.MustCompile(`^/(containers|exec)/[^/]+/`)
	query     = regexp.MustCompile(`\?.*$`)
)

// endpoints lists the distinct calls with IDs and queries generalised, in
// order of first use.
func endpoints(rs []testenv.ProxyRequest) []string {
	var out []string
	for _, r := range rs {
		p := query.ReplaceAllString(r.Path, "")
		p = idSegment.ReplaceAllString(p, "/$1/{id}/")
		if e := r.Method + " " + p; !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	return out
}
