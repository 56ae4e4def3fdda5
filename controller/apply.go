package controller

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/nginxconf"
)

// markerFile in the conf dir says "berth wrote files that nginx may not be
// running yet". It is created before the first write of a change and
// removed once nginx took the reload signal, so a berth killed in between
// validates and reloads at its next start, and a restart with nothing
// pending reloads nothing. nginx's "*.conf" include never matches it.
const markerFile = nginxconf.FilePrefix + "unconfirmed"

func markerExists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, markerFile))
	return err == nil
}

// setMarker creates the (empty) marker; creating an empty file is atomic.
func setMarker(dir string) error {
	return os.WriteFile(filepath.Join(dir, markerFile), nil, 0o644)
}

func clearMarker(dir string) error {
	if err := os.Remove(filepath.Join(dir, markerFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Applier is the one writer of berth's files in one conf dir, and the only
// code that validates and signals the nginx reading them: it writes a plan
// atomically behind the marker file, runs nginx -t, quarantines a host
// file nginx rejects, rolls back, and sends SIGHUP. The local loop and the
// Swarm agent both apply through it, so a node behaves exactly like a
// single host. Not safe for concurrent use: its owner serialises calls.
type Applier struct {
	dir    string
	engine Engine // only Exec and Signal are used
	// quarantine: file → hash of the bytes nginx -t rejected.
	quarantine map[string][32]byte
	// unconfirmed: the files on disk may not be what nginx runs (a failed
	// SIGHUP, or berth killed between write and reload, seen as the marker
	// file at start). The next apply validates and reloads even without a
	// change.
	unconfirmed bool
}

// NewApplier returns the applier of dir. A marker left by an interrupted
// apply makes the first apply validate and reload.
func NewApplier(dir string, engine Engine) *Applier {
	return &Applier{dir: dir, engine: engine, quarantine: map[string][32]byte{}, unconfirmed: markerExists(dir)}
}

// apply writes the plan, validates it in the nginx container and signals a
// reload. On a rejected config it finds the host file at fault, holds it
// back and restores the previous files. With an empty plan it validates and
// reloads what is on disk (the files were never confirmed live).
func (a *Applier) apply(ctx context.Context, nginx Container, current, desired nginxconf.Files, plan nginxconf.Plan, t *Timings, log *logrus.Entry) error {
	wasUnconfirmed := a.unconfirmed
	if !plan.Empty() {
		if err := setMarker(a.dir); err != nil {
			return fmt.Errorf("write %s: %w", markerFile, err)
		}
		a.unconfirmed = true
		start := time.Now()
		if _, err := nginxconf.Apply(a.dir, current, desired); err != nil {
			return a.rollback(current, wasUnconfirmed, fmt.Errorf("write: %w", err))
		}
		t.Write = time.Since(start)
	}
	start := time.Now()
	ok, out, err := a.validate(ctx, nginx)
	t.Validate = time.Since(start)
	if err != nil {
		return a.rollback(current, wasUnconfirmed, err)
	}
	if !ok {
		a.isolate(ctx, nginx, out, current, desired, plan, log)
		return a.rollback(current, wasUnconfirmed, fmt.Errorf("%w: %s", errRejected, strings.TrimSpace(out)))
	}
	start = time.Now()
	if err := a.engine.Signal(ctx, nginx.ID, "HUP"); err != nil {
		// The files are valid but not live: a.unconfirmed stays set, so
		// the next pass (after backoff) signals again.
		return fmt.Errorf("reload: %w", err)
	}
	t.Signal = time.Since(start)
	a.unconfirmed = false
	if err := clearMarker(a.dir); err != nil {
		log.WithError(err).Warn("cannot remove the reload marker; the next start reloads once more")
	}
	return nil
}

// validate runs nginx -t in the nginx container.
func (a *Applier) validate(ctx context.Context, nginx Container) (bool, string, error) {
	code, out, err := a.engine.Exec(ctx, nginx.ID, []string{"nginx", "-t"})
	if err != nil {
		return false, out, fmt.Errorf("nginx -t: %w", err)
	}
	return code == 0, out, nil
}

// rollback restores previous. When it succeeds, the disk again holds what
// nginx ran before this pass, so the marker is as it was then.
func (a *Applier) rollback(previous nginxconf.Files, wasUnconfirmed bool, cause error) error {
	if err := nginxconf.Rollback(a.dir, previous); err != nil {
		return errors.Join(cause, fmt.Errorf("rollback: %w", err))
	}
	if !wasUnconfirmed {
		a.unconfirmed = false
		_ = clearMarker(a.dir)
	}
	return cause
}

// rejectedFile finds berth's files named in nginx -t output, which gives
// paths ("in /etc/nginx/conf.d/berth-a.conf:12"): the name must follow a
// slash, so a user's "old-berth-a.conf" never quarantines "berth-a.conf".
var rejectedFile = regexp.MustCompile(`/(` + regexp.QuoteMeta(nginxconf.FilePrefix) + `[A-Za-z0-9._-]+` + regexp.QuoteMeta(nginxconf.FileSuffix) + `):\d+`)

// isolate finds the host file that made nginx reject a change and
// quarantines its bytes, so the next pass lands every other change. nginx
// names the file for most errors; for the rest (a hash table it cannot
// build, a certificate it cannot load, a limit it hits) it is found by
// validating halves of the changed files. The shared files (the default
// server, the error pages: nginxconf.Shared) are never quarantined.
func (a *Applier) isolate(ctx context.Context, nginx Container, out string, current, desired nginxconf.Files, plan nginxconf.Plan, log *logrus.Entry) {
	for _, m := range rejectedFile.FindAllStringSubmatch(out, -1) {
		name := m[1]
		if !nginxconf.Shared(name) && (slices.Contains(plan.Write, name) || plan.Empty() && current[name] != nil) {
			a.hold(name, desired[name], "nginx -t names this file", out, log)
			return
		}
	}
	base, cands := bisectStart(current, desired, plan)
	onDisk, _ := nginxconf.ReadOwned(a.dir)
	test := func(files nginxconf.Files) (bool, error) {
		if _, err := nginxconf.Apply(a.dir, onDisk, files); err != nil {
			return false, err
		}
		onDisk = files
		ok, _, err := a.validate(ctx, nginx)
		return ok, err
	}
	name, err := bisect(base, cands, desired, test)
	if err != nil {
		log.WithError(err).Error("nginx rejected the change and the file at fault could not be found; retrying the whole change")
		return
	}
	a.hold(name, desired[name], "found by validating halves of the change", out, log)
}

func (a *Applier) hold(name string, data []byte, how, out string, log *logrus.Entry) {
	a.quarantine[name] = sha256.Sum256(data)
	log.WithFields(logrus.Fields{"file": name, "how": how, "nginx": strings.TrimSpace(out)}).
		Error("nginx rejected this file; its host keeps its previous config until its input changes")
}

// bisectStart returns the known-good base for a search and the files to
// search. With a plan, the base is the files before the change (minus the
// removed ones, which cannot break nginx) plus the new shared files; with an
// empty plan (unconfirmed files found at start), the shared files alone.
// Pure.
func bisectStart(current, desired nginxconf.Files, plan nginxconf.Plan) (nginxconf.Files, []string) {
	base := nginxconf.Files{}
	var cands []string
	if plan.Empty() {
		for _, name := range slices.Sorted(maps.Keys(current)) {
			if nginxconf.Shared(name) {
				base[name] = current[name]
			} else {
				cands = append(cands, name)
			}
		}
		return base, cands
	}
	maps.Copy(base, current)
	for _, name := range plan.Remove {
		delete(base, name)
	}
	for _, name := range plan.Write {
		if nginxconf.Shared(name) {
			base[name] = desired[name]
		} else {
			cands = append(cands, name)
		}
	}
	return base, cands
}

// bisect finds one file among cands whose desired version makes test fail,
// given that base passes and base plus every candidate fails: about log2(n)
// validations. test may write the files it is given.
func bisect(base nginxconf.Files, cands []string, desired nginxconf.Files, test func(nginxconf.Files) (bool, error)) (string, error) {
	if len(cands) == 0 {
		return "", errors.New("no host file changed: a shared file or nginx's own config is at fault")
	}
	if ok, err := test(base); err != nil {
		return "", err
	} else if !ok {
		return "", errors.New("nginx rejects the config even without the changed host files")
	}
	for len(cands) > 1 {
		half := cands[:len(cands)/2]
		trial := maps.Clone(base)
		for _, name := range half {
			trial[name] = desired[name]
		}
		ok, err := test(trial)
		if err != nil {
			return "", err
		}
		if ok {
			base, cands = trial, cands[len(cands)/2:]
		} else {
			cands = half
		}
	}
	return cands[0], nil
}

// withoutQuarantined replaces each quarantined file whose desired bytes are
// still the rejected ones with what is on disk, or leaves it out when the
// disk holds the rejected bytes too (found unconfirmed at start). Pure.
func withoutQuarantined(desired, current nginxconf.Files, q map[string][32]byte) nginxconf.Files {
	if len(q) == 0 {
		return desired
	}
	out := nginxconf.Files{}
	for name, data := range desired {
		if h, bad := q[name]; bad && h == sha256.Sum256(data) {
			if old, ok := current[name]; ok && sha256.Sum256(old) != h {
				out[name] = old
			}
			continue
		}
		out[name] = data
	}
	return out
}
