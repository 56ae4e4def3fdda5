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
