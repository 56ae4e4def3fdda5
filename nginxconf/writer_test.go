package nginxconf

import (
	"os"
	"path/filepath"
	"testing"
)

func write(t *testing.T, dir, name, data string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestApplyWritesChangedRemovesStaleAndLeavesOthersAlone(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "default.conf", "user's own")
	write(t, dir, "berth-old.test.conf", "stale")
	write(t, dir, "berth-same.test.conf", "same")
	before, _ := os.Stat(filepath.Join(dir, "berth-same.test.conf"))
	current, err := ReadOwned(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(current) != 2 {
		t.Fatalf("ReadOwned read %d files, want berth's 2 only", len(current))
	}
	plan, err := Apply(dir, current, Files{"berth-same.test.conf": []byte("same"), "berth-new.test.conf": []byte("new")})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Write) != 1 || plan.Write[0] != "berth-new.test.conf" || len(plan.Remove) != 1 || plan.Remove[0] != "berth-old.test.conf" {
		t.Fatalf("plan = %+v", plan)
	}
	if read(t, dir, "default.conf") != "user's own" {
		t.Fatal("a file berth does not own was changed")
	}
	if _, err := os.Stat(filepath.Join(dir, "berth-old.test.conf")); !os.IsNotExist(err) {
		t.Fatal("stale berth file not removed")
	}
	after, _ := os.Stat(filepath.Join(dir, "berth-same.test.conf"))
	if !after.ModTime().Equal(before.ModTime()) {
		t.Fatal("an unchanged file was rewritten")
	}
	if fi, _ := os.Stat(filepath.Join(dir, "berth-new.test.conf")); fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644 so nginx workers can read it", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if filepath.Ext(e.Name()) == ".tmp" {
			t.Fatalf("temp file %s left behind", e.Name())
		}
	}
}

func TestRollbackRestoresPreviousFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "berth-a.test.conf", "a1")
	previous, _ := ReadOwned(dir)
	if _, err := Apply(dir, previous, Files{"berth-a.test.conf": []byte("a2"), "berth-b.test.conf": []byte("b")}); err != nil {
		t.Fatal(err)
	}
	if err := Rollback(dir, previous); err != nil {
		t.Fatal(err)
	}
	now, _ := ReadOwned(dir)
	if len(now) != 1 || string(now["berth-a.test.conf"]) != "a1" {
		t.Fatalf("after rollback: %v", now)
	}
}

func TestDiffOfEqualFilesIsEmpty(t *testing.T) {
	f := Files{"berth-a.conf": []byte("x")}
	if !Diff(f, Files{"berth-a.conf": []byte("x")}).Empty() {
		t.Fatal("equal files produced a plan")
	}
}

func TestOwned(t *testing.T) {
	for name, want := range map[string]bool{
		"berth-a.test.conf": true, "berth-_default.conf": true, "default.conf": false,
		"berth-a.conf.bak": false, ".berth-123.tmp": false, "myberth-a.conf": false,
	} {
		if Owned(name) != want {
			t.Errorf("Owned(%q) = %v", name, !want)
		}
	}
}
