package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NginxBuild runs command (an nginx -V, locally or in a container) and
// returns its output, which names the version and the compiled modules.
func NginxBuild(t testing.TB, command ...string) string {
	t.Helper()
	out, err := exec.Command(command[0], command[1:]...).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("nginx version:")) {
		t.Fatalf("%s: %v\n%s", strings.Join(command, " "), err, out)
	}
	return string(out)
}

// NginxPrefix lays out a fresh nginx prefix: a main nginx.conf like the
// official image's (conf.d included inside http, default_type
// application/octet-stream) with every path inside the prefix, and an
// empty conf.d. build is NginxBuild's output, to leave out temp paths of
// modules the build lacks (nginx-light).
func NginxPrefix(t testing.TB, build string) string {
	t.Helper()
	prefix := t.TempDir()
	// A root master runs workers as nobody; they must read the prefix.
	for _, d := range []string{filepath.Dir(prefix), prefix} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tempPaths := []string{"client_body", "proxy"}
	for _, module := range []string{"fastcgi", "uwsgi", "scgi"} {
		if !strings.Contains(build, "--without-http_"+module+"_module") {
			tempPaths = append(tempPaths, module)
		}
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "worker_processes 1;\npid %s/nginx.pid;\nerror_log stderr notice;\n", prefix)
	conf.WriteString("events {\n    worker_connections 256;\n}\nhttp {\n    default_type application/octet-stream;\n    access_log off;\n")
	for _, p := range tempPaths {
		fmt.Fprintf(&conf, "    %s_temp_path %s/%s_temp;\n", p, prefix, p)
	}
	fmt.Fprintf(&conf, "    include %s/conf.d/*.conf;\n}\n", prefix)
	if err := os.WriteFile(filepath.Join(prefix, "nginx.conf"), []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(prefix, "conf.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	return prefix
}

// NginxT runs "nginx -t" on the prefix with the given nginx command (a
// binary, or a docker run … nginx) and returns its output and error.
func NginxT(prefix string, nginx ...string) (string, error) {
	args := append(slices.Clone(nginx[1:]), "-t", "-e", "stderr", "-p", prefix, "-c", filepath.Join(prefix, "nginx.conf"))
	out, err := exec.Command(nginx[0], args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w", strings.Join(append(nginx[:1:1], args...), " "), err)
	}
	return string(out), nil
}

// StartNginx runs nginx in the foreground on the prefix, stops it in
// t.Cleanup, and waits until ready returns nil.
func StartNginx(t testing.TB, bin, prefix string, ready func() error) {
	t.Helper()
	if out, err := NginxT(prefix, bin); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	logPath := filepath.Join(prefix, "nginx.stderr")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "-e", "stderr", "-p", prefix, "-c", filepath.Join(prefix, "nginx.conf"), "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // workers share the group, so cleanup reaches them
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	log := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("nginx ignored SIGTERM for 10s; killing it\n%s", log())
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // any worker the master left behind
		<-exited
	})
	Eventually(t, 15*time.Second, func() error {
		select {
		case <-exited:
			t.Fatalf("nginx exited during startup: %v\n%s", cmd.ProcessState, log())
		default:
		}
		return ready()
	})
}

// ReloadNginx sends SIGHUP to the nginx whose pid file is in prefix.
func ReloadNginx(t testing.TB, prefix string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(prefix, "nginx.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(string(raw), &pid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ports, err := freeLoopbackPorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}
