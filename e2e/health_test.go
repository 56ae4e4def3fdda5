package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
)

// healthDeadline covers the backend image's health check: a 1 s interval
// and one retry give Docker's verdict within a few seconds.
const healthDeadline = 20 * time.Second

func TestUnhealthyReplicaGetsNoTraffic(t *testing.T) {
	s := newStack(t)
	good := s.run(backend{name: "good", labels: []string{"proxy.host=health.test"}, health: true})
	bad := s.run(backend{name: "bad", labels: []string{"proxy.host=health.test"}, health: true,
		env: []string{"HEALTHY=0"}})

	testenv.Eventually(t, healthDeadline, func() error {
		if g, b := s.health(good), s.health(bad); g != "healthy" || b != "unhealthy" {
			return fmt.Errorf("Docker reports good=%s bad=%s, want healthy and unhealthy", g, b)
		}
		return nil
	})
	testenv.Eventually(t, converge, func() error {
		seen, err := s.spread("health.test", 20)
		if err != nil {
			return err
		}
		if seen["bad"] > 0 || seen["good"] != 20 {
			return fmt.Errorf("20 requests reached %v, want only good", seen)
		}
		return nil
	})

	// A replica that was in rotation leaves it when it turns unhealthy.
	flaky := s.run(backend{name: "flaky", labels: []string{"proxy.host=health.test"}, health: true})
	testenv.Eventually(t, healthDeadline, func() error {
		if h := s.health(flaky); h != "healthy" {
			return fmt.Errorf("Docker reports flaky=%s", h)
		}
		seen, err := s.spread("health.test", 20)
		if err != nil {
			return err
		}
		if seen["flaky"] == 0 || seen["good"] == 0 || seen["bad"] > 0 {
			return fmt.Errorf("20 requests reached %v, want good and flaky", seen)
		}
		return nil
	})
	testenv.Docker(t, "exec", flaky, "/backend", "sicken")
	testenv.Eventually(t, healthDeadline, func() error {
		if h := s.health(flaky); h != "unhealthy" {
			return fmt.Errorf("Docker reports flaky=%s after backend sicken", h)
		}
		seen, err := s.spread("health.test", 20)
		if err != nil {
			return err
		}
		if seen["good"] != 20 {
			return fmt.Errorf("20 requests reached %v, want only good", seen)
		}
		return nil
	})
}

func TestNetworkDisconnectAndReconnect(t *testing.T) {
	s := newStack(t)
	web := s.run(backend{name: "web", labels: []string{"proxy.host=net.test"}})
	s.expectServed("net.test", "/", "web")

	start := time.Now()
	testenv.Docker(t, "network", "disconnect", s.network, web)
	t.Logf("docker network disconnect took %v", since(start))
	testenv.Eventually(t, converge, func() error {
		r, err := s.get("net.test", "/")
		if err != nil {
			return err
		}
		if !slices.Contains([]int{http.StatusBadGateway, http.StatusServiceUnavailable}, r.status) || r.backend() != "" {
			return fmt.Errorf("after disconnect GET net.test/ = %v, want 502 or 503", r)
		}
		return nil
	})
	t.Logf("502/503 after %v", since(start))

	testenv.Docker(t, "network", "connect", s.network, web)
	s.expectServed("net.test", "/", "web")
}

func TestUnreachableContainerIsIgnored(t *testing.T) {
	s := newStack(t)
	other := s.createNetwork("berth-e2e-" + s.id + "-other")
	away := s.run(backend{name: "away", labels: []string{"proxy.host=away.test"}, network: other})
	testenv.Eventually(t, converge, func() error {
		if st := testenv.Docker(t, "inspect", "--format", "{{.State.Status}}", away); st != "running" {
			return fmt.Errorf("%s is %s", away, st)
		}
		return nil
	})
	// The pass that serves near.test has seen away too.
	s.run(backend{name: "near", labels: []string{"proxy.host=near.test"}})
	s.expectServed("near.test", "/", "near")

	if err := s.noVhost("away.test"); err != nil {
		t.Errorf("a container on a network nginx is not on: %v", err)
	}
	testenv.Eventually(t, converge, func() error {
		_, err := s.logLineWith(away, other)
		return err
	})
}
