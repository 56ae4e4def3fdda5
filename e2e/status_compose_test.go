package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/berthproxy/berth/internal/testenv"
)

// TestComposeExecStatusAndHealth brings up the quick-start compose file
// and asks berth about itself the way the README says: "docker compose
// exec berth /berth status", and Docker's healthcheck from the file.
func TestComposeExecStatusAndHealth(t *testing.T) {
	testenv.RequireDocker(t)
	compose := composeCommand(t)
	env := append(os.Environ(),
		"NGINX_IMAGE="+testenv.NginxImage(t, "bookworm"),
		"BERTH_IMAGE="+testenv.BerthImage(t),
		"WHOAMI_IMAGE="+testenv.BackendImage(t),
		"HTTP_PORT=127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)),
		"HTTPS_PORT=127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)),
	)
	project := "berth-e2e-compose-" + randomID()
	file := filepath.Join(testenv.RepoRoot(t), "docker-compose.yml")
	try := func(args ...string) (string, error) {
		cmd := exec.Command(compose[0], slices.Concat(compose[1:], []string{"-p", project, "-f", file}, args)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("%s %s: %w\n%s", strings.Join(compose, " "), strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	run := func(args ...string) string {
		out, err := try(args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(run("logs", "--no-color", "--tail", "50"))
		}
		run("down", "-v", "--timeout", "2")
	})
	run("up", "-d", "--no-build")

	testenv.Eventually(t, converge, func() error {
		out, err := try("exec", "-T", "berth", "/berth", "status")
		if err == nil && !strings.Contains(out, "whoami.localhost") {
			err = fmt.Errorf("berth status does not show whoami.localhost:\n%s", out)
		}
		return err
	})
	out := run("exec", "-T", "berth", "/berth", "why", "whoami.localhost")
	if !strings.Contains(out, "Host whoami.localhost is served") || !strings.Contains(out, "Path / goes to ") {
		t.Errorf("berth why whoami.localhost:\n%s", out)
	}
	if out := run("exec", "-T", "berth", "/berth", "health"); strings.TrimSpace(out) != "ok" {
		t.Errorf("berth health = %q", out)
	}
	// The compose file's healthcheck probes every 30 s.
	testenv.Eventually(t, berthHealthDeadline, func() error {
		id := strings.TrimSpace(run("ps", "-q", "berth"))
		if h := strings.TrimSpace(testenv.Docker(t, "inspect", "--format", "{{.State.Health.Status}}", id)); h != "healthy" {
			return fmt.Errorf("berth's compose healthcheck reports %q, want healthy", h)
		}
		return nil
	})
}
