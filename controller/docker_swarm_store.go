package controller

// ClusterStore keeps berth's certificates, ACME account and state in the
// Swarm itself, so that they outlive the node that ordered them: each
// local file is one Swarm config, encrypted under a secret only berth has
// (the berth-store-key Docker secret), and a new leader restores them
// before it acts. Swarm replicates configs through raft to every manager,
// so they survive the loss of any minority of managers.
//
// It imports the Docker client, so it is one of the docker*.go adapter
// files; the sealing, naming and planning are pure, in
// docker_swarm_store_seal.go.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/internal/atomicfile"
)

// ErrStoreNotRestored is Sync's refusal before a Restore has succeeded in
// this process, or after the context that Restore was given has ended: a
// new leader whose directories are still empty would otherwise delete the
// cluster's certificates, and one that leads again after another did
// (its files stale from its earlier term) would upload its old files as
// the newest and delete the other's new certificates.
var ErrStoreNotRestored = errors.New("cluster store not restored in this term: Restore must succeed before Sync")

// ClusterStore mirrors local directories into Swarm configs and back. Only
// the leader (Lease) may call Sync; call Restore first in every term, with
// the lease's term as its context, so that Sync refuses once the term
// ends, until the next term's Restore.
type ClusterStore struct {
	cli         *client.Client
	namespace   string
	secret      []byte
	roots       map[string]string
	callTimeout time.Duration
	// restored is closed when the term that Restore ran in ends (the
	// ctx it was given); nil before any Restore succeeded.
	restored atomic.Pointer[<-chan struct{}]
	// Log gets a line per config created or deleted and per config kept
	// because a service uses it; nil logs to logrus's standard logger.
	Log *logrus.Entry
}

// ClusterStore returns the store of namespace (the prefix of every config
// name, and the value of the berth.store label) for roots, a name → local
// directory map such as {"certs": "/etc/nginx/certs", "state":
// "/var/lib/berth"}. key is the secret the files are encrypted under.
// Mistakes in the arguments are reported by the first Restore or Sync.
func (s *SwarmSource) ClusterStore(namespace string, key []byte, roots map[string]string) *ClusterStore {
	return &ClusterStore{cli: s.cli, namespace: namespace, secret: bytes.Clone(key), roots: roots, callTimeout: s.callTimeout}
}

func (c *ClusterStore) log() *logrus.Entry {
	if c.Log != nil {
		return c.Log
	}
	return logrus.NewEntry(logrus.StandardLogger())
}

// keys checks the arguments and derives the keys.
func (c *ClusterStore) keys() (storeKeys, error) {
	if err := checkStoreNamespace(c.namespace); err != nil {
		return storeKeys{}, err
	}
	if len(c.roots) == 0 {
		return storeKeys{}, errors.New("cluster store: no roots")
	}
	for name, dir := range c.roots {
		if name == "" || strings.ContainsAny(name, "/\x00") || dir == "" {
			return storeKeys{}, fmt.Errorf("cluster store root %q (%q): want a name without '/' and a directory", name, dir)
		}
	}
	return newStoreKeys(c.secret)
}

// Restore writes every file of the store whose local copy is missing or
// differs (contents, mode, or link target), from the newest config of
// each path, and returns how many it wrote. Every blob is decrypted
// before anything is written: with the wrong key it writes nothing and
// names the config. It also creates missing root directories, so that an
// empty store leaves directories Sync can walk.
func (c *ClusterStore) Restore(ctx context.Context) (int, error) {
	keys, err := c.keys()
	if err != nil {
		return 0, err
	}
	blobs, err := c.list(ctx)
	if err != nil {
		return 0, err
	}
	var entries []storeEntry
	for _, b := range newestBlobs(blobs) {
		if b.Blob == nil {
			if b.Blob, err = c.fetch(ctx, b.ID); err != nil {
				return 0, err
			}
		}
		e := b.Entry
		if e.Data, err = keys.open(e, b.Blob); err != nil {
			return 0, fmt.Errorf("restore %s from config %s: %w", e.key(), b.Name, err)
		}
		entries = append(entries, e)
	}
	for _, dir := range c.roots {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, fmt.Errorf("restore: %w", err)
		}
	}
	n := 0
	for _, e := range entries {
		wrote, err := c.restoreEntry(e)
		if err != nil {
			return n, err
		}
		if wrote {
			n++
			c.log().WithFields(logrus.Fields{"root": e.Root, "path": e.Path}).Debug("restored from the cluster store")
		}
	}
	done := ctx.Done() // nil for a context that never ends
	c.restored.Store(&done)
	return n, nil
}

