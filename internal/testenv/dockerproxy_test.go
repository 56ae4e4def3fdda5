package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestAllowedDockerCallIsBerthsListOnly(t *testing.T) {
	nginx := []string{"f00d", "web-nginx"}
	known := func(id string) bool { return id == "e1" }
	for _, c := range []struct {
		method, path, signal string
		allowed              bool
	}{
		{"HEAD", "/_ping", "", true},
		{"GET", "/_ping", "", true},
		{"GET", "/containers/json", "", true},
		{"GET", "/containers/anything/json", "", true},
		{"GET", "/events", "", true},
		{"POST", "/containers/f00d/exec", "", true},
		{"POST", "/containers/web-nginx/exec", "", true},
		{"POST", "/containers/f00d/kill", "HUP", true},
		{"POST", "/exec/e1/start", "", true},
		{"GET", "/exec/e1/json", "", true},

		{"POST", "/containers/create", "", false},
		{"POST", "/containers/other/exec", "", false},
		{"POST", "/containers/other/kill", "HUP", false},
		{"POST", "/containers/f00d/kill", "KILL", false},
		{"POST", "/containers/f00d/kill", "", false}, // the engine's default is KILL
		{"POST", "/containers/f00d/stop", "", false},
		{"DELETE", "/containers/f00d", "", false},
		{"POST", "/exec/e2/start", "", false},
		{"GET", "/exec/e2/json", "", false},
		{"POST", "/containers/f00d/json", "", false},
		{"GET", "/containers/f00d/archive", "", false},
		{"GET", "/images/json", "", false},
		{"POST", "/_ping", "", false},
		{"GET", "/info", "", false},
	} {
		why := AllowedDockerCall(c.method, c.path, c.signal, nginx, known)
		if (why == "") != c.allowed {
			t.Errorf("%s %s signal %q: refusal %q, want allowed=%v", c.method, c.path, c.signal, why, c.allowed)
		}
	}
}

func TestExecCommandAllowedOnlyRunsNginx(t *testing.T) {
	for body, allowed := range map[string]bool{
		`{"Cmd":["nginx","-t"],"AttachStdout":true}`: true,
		`{"Cmd":["nginx","-V"]}`:                     true,
		`{"Cmd":["sh","-c","nginx -t"]}`:             false,
		`{"Cmd":[]}`:                                 false,
		`{}`:                                         false,
		`not json`:                                   false,
	} {
		if why := ExecCommandAllowed([]byte(body)); (why == "") != allowed {
			t.Errorf("ExecCommandAllowed(%s) = %q, want allowed=%v", body, why, allowed)
		}
	}
}

func TestAPIPathDropsTheVersion(t *testing.T) {
	for in, want := range map[string]string{
		"/v1.41/containers/json": "/containers/json",
		"/v1.51/exec/x/start":    "/exec/x/start",
		"/_ping":                 "/_ping",
		"/containers/v1.41/json": "/containers/v1.41/json",
	} {
		if got := apiPath(in); got != want {
			t.Errorf("apiPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDockerProxyForwardsTheListAndRefusesTheRest drives the proxy with the
// docker CLI against the real engine: exec (hijacked) and HUP in nginx work,
// creating a container, exec of a shell and SIGKILL are refused, and a cut
// ends a running event stream.
func TestDockerProxyForwardsTheListAndRefusesTheRest(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Docker engine; not a -short test")
	}
	RequireDocker(t)
	img := NginxImage(t, "bookworm")
	name := fmt.Sprintf("berth-test-proxy-nginx-%d", os.Getpid())
	Docker(t, slices.Concat([]string{"run", "-d", "--name", name}, LabelArgs(), []string{img})...)
	t.Cleanup(func() { TryDocker("rm", "-f", name) })

	p := StartDockerProxy(t, name)
	host := "unix://" + filepath.Join(p.Dir, ProxySocketName)
	proxied := func(args ...string) (string, error) {
		return TryDocker(append([]string{"-H", host}, args...)...)
	}
	if out, err := proxied("exec", name, "nginx", "-t"); err != nil {
		t.Errorf("nginx -t through the proxy: %v %s", err, out)
	}
	if _, err := proxied("kill", "-s", "HUP", name); err != nil {
		t.Errorf("HUP through the proxy: %v", err)
	}
	if _, err := proxied("ps"); err != nil {
		t.Errorf("list through the proxy: %v", err)
	}
	if len(p.Refused()) != 0 {
		t.Fatalf("allowed calls were refused: %v", p.Refused())
	}

	for _, args := range [][]string{
		{"run", "--rm", img, "true"},
		{"exec", name, "sh", "-c", "true"},
		{"kill", name},
	} {
		if out, err := proxied(args...); err == nil || !strings.Contains(err.Error(), "refused by the test's Docker proxy") {
			t.Errorf("docker %v through the proxy = %q, %v; want it refused", args, out, err)
		}
	}
	if got := p.ExpectRefused(); len(got) != 3 {
		t.Errorf("refused %v, want the create, the exec and the kill", got)
	}
	if state := Docker(t, "inspect", "--format", "{{.State.Running}}", name); state != "true" {
		t.Errorf("nginx running = %s after a refused SIGKILL", state)
	}

	events := exec.Command("docker", "-H", host, "events")
	if err := events.Start(); err != nil {
		t.Fatal(err)
	}
	Eventually(t, dockerTimeout, func() error {
		if !slices.ContainsFunc(p.Requests(), func(r ProxyRequest) bool { return strings.HasPrefix(r.Path, "/events") }) {
			return errors.New("docker events has not subscribed yet")
		}
		return nil
	})
	if n := p.Cut(); n == 0 {
		t.Errorf("Cut closed no connection while docker events was streaming")
	}
	if err := events.Wait(); err == nil {
		t.Errorf("docker events ended without an error after the cut")
	}
}
