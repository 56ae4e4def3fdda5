package nginxconf

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berthproxy/berth/internal/atomicfile"
)

// Owned reports whether name is one of berth's files. berth never reads,
// writes or deletes anything else in the conf dir.
func Owned(name string) bool {
	return strings.HasPrefix(name, FilePrefix) && (strings.HasSuffix(name, FileSuffix) || strings.HasSuffix(name, HtpasswdSuffix) || strings.HasSuffix(name, IncludeSuffix)) &&
		!strings.ContainsRune(name, '/')
}

// ReadOwned returns berth's files currently in dir.
func ReadOwned(dir string) (Files, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read conf dir: %w", err)
	}
	files := Files{}
	for _, e := range entries {
		if !e.Type().IsRegular() || !Owned(e.Name()) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", e.Name(), err)
		}
		files[e.Name()] = data
	}
	return files, nil
}

// Plan is the difference between the files on disk and the desired files.
type Plan struct {
	Write  []string // new or changed, sorted
	Remove []string // owned files no longer wanted, sorted
}

// Empty reports whether nothing needs to change.
func (p Plan) Empty() bool { return len(p.Write) == 0 && len(p.Remove) == 0 }

// Diff compares current with desired. Pure.
func Diff(current, desired Files) Plan {
	var p Plan
	for name, data := range desired {
		if old, ok := current[name]; !ok || !bytes.Equal(old, data) {
			p.Write = append(p.Write, name)
		}
	}
	for name := range current {
		if _, ok := desired[name]; !ok {
			p.Remove = append(p.Remove, name)
		}
	}
	slices.Sort(p.Write)
	slices.Sort(p.Remove)
	return p
}

// Apply makes dir hold exactly desired among berth's files, writing each
// changed file atomically (temp file + rename, so nginx never reads half a
// file), and returns the previous state for Rollback. previous must be what
// ReadOwned returned for dir.
func Apply(dir string, previous, desired Files) (Plan, error) {
	p := Diff(previous, desired)
	for _, name := range p.Write {
		if err := writeAtomic(dir, name, desired[name]); err != nil {
			return p, err
		}
	}
	for _, name := range p.Remove {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return p, fmt.Errorf("remove %s: %w", name, err)
		}
	}
	return p, nil
}

// Rollback restores dir to previous after a failed Apply or validation.
func Rollback(dir string, previous Files) error {
	current, err := ReadOwned(dir)
	if err != nil {
		return err
	}
	_, err = Apply(dir, current, previous)
	return err
}

// writeAtomic writes through a temp file whose name nginx's "*.conf" include
// never matches (atomicfile's names start with a dot and end in ".tmp"),
// readable by nginx workers whatever user they run as.
func writeAtomic(dir, name string, data []byte) error {
	return atomicfile.Write(filepath.Join(dir, name), data, 0o644)
}

// RemoveLeftovers deletes the temporary files of berth's own files that a
// berth killed half-way through a write left in dir (nginx never reads
// them, but nothing else would ever remove them). Called once at start by
// the conf dir's one writer.
func RemoveLeftovers(dir string, now time.Time) ([]string, error) {
	return atomicfile.RemoveLeftovers(dir, FilePrefix, now)
}
