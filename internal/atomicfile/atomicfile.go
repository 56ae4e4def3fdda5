// Package atomicfile is the one way berth writes a file that another
// process (nginx, a berth CLI next to the daemon, berth itself after a
// crash) may read at any moment: the reader sees the old bytes or the new
// bytes, never a mix, and after Write returns the new bytes survive a power
// cut.
//
// It knows nothing of what the files mean; it must not grow options that
// make some writes less safe than others.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// TempSuffix ends every temporary file's name. Temporary names also start
// with a dot, so neither a "*.conf" include nor a listing of visible names
// ever picks one up.
const TempSuffix = ".tmp"

// Write replaces path with data, with exactly mode whatever the umask:
// temp file in the same directory, fsync, chmod, rename over path, fsync
// of the directory (so the rename itself is durable).
func Write(path string, data []byte, mode os.FileMode) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+strings.TrimPrefix(base, ".")+".*"+TempSuffix)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := fill(f, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// fill writes, chmods (CreateTemp's 0600 and the umask are not what the
// caller asked for), fsyncs and closes f.
func fill(f *os.File, data []byte, mode os.FileMode) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// SyncDir fsyncs a directory, making renames and links inside it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// leftoverAge: a temporary file older than this is no write in progress
// (a write takes milliseconds) but the remains of a process killed
// half-way, which only its directory's owner removes.
const leftoverAge = time.Minute

// RemoveLeftovers deletes the temporary files that Write left in dir when
// its process was killed between creating and renaming one, for target
// names starting with prefix. It reports what it removed. Only the one
// writer of dir calls it, at start.
func RemoveLeftovers(dir, prefix string, now time.Time) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, "."+prefix) || !strings.HasSuffix(name, TempSuffix) {
			continue
		}
		info, err := e.Info()
		if err != nil || now.Sub(info.ModTime()) < leftoverAge {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !os.IsNotExist(err) {
			return removed, err
		}
		removed = append(removed, name)
	}
	return removed, nil
}