// restoreEntry writes e where its local copy is missing or differs.
func (c *ClusterStore) restoreEntry(e storeEntry) (bool, error) {
	dst := filepath.Join(c.roots[e.Root], filepath.FromSlash(e.Path))
	perm, link, _ := parseStoreMode(e.Mode) // checked by list
	fi, err := os.Lstat(dst)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return false, fmt.Errorf("restore %s: %w", dst, err)
	case fi.IsDir():
		return false, fmt.Errorf("restore %s: a directory is in the way of the stored %s", dst, e.Mode)
	case link && fi.Mode()&fs.ModeSymlink != 0:
		if target, err := os.Readlink(dst); err == nil && target == string(e.Data) {
			return false, nil
		}
	case !link && fi.Mode().IsRegular() && fi.Mode().Perm() == perm:
		if cur, err := os.ReadFile(dst); err == nil && bytes.Equal(cur, e.Data) {
			return false, nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return false, fmt.Errorf("restore %s: %w", dst, err)
	}
	if link {
		return true, writeLink(dst, string(e.Data))
	}
	return true, atomicfile.Write(dst, e.Data, perm)
}

// writeLink replaces path with a link to target: a new link under a
// temporary name (one Sync skips), renamed over it.
func writeLink(path, target string) error {
	dir, base := filepath.Split(path)
	tmp := filepath.Join(dir, "."+base+".link"+atomicfile.TempSuffix)
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("restore link %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore link %s: %w", path, err)
	}
	return atomicfile.SyncDir(dir)
}

