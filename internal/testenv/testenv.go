// Package testenv holds the helpers berth's integration and e2e tests share:
// gating on a Docker engine or a host nginx, running the docker CLI, polling
// for a condition, building the local images the tests need (the machines
// that run them have no image registry), and removing what an interrupted
// run left behind.
//
// It is imported only from _test.go files. It must not know about berth's
// packages: it builds the repository's Dockerfile as a black box.
//
// Everything a test creates on the engine carries the label Label (use
// LabelArgs, which also records the owning test process, so that
// CleanupLeftovers in one test binary never removes what another test binary
// that is still running created).
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Label is put on every container, network and volume tests create.
const Label = "berth.test=1"

// pollInterval is how often Eventually re-checks: short enough that a test
// waits at most one nginx reload longer than needed, long enough not to
// load two cores.
const pollInterval = 20 * time.Millisecond

// dockerTimeout bounds one docker CLI call; the slowest ordinary call is a
// `docker restart` that waits out a 10 s stop timeout.
const dockerTimeout = 3 * time.Minute

// unavailable skips the test, or fails it under CI=true, where a missing
// dependency is a broken machine rather than a developer laptop.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true, so this is an error rather than a skip)")
	}
	t.Skip(msg)
}

// SkipShort skips an integration or e2e test under `go test -short`, which
// runs only the fast unit layer (CI and the README's command run all).
func SkipShort(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: " + why)
	}
}

var dockerCheck struct {
	once sync.Once
	err  error
}

// RequireDocker skips the test unless `docker info` works; under CI=true it
// fails the test instead. It also registers the test process as a live owner
// of labelled objects (see CleanupLeftovers).
func RequireDocker(t testing.TB) {
	t.Helper()
	SkipShort(t, "needs the Docker engine")
	dockerCheck.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput()
		if err != nil {
			dockerCheck.err = fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
		}
	})
	if dockerCheck.err != nil {
		unavailable(t, "Docker engine is missing or unreachable (docker info: %v)", dockerCheck.err)
	}
	if err := registerProcess(); err != nil {
		t.Fatalf("register test process: %v", err)
	}
}

// RequireNginx returns the path of a host nginx binary, skipping the test if
// there is none (failing it under CI=true).
func RequireNginx(t testing.TB) string {
	t.Helper()
	SkipShort(t, "runs a real nginx")
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	const fallback = "/usr/sbin/nginx" // not on a non-root user's PATH on Debian
	if fi, err := os.Stat(fallback); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return fallback
	}
	unavailable(t, "nginx binary is missing (install nginx-light)")
	return ""
}

// Docker runs the docker CLI with args and returns its trimmed stdout. It
// fails the test with stderr if the command fails.
func Docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := TryDocker(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TryDocker is Docker for calls whose failure the caller handles: the error
// names the command and carries its stderr.
func TryDocker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()),
			fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// RepoRoot returns the repository root: the nearest directory at or above
// the working directory that holds go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory")
		}
		dir = parent
	}
}

// Eventually calls cond every 20 ms until it returns nil, and fails the test
// with cond's last error if that has not happened within timeout. cond runs
// at least once.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %v", timeout, err)
		}
		<-ticker.C
	}
}
