package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWriteSetsTheModeWhateverTheUmaskAndLeavesNoTempFile(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "berth-a.test.conf")
	for _, content := range []string{"first", "second"} {
		if err := Write(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("read %q, %v; want %q", got, err, content)
		}
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v under umask 077, want 0644", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("files left beside the target: %v", entries)
	}
}

func TestTempNamesNeverLookLikeTheTarget(t *testing.T) {
	dir := t.TempDir()
	// A directory in the way makes the rename fail after the temp file
	// exists: the temp file must go, and its name must never have been
	// one an include such as "*.conf" would read.
	path := filepath.Join(dir, "berth-x.conf")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("x"), 0o644); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Write over a directory: %v, want an error naming %s", err, path)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp file left after a failed rename: %v", entries)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "*.conf"))
	if len(matches) != 1 {
		t.Fatalf("glob *.conf = %v", matches)
	}
}

func TestRemoveLeftoversRemovesOnlyOldTempFilesOfThePrefix(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	old := now.Add(-time.Hour)
	files := map[string]time.Time{
		".berth-a.conf.123.tmp": old, // killed half-way: removed
		".berth-b.conf.456.tmp": now, // a write in progress: kept
		".other.conf.789.tmp":   old, // not ours: kept
		"berth-a.conf":          old,
	}
	for name, mod := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, mod, mod)
	}
	removed, err := RemoveLeftovers(dir, "berth-", now)
	if err != nil || len(removed) != 1 || removed[0] != ".berth-a.conf.123.tmp" {
		t.Fatalf("removed %v, %v", removed, err)
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 3 {
		t.Fatalf("%d files left, want 3", len(left))
	}
}