// Sync makes the store match the local directories: a config for each
// file whose contents, mode or link target have none, and then deletes
// the configs of files that changed since or are gone. It refuses
// (ErrStoreNotRestored) unless a Restore has succeeded in this process
// and the context that Restore was given (the lease's term) still lasts.
// A config that a service uses cannot be deleted: it is kept and logged.
// A file that cannot be mirrored (unreadable, over 400 KiB) is an error
// naming it, but does not hold back the others, and its configs are kept.
func (c *ClusterStore) Sync(ctx context.Context) error {
	if !c.restoredInTerm() {
		return ErrStoreNotRestored
	}
	keys, err := c.keys()
	if err != nil {
		return err
	}
	local, held, walkErr := c.walk()
	sums := make([]string, len(local))
	for i, e := range local {
		sums[i] = keys.sum(e)
	}
	remote, err := c.list(ctx)
	if err != nil {
		return err
	}
	plan := planSync(local, sums, held, remote)
	var errs []error
	for i, e := range plan.Create {
		if err := c.create(ctx, keys, e, plan.Sums[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		// A file whose new config is missing keeps its old one.
		return errors.Join(append(errs, walkErr)...)
	}
	for _, b := range plan.Delete {
		if err := c.remove(ctx, b); err != nil {
			errs = append(errs, err)
		}
	}
	if len(plan.Create)+len(plan.Delete) > 0 {
		c.log().WithFields(logrus.Fields{"created": len(plan.Create), "deleted": len(plan.Delete)}).Info("cluster store synced")
	}
	return errors.Join(append(errs, walkErr)...)
}

// restoredInTerm says whether a Restore succeeded and its context is live.
func (c *ClusterStore) restoredInTerm() bool {
	done := c.restored.Load()
	if done == nil {
		return false
	}
	select {
	case <-*done:
		return false
	default:
		return true
	}
}

// create stores e as a new config. A config of that name already exists
// only with the same contents (the name is their HMAC): a retry, or
// another Sync that got there first, so that is success.
func (c *ClusterStore) create(ctx context.Context, keys storeKeys, e storeEntry, sum string) error {
	name := storeConfigName(c.namespace, sum)
	spec := swarm.ConfigSpec{
		Annotations: swarm.Annotations{Name: name, Labels: map[string]string{
			storeLabel: c.namespace, storeRootLabel: e.Root, storePathLabel: e.Path,
			storeModeLabel: e.Mode, storeSumLabel: sum,
		}},
		Data: keys.seal(e),
	}
	ctx, cancel := context.WithTimeout(ctx, c.callTimeout)
	defer cancel()
	if _, err := c.cli.ConfigCreate(ctx, spec); err != nil && !errdefs.IsConflict(err) {
		return fmt.Errorf("store %s as config %s: %w", e.key(), name, err)
	}
	c.log().WithFields(logrus.Fields{"root": e.Root, "path": e.Path, "config": name}).Debug("stored in the cluster store")
	return nil
}

// remove deletes b. A config that a service uses cannot be deleted (an
// operator mounted it, say): it is kept, and later Syncs try again.
func (c *ClusterStore) remove(ctx context.Context, b storedBlob) error {
	ctx, cancel := context.WithTimeout(ctx, c.callTimeout)
	defer cancel()
	err := c.cli.ConfigRemove(ctx, b.ID)
	log := c.log().WithFields(logrus.Fields{"root": b.Entry.Root, "path": b.Entry.Path, "config": b.Name})
	switch {
	case err == nil:
		log.Debug("removed from the cluster store")
	case errdefs.IsNotFound(err):
	case strings.Contains(err.Error(), "in use"):
		log.WithError(err).Warn("cluster store: config kept, a service uses it")
	default:
		return fmt.Errorf("remove config %s (%s): %w", b.Name, b.Entry.key(), err)
	}
	return nil
}

// list returns the store's configs of the known roots. A config of the
// namespace with labels that do not make sense is left alone and logged.
func (c *ClusterStore) list(ctx context.Context) ([]storedBlob, error) {
	ctx, cancel := context.WithTimeout(ctx, c.callTimeout)
	defer cancel()
	configs, err := c.cli.ConfigList(ctx, swarm.ConfigListOptions{Filters: filters.NewArgs(
		filters.Arg("label", storeLabel+"="+c.namespace))})
	if err != nil {
		return nil, fmt.Errorf("list configs of store %s: %w", c.namespace, err)
	}
	var out []storedBlob
	for _, cfg := range configs {
		b, err := storedBlobOf(cfg)
		if err != nil {
			c.log().WithField("config", cfg.Spec.Name).WithError(err).Warn("cluster store: config ignored")
			continue
		}
		if _, ok := c.roots[b.Entry.Root]; ok {
			out = append(out, b)
		}
	}
	return out, nil
}

// storedBlobOf reads a config's labels.
func storedBlobOf(cfg swarm.Config) (storedBlob, error) {
	l := cfg.Spec.Labels
	e := storeEntry{Root: l[storeRootLabel], Path: l[storePathLabel], Mode: l[storeModeLabel]}
	if _, _, err := parseStoreMode(e.Mode); err != nil {
		return storedBlob{}, err
	}
	if e.Root == "" || !fs.ValidPath(e.Path) || e.Path == "." || storeSkip(e.Path) {
		return storedBlob{}, fmt.Errorf("root %q path %q is not a path the store writes", e.Root, e.Path)
	}
	if len(l[storeSumLabel]) < storeSumHex {
		return storedBlob{}, fmt.Errorf("sum %q is too short", l[storeSumLabel])
	}
	return storedBlob{ID: cfg.ID, Name: cfg.Spec.Name, Entry: e, Sum: l[storeSumLabel],
		Created: cfg.CreatedAt, Index: cfg.Version.Index, Blob: cfg.Spec.Data}, nil
}

// fetch reads a config's data, for engines whose list leaves it out.
func (c *ClusterStore) fetch(ctx context.Context, id string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.callTimeout)
	defer cancel()
	cfg, _, err := c.cli.ConfigInspectWithRaw(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("inspect config %s: %w", id, err)
	}
	return cfg.Spec.Data, nil
}

// walk reads the mirrored files and links of every root. held names the
// (root, path) of files it could not mirror, whose configs stay; err
// names each of them.
func (c *ClusterStore) walk() (entries []storeEntry, held map[string]bool, err error) {
	held = map[string]bool{}
	var errs []error
	for root, dir := range c.roots {
		if _, err := os.Stat(dir); err != nil {
			// A missing root (an unmounted volume) is not an empty one.
			return nil, nil, fmt.Errorf("cluster store root %s: %w", root, err)
		}
		walkErr := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			rel, _ := filepath.Rel(dir, p)
			rel = filepath.ToSlash(rel)
			if rel == "." {
				return err
			}
			if storeSkip(rel) {
				if d != nil && d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if err == nil {
				var e *storeEntry
				if e, err = readStoreEntry(root, rel, p, d); e != nil {
					entries = append(entries, *e)
				}
			}
			if err != nil {
				held[root+"/"+rel] = true
				errs = append(errs, err)
			}
			return nil
		})
		if walkErr != nil {
			return nil, nil, walkErr
		}
	}
	return entries, held, errors.Join(errs...)
}

// readStoreEntry reads one walked path: a regular file, or a link the
// store keeps (storeLinkOK). Anything else (sockets, devices, links
// elsewhere) is not mirrored: nil, nil.
func readStoreEntry(root, rel, p string, d fs.DirEntry) (*storeEntry, error) {
	switch {
	case d.Type().IsRegular():
		fi, err := d.Info()
		if err != nil {
			return nil, fmt.Errorf("cluster store: %w", err)
		}
		if fi.Size() > storeMaxFile {
			return nil, fmt.Errorf("cluster store: %s is %d bytes, over the %d a Swarm config can hold", p, fi.Size(), storeMaxFile)
		}
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil // removed since the directory was read: gone
		}
		if err != nil {
			return nil, fmt.Errorf("cluster store: %w", err)
		}
		return &storeEntry{Root: root, Path: rel, Mode: storeModeOf(fi.Mode()), Data: data}, nil
	case d.Type()&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return nil, fmt.Errorf("cluster store: %w", err)
		}
		if !storeLinkOK(rel, target) {
			return nil, nil
		}
		return &storeEntry{Root: root, Path: rel, Mode: storeLinkMode, Data: []byte(target)}, nil
	}
	return nil, nil
}
