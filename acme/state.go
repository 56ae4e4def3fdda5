package acme

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/internal/atomicfile"
)

// NameState is what berth remembers per hostname across restarts, so a
// restart never hammers the CA and an operator can see the last error.
type NameState struct {
	Failures    int       `json:"failures,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	// Revoked holds the name back after "berth revoke" until "berth renew --force".
	Revoked bool `json:"revoked,omitempty"`
	// LastServed is when a site last used the name (to the hour);
	// certificates no site has used for UnusedGrace are removed.
	LastServed time.Time `json:"last_served,omitempty"`
}

// IsZero reports whether there is nothing to remember about the name.
func (s NameState) IsZero() bool {
	return s.Failures == 0 && s.NextAttempt.IsZero() && s.LastError == "" && !s.Revoked && s.LastServed.IsZero()
}

// cleared is the state after a certificate was stored: no failure, but
// the last use (and a revocation, which only "renew --force" lifts) stay.
func cleared(s NameState) NameState {
	return NameState{Revoked: s.Revoked, LastServed: s.LastServed}
}

// nameBook is the one owner of <state>/names.json. The daemon and the CLI
// (a separate process) both change it only through update, which takes a
// flock on names.json.lock, rereads the file, changes only the named
// entries and writes atomically: so "berth revoke" is never undone by the
// daemon's next save, and concurrent writers never lose an update.
type nameBook struct {
	path string
	log  *logrus.Entry
}

func newNameBook(stateDir string, log *logrus.Entry) nameBook {
	return nameBook{path: filepath.Join(stateDir, "names.json"), log: orStandard(log)}
}

// fileStamp identifies one version of a file cheaply, to notice writes by
// another process without reading it.
type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	st := fileStamp{mod: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st
}

// load reads the file without the lock: writes are atomic renames, so a
// reader sees one whole version. A corrupt file is moved aside (under the
// lock, by update) and reads as empty: it is never a reason not to start.
func (b nameBook) load() (map[string]NameState, fileStamp, error) {
	names, stamp, err := b.read()
	if errors.Is(err, errCorrupt) {
		return b.update(nil, nil)
	}
	return names, stamp, err
}

var errCorrupt = errors.New("corrupt")

func (b nameBook) read() (map[string]NameState, fileStamp, error) {
	stamp := stampOf(b.path)
	raw, err := os.ReadFile(b.path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]NameState{}, stamp, nil
	}
	if err != nil {
		return nil, stamp, fmt.Errorf("read %s: %w", b.path, err)
	}
	m := map[string]NameState{}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, stamp, fmt.Errorf("%w: parse %s: %w", errCorrupt, b.path, err)
	}
	return m, stamp, nil
}

// update applies fn to each of names under the lock and returns the whole
// new state and its stamp. An entry fn leaves zero is removed; nothing is
// written when nothing changed.
func (b nameBook) update(names []string, fn func(NameState) NameState) (map[string]NameState, fileStamp, error) {
	if err := os.MkdirAll(filepath.Dir(b.path), 0o700); err != nil {
		return nil, fileStamp{}, fmt.Errorf("state dir: %w", err)
	}
	unlock, err := lockFile(b.path + ".lock")
	if err != nil {
		return nil, fileStamp{}, err
	}
	defer unlock()
	m, _, err := b.read()
	if errors.Is(err, errCorrupt) {
		setAside(b.log, b.path, err, "backoff, revocations and last-use times start afresh")
		m, err = map[string]NameState{}, nil
	}
	if err != nil {
		return nil, fileStamp{}, err
	}
	dirty := false
	for _, n := range names {
		old := m[n]
		st := fn(old)
		if st == old {
			continue
		}
		dirty = true
		if st.IsZero() {
			delete(m, n)
		} else {
			m[n] = st
		}
	}
	if dirty {
		raw, _ := json.MarshalIndent(m, "", "  ")
		if err := atomicfile.Write(b.path, raw, 0o600); err != nil {
			return nil, fileStamp{}, err
		}
	}
	return m, stampOf(b.path), nil
}

// lockFile takes an exclusive flock on path. Each call opens the file
// anew, so two callers in one process exclude each other as two processes
// do.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

// setAside moves a corrupt file out of the way, keeping it for an
// operator as <path>.corrupt-<UTC time>, and logs one error line saying
// what was wrong and what berth does instead. berth then carries on
// without the file: a damaged state file is never a reason not to start.
func setAside(log *logrus.Entry, path string, why error, instead string) {
	aside := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000Z")
	entry := orStandard(log).WithError(why).WithField("file", path)
	if err := os.Rename(path, aside); err != nil {
		entry = entry.WithField("move_error", err.Error())
	} else {
		entry = entry.WithField("moved_to", aside)
	}
	entry.Error("unreadable file moved aside; " + instead)
}

func orStandard(log *logrus.Entry) *logrus.Entry {
	if log == nil {
		return logrus.NewEntry(logrus.StandardLogger())
	}
	return log
}
