package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// OwnerLabelKey names the label that records which test process created an
// object, so that CleanupLeftovers can tell a leftover from an object of a
// test binary that is still running (go test runs packages in parallel, and
// they share one engine).
const OwnerLabelKey = "berth.test.pid"

// A live test process holds an exclusive flock on <registryDir>/proc-<pid>.lock
// for its whole life; the kernel drops the lock when the process dies, however
// it dies. A lock that can be taken therefore belongs to a dead process.
var registry struct {
	once sync.Once
	file *os.File // kept open (and referenced) for the life of the process
	err  error
}

func registryDir() string { return filepath.Join(os.TempDir(), "berth-testenv") }

func registerProcess() error {
	registry.once.Do(func() {
		if err := os.MkdirAll(registryDir(), 0o777); err != nil {
			registry.err = err
			return
		}
		path := filepath.Join(registryDir(), fmt.Sprintf("proc-%d.lock", os.Getpid()))
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			registry.err = err
			return
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			registry.err = fmt.Errorf("lock %s: %w", path, err)
			return
		}
		registry.file = f
	})
	return registry.err
}

// LabelArgs returns the docker CLI arguments that put Label and the owner
// label of this process on a container, network or volume being created.
func LabelArgs() []string {
	_ = registerProcess() // RequireDocker reports a failure; unowned objects are only cleaned up later
	return []string{"--label", Label, "--label", fmt.Sprintf("%s=%d", OwnerLabelKey, os.Getpid())}
}

// liveOwners returns the PIDs of the other test processes that are running
// now, and forgets the registrations of dead ones.
func liveOwners() (map[string]bool, error) {
	entries, err := os.ReadDir(registryDir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	self := strconv.Itoa(os.Getpid())
	live := map[string]bool{}
	for _, e := range entries {
		pid, ok := strings.CutPrefix(strings.TrimSuffix(e.Name(), ".lock"), "proc-")
		if !ok || pid == self {
			continue
		}
		path := filepath.Join(registryDir(), e.Name())
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			continue // removed meanwhile by another cleaner
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			live[pid] = true
		} else {
			os.Remove(path)
		}
		f.Close()
	}
	return live, nil
}

// CleanupLeftovers removes the containers, then the networks and volumes,
// that carry Label and were left by an earlier, interrupted test run. Objects
// whose owner process is still running are kept; objects without an owner
// label are removed only when no other test process is running.
func CleanupLeftovers(t testing.TB) {
	t.Helper()
	RequireDocker(t)
	live, err := liveOwners()
	if err != nil {
		t.Fatalf("list live test processes: %v", err)
	}
	self := strconv.Itoa(os.Getpid())
	stale := func(owner string) bool {
		if owner == "" || owner == "<no value>" {
			return len(live) == 0
		}
		return owner != self && !live[owner]
	}
	kinds := []struct {
		name string
		list []string
		rm   []string
	}{
		{"containers", []string{"ps", "-a"}, []string{"rm", "-f", "-v"}},
		{"networks", []string{"network", "ls"}, []string{"network", "rm"}},
		{"volumes", []string{"volume", "ls"}, []string{"volume", "rm", "-f"}},
	}
	for _, k := range kinds {
		args := append(k.list, "--filter", "label="+Label,
			"--format", `{{.Name}}`+"\t"+`{{.Label "`+OwnerLabelKey+`"}}`)
		if k.name == "containers" {
			args[len(args)-1] = `{{.ID}}` + "\t" + `{{.Label "` + OwnerLabelKey + `"}}`
		}
		out := Docker(t, args...)
		var ids []string
		for _, line := range strings.Split(out, "\n") {
			id, owner, _ := strings.Cut(line, "\t")
			if id != "" && stale(owner) {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			continue
		}
		if _, err := TryDocker(append(k.rm, ids...)...); err != nil {
			t.Logf("remove leftover %s: %v", k.name, err)
			continue
		}
		t.Logf("removed %d leftover %s of an earlier test run", len(ids), k.name)
	}
}
