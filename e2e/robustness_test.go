package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
)

func TestBadLabelsHurtOnlyTheirContainer(t *testing.T) {
	s := newStack(t)
	s.run(backend{name: "good", labels: []string{"proxy.host=good.test"}})
	s.expectServed("good.test", "/", "good")

	w := s.watch("good.test", "good")
	bad := []struct {
		backend
		host  string // Host to check for "no vhost"
		label string // the label berth must name in its log
	}{
		{backend{name: "badhost", labels: []string{"proxy.host=bad_host!"}}, "bad_host!", "proxy.host"},
		{backend{name: "badport", labels: []string{"proxy.host=badport.test", "proxy.port=99999"}}, "badport.test", "proxy.port"},
		{backend{name: "badpath", labels: []string{"proxy.host=badpath.test", "proxy.path=/x; return 200 injected;"}}, "badpath.test", "proxy.path"},
	}
	var names []string
	for _, b := range bad {
		names = append(names, s.run(b.backend))
	}
	// A good change among the bad ones forces a reload with the bad
	// containers present: the rendered config must stay valid.
	s.run(backend{name: "later", labels: []string{"proxy.host=later.test"}})
	s.expectServed("later.test", "/", "later")
	for i, b := range bad {
		testenv.Eventually(t, converge, func() error {
			_, err := s.logLineWith(names[i], b.label)
			return err
		})
		if err := s.noVhost(b.host); err != nil {
			t.Errorf("%s (%s): %v", names[i], b.label, err)
		}
	}
	if _, err := s.servedBy("good.test", "/", "good"); err != nil {
		t.Error(err)
	}
	w.finish(t)

	out, _ := logs(s.berth)
	for i := range bad {
		t.Logf("berth logged %d lines naming %s", strings.Count(out, names[i]), names[i])
	}
}

func TestReloadKeepsTheNginxMaster(t *testing.T) {
	s := newStack(t)
	pid, started, workers := s.nginxProcesses()

	s.run(backend{name: "web", labels: []string{"proxy.host=pid.test"}})
	s.expectServed("pid.test", "/", "web")

	pid2, started2, workers2 := s.nginxProcesses()
	if pid2 != pid || started2 != started {
		t.Errorf("nginx master pid %s started %s, now pid %s started %s: nginx was restarted, not reloaded", pid, started, pid2, started2)
	}
	if !slices.ContainsFunc(workers2, func(w string) bool { return !slices.Contains(workers, w) }) {
		t.Errorf("workers %v before and %v after: no reload happened", workers, workers2)
	}
}

// nginxProcesses returns the master PID from nginx's pid file, the
// container's start time, and the PIDs of the worker processes.
func (s *stack) nginxProcesses() (pid, started string, workers []string) {
	s.t.Helper()
	pid, err := s.exec("cat /run/nginx.pid")
	if err != nil {
		s.t.Fatal(err)
	}
	started = testenv.Docker(s.t, "inspect", "--format", "{{.State.StartedAt}}", s.nginx)
	out, err := s.exec(`for p in /proc/[0-9]*; do grep -qs "^nginx: worker process" $p/cmdline && echo ${p#/proc/}; done; true`)
	if err != nil {
		s.t.Fatal(err)
	}
	return pid, started, strings.Fields(out)
}

func TestBerthRestartRewritesAndReloadsNothing(t *testing.T) {
	s := newStack(t)
	s.run(backend{name: "web", labels: []string{"proxy.host=restart.test"}})
	s.run(backend{name: "api", labels: []string{"proxy.host=restart.test", "proxy.path=/api"}})
	s.expectServed("restart.test", "/", "web")
	s.expectServed("restart.test", "/api/", "api")

	files, reloads := s.confFiles(), s.reloads()
	// Idle berth must not touch anything either; this also makes sure no
	// pass of the first berth process is still pending.
	unchanged := func() error {
		if got := s.confFiles(); got != files {
			return fmt.Errorf("files in %s changed:\n%s\nnow:\n%s", confDir, files, got)
		}
		if got := s.reloads(); got != reloads {
			return fmt.Errorf("nginx reloaded %d times, was %d", got, reloads)
		}
		_, err := s.servedBy("restart.test", "/", "web")
		return err
	}
	consistently(t, 2*time.Second, unchanged)

	// berth must exit on SIGTERM within a second: with --time 1 Docker
	// sends SIGKILL after one second, and the exit code would be 137.
	restarted := time.Now()
	testenv.Docker(t, "stop", "--time", "1", s.berth)
	if code := testenv.Docker(t, "inspect", "--format", "{{.State.ExitCode}}", s.berth); code != "0" {
		t.Errorf("berth exited with %s after SIGTERM, want 0 within a second", code)
	}
	consistently(t, time.Second, unchanged) // nginx keeps serving while berth is down
	testenv.Docker(t, "start", s.berth)
	testenv.Eventually(t, converge, func() error { return s.loggedSince(restarted) })
	consistently(t, 3*time.Second, unchanged)
}

// loggedSince is nil once berth has logged anything after t: the sign that
// a restarted berth is up.
func (s *stack) loggedSince(t time.Time) error {
	out, err := logs(s.berth, "--since", t.Format(time.RFC3339Nano))
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) == "" {
		return fmt.Errorf("berth has logged nothing since %s", t.Format("15:04:05.000"))
	}
	return nil
}

// confFiles describes every file in nginx's conf.d: name, inode, mtime with
// nanoseconds, size, and content hash. An atomic rewrite changes the inode
// even when the bytes are the same.
func (s *stack) confFiles() string {
	s.t.Helper()
	out, err := s.exec(`cd ` + confDir + ` && stat -c '%n %i %.9Y %s' * && sha256sum *`)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func TestNginxRestartBringsEverySiteBack(t *testing.T) {
	s := newStack(t)
	s.run(backend{name: "one", labels: []string{"proxy.host=one.test"}})
	s.run(backend{name: "two", labels: []string{"proxy.host=two.test", "proxy.path=/two"}})
	s.expectServed("one.test", "/", "one")
	s.expectServed("two.test", "/two/x", "two")

	testenv.Docker(t, "restart", s.nginx)
	testenv.Eventually(t, converge, func() error {
		// The published port can change when the container restarts.
		if err := s.tryRefreshPort(); err != nil {
			return err
		}
		if _, err := s.servedBy("one.test", "/", "one"); err != nil {
			return err
		}
		if _, err := s.servedBy("two.test", "/two/x", "two"); err != nil {
			return err
		}
		return s.noVhost("unknown.test")
	})
}
