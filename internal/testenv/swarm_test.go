package testenv

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSwarmNodeImageHasDockerOnLegacyIPTables(t *testing.T) {
	RequireDocker(t)
	img := SwarmNodeImage(t)
	out := Docker(t, "run", "--rm", "--label", Label, "--entrypoint", "sh", img, "-c",
		"dockerd --version && iptables --version && ip6tables --version")
	if !strings.Contains(out, "Docker version 20.10") || strings.Count(out, "(legacy)") != 2 {
		t.Errorf("node image %s:\n%s", img, out)
	}
}

// TestSwarmThreeNodes forms a three-manager Swarm, runs the backend as a
// global service published in host mode, and reaches it on every node from
// the host; then it kills the leader and wants the other two to keep
// serving and to see it Down.
func TestSwarmThreeNodes(t *testing.T) {
	RequireDocker(t)
	backend := BackendImage(t)
	start := time.Now()
	SwarmNodeImage(t)
	t.Logf("node image ready after %v", time.Since(start).Round(100*time.Millisecond))
	s := StartSwarm(t, SwarmOptions{Nodes: 3, Publish: []int{8080}})
	if len(s.Nodes) != 3 {
		t.Fatalf("StartSwarm gave %d nodes", len(s.Nodes))
	}
	for _, n := range s.Nodes {
		if !n.Manager || n.ID == "" {
			t.Errorf("node %+v: want a manager with an ID", n)
		}
	}
	loadStart := time.Now()
	s.Load(t, backend)
	t.Logf("loaded the backend into 3 nodes in %v", time.Since(loadStart).Round(100*time.Millisecond))
	s.Load(t, backend) // every node has it now: nothing to do

	s.Docker(t, 1, "network", "create", "--driver", "overlay", "--attachable", "berth-test")
	s.Docker(t, 1, "service", "create", "--detach", "--name", "backend", "--mode", "global",
		"--endpoint-mode", "dnsrr", "--network", "berth-test",
		"--publish", "mode=host,target=80,published=8080", "--env", "NAME={{.Node.Hostname}}", backend)
	serveStart := time.Now()
	for i := range s.Nodes {
		Eventually(t, time.Minute, func() error { return answersAs(s.Addr(i, 8080), s.Nodes[i].Name) })
	}
	t.Logf("the global service answered on every node after %v", time.Since(serveStart).Round(100*time.Millisecond))

	// nginx on one node reaches the tasks on every node through the
	// overlay network, by the addresses Swarm's DNS gives.
	nginx := NginxImage(t, "bookworm")
	loadStart = time.Now()
	s.Load(t, nginx)
	t.Logf("loaded nginx into 3 nodes in %v", time.Since(loadStart).Round(100*time.Millisecond))
	probe := `for ip in $(getent ahostsv4 tasks.backend | cut -d' ' -f1 | sort -u); do curl -sS --max-time 2 http://$ip/; done`
	Eventually(t, 30*time.Second, func() error {
		out, err := s.TryDocker(2, "run", "--rm", "--network", "berth-test", nginx, "sh", "-c", probe)
		for _, n := range s.Nodes {
			if !strings.Contains(out, "name="+n.Name+" ") {
				return fmt.Errorf("tasks.backend from node 2 over the overlay: %q (%v), want an answer from %s", out, err, n.Name)
			}
		}
		return nil
	})

	leader := -1
	nodes, err := s.nodeList(1)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range s.Nodes {
		if nodes[n.Name].manager == "Leader" {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatalf("no leader in %+v", nodes)
	}
	killStart := time.Now()
	s.Kill(t, leader)
	var survivors []int
	for i := range s.Nodes {
		if i != leader {
			survivors = append(survivors, i)
		}
	}
	for _, i := range survivors {
		if err := answersAs(s.Addr(i, 8080), s.Nodes[i].Name); err != nil {
			t.Errorf("after the leader died: %v", err)
		}
	}
	var elected time.Duration // until a survivor answers node ls: a new leader
	Eventually(t, time.Minute, func() error {
		nodes, err := s.nodeList(survivors[0])
		if err != nil {
			return err
		}
		if elected == 0 {
			elected = time.Since(killStart)
		}
		if got := nodes[s.Nodes[leader].Name]; got.status != "Down" || got.manager != "Unreachable" {
			return fmt.Errorf("the killed leader is %+v, want Down and Unreachable", got)
		}
		return nil
	})
	t.Logf("the killed leader %s showed as Down after %v (a new leader after %v)", s.Nodes[leader].Name,
		time.Since(killStart).Round(100*time.Millisecond), elected.Round(100*time.Millisecond))
	s.Docker(t, survivors[1], "service", "ls") // the survivors keep a quorum
	t.Logf("whole test: %v", time.Since(start).Round(100*time.Millisecond))
}

// answersAs checks that the backend at addr answers as name.
func answersAs(addr, name string) error {
	req, err := http.NewRequest("GET", "http://"+addr+"/", nil)
	if err != nil {
		return err
	}
	_, body, err := fetchDirect(req)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(body, "name="+name+" ") {
		return fmt.Errorf("%s answered %q, want name=%s", addr, body, name)
	}
	return nil
}
