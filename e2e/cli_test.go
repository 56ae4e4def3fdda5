package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/berthproxy/berth/internal/testenv"
)

// TestRenderPrintsTheFilesWithoutWriting runs "berth render" from the real
// image next to a live stack: it prints exactly the files the daemon wrote,
// and writes nothing.
func TestRenderPrintsTheFilesWithoutWriting(t *testing.T) {
	s := newStack(t)
	s.run(backend{name: "web", labels: []string{"proxy.host=render.test"}})
	s.expectServed("render.test", "/", "web")
	files, reloads := s.confFiles(), s.reloads()
	out := testenv.Docker(t, slices.Concat([]string{"run", "--rm"}, testenv.LabelArgs(), []string{
		"--network", "none", "-v", "/var/run/docker.sock:/var/run/docker.sock",
		"-e", "BERTH_NGINX_CONTAINER=" + s.nginx, "-e", "BERTH_ACME_CA=off", testenv.BerthImage(t), "render"})...)
	written, err := s.exec("cat " + confDir + "/berth-render.test.conf")
	if err != nil {
		t.Fatal(err)
	}
	header := "# ==> " + confDir + "/berth-render.test.conf <==\n"
	i := strings.Index(out, header)
	if i < 0 {
		t.Fatalf("render printed no %s:\n%s", header, out)
	}
	printed := out[i+len(header):]
	if j := strings.Index(printed, "\n# ==> "); j >= 0 {
		printed = printed[:j]
	}
	if strings.TrimSpace(printed) != strings.TrimSpace(written) {
		t.Fatalf("render printed:\n%s\nthe daemon wrote:\n%s", printed, written)
	}
	if got := s.confFiles(); got != files || s.reloads() != reloads {
		t.Fatalf("render changed files or reloaded nginx:\n%s\nnow:\n%s", files, got)
	}
}

// TestComposeQuickStart brings up the repository's docker-compose.yml as a
// user would (images swapped for the locally built ones) and curls the
// example service.
func TestComposeQuickStart(t *testing.T) {
	testenv.RequireDocker(t)
	compose := composeCommand(t)
	env := append(os.Environ(),
		"NGINX_IMAGE="+testenv.NginxImage(t, "bookworm"),
		"BERTH_IMAGE="+testenv.BerthImage(t),
		"WHOAMI_IMAGE="+testenv.BackendImage(t),
		"HTTP_PORT=127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)),
		"HTTPS_PORT=127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)),
	)
	httpPort := strings.TrimPrefix(env[len(env)-2], "HTTP_PORT=127.0.0.1:")
	project := "berth-e2e-compose-" + randomID()
	file := filepath.Join(testenv.RepoRoot(t), "docker-compose.yml")
	run := func(args ...string) string {
		cmd := exec.Command(compose[0], slices.Concat(compose[1:], []string{"-p", project, "-f", file}, args)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", strings.Join(compose, " "), strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(run("logs", "--no-color", "--tail", "50"))
		}
		run("down", "-v", "--timeout", "2")
	})
	run("up", "-d", "--no-build")
	client := newClient(requestTimeout)
	get := func(host string) (int, string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+httpPort+"/", nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		return resp.StatusCode, string(body), err
	}
	testenv.Eventually(t, converge, func() error {
		code, body, err := get("whoami.localhost")
		if err == nil && (code != 200 || !strings.Contains(body, "host=whoami.localhost")) {
			err = fmt.Errorf("GET whoami.localhost = %d %q", code, body)
		}
		return err
	})
	if code, _, err := get("nobody.test"); err != nil || code != 503 {
		t.Fatalf("unknown host = %d %v, want 503", code, err)
	}
}

// composeCommand finds Compose v2 ("docker compose") or v1 ("docker-compose").
func composeCommand(t *testing.T) []string {
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("neither docker compose nor docker-compose is installed")
	}
	t.Skip("neither docker compose nor docker-compose is installed")
	return nil
}
