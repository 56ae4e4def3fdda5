package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// pebbleBinaries returns a directory holding static pebble and
// pebble-challtestsrv binaries of pebbleVersion, building them with
// `go install module@version` (so that Pebble never enters go.mod) into a
// cache directory keyed by the Pebble and Go versions.
func pebbleBinaries(t testing.TB) string {
	t.Helper()
	goVersion, err := goEnv("GOVERSION")
	if err != nil {
		t.Fatal(err)
	}
	key := hashOf(pebbleVersion, goVersion, runtime.GOOS, runtime.GOARCH, "CGO_ENABLED=0 -trimpath")
	return memoImage(t, "pebble-binaries-"+key, func(logf logFunc) (string, error) {
		dir := filepath.Join(binCacheDir(), "pebble-"+pebbleVersion+"-"+key)
		if havePebble(dir) { // no lock needed: the directory appears by rename
			return dir, nil
		}
		return dir, withBuildLock(logf, func() error { return buildPebble(logf, dir) })
	})
}

var pebbleCommands = []string{"pebble", "pebble-challtestsrv"}

func havePebble(dir string) bool {
	for _, c := range pebbleCommands {
		if fi, err := os.Stat(filepath.Join(dir, c)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

func buildPebble(logf logFunc, dir string) error {
	if havePebble(dir) {
		return nil
	}
	partial := dir + ".partial"
	if err := os.RemoveAll(partial); err != nil {
		return err
	}
	if err := os.MkdirAll(partial, 0o755); err != nil {
		return err
	}
	start := time.Now()
	logf("building Pebble %s from the Go module proxy (once per machine)", pebbleVersion)
	args := []string{"install", "-trimpath", "-ldflags=-X main.version=" + pebbleVersion}
	for _, c := range pebbleCommands {
		args = append(args, pebbleModule+"/cmd/"+c+"@"+pebbleVersion)
	}
	env := []string{"GOBIN=" + partial, "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off"}
	if err := run(logf, nil, os.TempDir(), env, goTool(), args...); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Rename(partial, dir); err != nil {
		return err
	}
	logf("built Pebble %s in %v", pebbleVersion, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// binCacheDir is cacheDir when this process may write there (it is under
// /var/cache, which needs root), else the user's cache directory: the
// loopback Pebble needs nothing else that root would give.
func binCacheDir() string {
	dir := cacheDir()
	if err := os.MkdirAll(dir, 0o755); err == nil && syscall.Access(dir, 2 /* W_OK */) == nil {
		return dir
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "berth-testenv")
	}
	return filepath.Join(os.TempDir(), "berth-testenv-cache")
}
