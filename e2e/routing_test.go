package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/berthproxy/berth/internal/testenv"
)

func TestLabelledContainerIsServedUntilRemoved(t *testing.T) {
	s := newStack(t)
	web := s.run(backend{name: "web", labels: []string{"proxy.host=web.test"}})

	r := s.expectServed("web.test", "/hello", "web")
	if !strings.Contains(r.body, "host=web.test path=/hello") {
		t.Errorf("the backend saw %q, want the client's Host web.test and path /hello", r.body)
	}
	if err := s.noVhost("unknown.test"); err != nil {
		t.Errorf("unknown host: %v", err)
	}

	s.rm(web)
	s.expectNoVhost("web.test")
}

func TestOneContainerServesSeveralHosts(t *testing.T) {
	s := newStack(t)
	s.run(backend{name: "multi", labels: []string{"proxy.host=a.test,b.test"}})

	s.expectServed("a.test", "/", "multi")
	s.expectServed("b.test", "/", "multi")
}

func TestPortSelection(t *testing.T) {
	s := newStack(t)
	// Started first, so that the pass that serves the last good container
	// below has certainly seen it.
	ambiguous := s.run(backend{name: "ambiguous", labels: []string{"proxy.host=ambiguous.test"},
		env: []string{"PORTS=8080,9090"}, expose: []string{"8080", "9090"}})
	testenv.Eventually(t, converge, func() error {
		if st := testenv.Docker(t, "inspect", "--format", "{{.State.Status}}", ambiguous); st != "running" {
			return fmt.Errorf("%s is %s", ambiguous, st)
		}
		return nil
	})
	s.run(backend{name: "only", labels: []string{"proxy.host=only.test"},
		env: []string{"PORTS=8080"}, expose: []string{"8080"}})
	s.run(backend{name: "chosen", labels: []string{"proxy.host=chosen.test", "proxy.port=9090"},
		env: []string{"PORTS=8080,9090"}, expose: []string{"8080", "9090"}})
	s.run(backend{name: "eighty", labels: []string{"proxy.host=eighty.test"},
		env: []string{"PORTS=80,8080"}, expose: []string{"80", "8080"}})

	for _, c := range []struct{ host, name, port, why string }{
		{"only.test", "only", "8080", "the only exposed port"},
		{"chosen.test", "chosen", "9090", "proxy.port"},
		{"eighty.test", "eighty", "80", "80 among several exposed ports"},
	} {
		r := s.expectServed(c.host, "/", c.name)
		if !strings.Contains(r.body, "port="+c.port+" ") {
			t.Errorf("%s: %v, want port %s (%s)", c.host, r, c.port, c.why)
		}
	}
	if err := s.noVhost("ambiguous.test"); err != nil {
		t.Errorf("several exposed ports, none 80, no proxy.port: %v", err)
	}
	if _, err := s.logLineWith(ambiguous); err != nil {
		t.Errorf("berth did not log why it skipped %s: %v", ambiguous, err)
	}
}

func TestPathRouting(t *testing.T) {
	s := newStack(t)
	s.run(backend{name: "api", labels: []string{"proxy.host=paths.test", "proxy.path=/api"}})
	s.run(backend{name: "site", labels: []string{"proxy.host=paths.test", "proxy.path=/"}})

	s.expectServed("paths.test", "/api/x", "api")
	s.expectServed("paths.test", "/other", "site")
	s.expectServed("paths.test", "/", "site")
}

func TestReplicasAreLoadBalanced(t *testing.T) {
	s := newStack(t)
	s.run(backend{name: "r1", labels: []string{"proxy.host=lb.test"}})
	s.run(backend{name: "r2", labels: []string{"proxy.host=lb.test"}})

	testenv.Eventually(t, converge, func() error {
		seen, err := s.spread("lb.test", 20)
		if err != nil {
			return err
		}
		if seen["r1"] == 0 || seen["r2"] == 0 {
			return fmt.Errorf("20 requests reached %v, want both r1 and r2", seen)
		}
		return nil
	})
}

// spread sends n requests to host and counts the answers per backend.
func (s *stack) spread(host string, n int) (map[string]int, error) {
	seen := map[string]int{}
	for range n {
		r, err := s.get(host, "/")
		if err != nil {
			return seen, err
		}
		if r.status != 200 {
			return seen, fmt.Errorf("GET %s/ = %v", host, r)
		}
		seen[r.backend()]++
	}
	return seen, nil
}

func TestACMEChallengeIsServedFromWebroot(t *testing.T) {
	s := newStack(t)
	s.run(backend{name: "web", labels: []string{"proxy.host=challenge.test"}})
	s.expectServed("challenge.test", "/", "web")

	const token = "e2e-token-4f0c"
	if _, err := s.exec("mkdir -p " + webrootDir + "/.well-known/acme-challenge && printf key-authz > " +
		webrootDir + "/.well-known/acme-challenge/" + token); err != nil {
		t.Fatal(err)
	}
	r, err := s.get("challenge.test", "/.well-known/acme-challenge/"+token)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != 200 || r.body != "key-authz" {
		t.Errorf("challenge path of a managed host = %v, want 200 %q from the webroot", r, "key-authz")
	}
}

func TestServesWithNewestNginx(t *testing.T) {
	s := newStackWith(t, stackOptions{suite: "sid"})
	s.run(backend{name: "web", labels: []string{"proxy.host=web.test"}})
	s.run(backend{name: "api", labels: []string{"proxy.host=web.test", "proxy.path=/api"}})

	s.expectServed("web.test", "/", "web")
	s.expectServed("web.test", "/api/v1", "api")
	if err := s.noVhost("unknown.test"); err != nil {
		t.Error(err)
	}
}
