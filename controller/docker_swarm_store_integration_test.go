package controller

// Lease and ClusterStore against a real three-node Swarm (testenv
// StartSwarm), reached through the managers' engines as in
// docker_swarm_integration_test.go. One Swarm costs 35-60 s, so both run
// as subtests of one test on one Swarm.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/internal/testenv"
)

func TestLeaseAndClusterStoreOnARealSwarm(t *testing.T) {
	start := time.Now()
	sw := testenv.StartSwarm(t, testenv.SwarmOptions{Nodes: 3})
	t.Logf("Swarm up after %s", time.Since(start).Round(100*time.Millisecond))
	clis := make([]*client.Client, len(sw.Nodes))
	for i, n := range sw.Nodes {
		clis[i] = innerEngine(t, n.Name)
	}
	t.Run("Lease", func(t *testing.T) {
		s := time.Now()
		testLeaseOnSwarm(t, sw, clis)
		t.Logf("Lease subtest took %s", time.Since(s).Round(100*time.Millisecond))
	})
	t.Run("ClusterStore", func(t *testing.T) {
		s := time.Now()
		testClusterStoreOnSwarm(t, clis)
		t.Logf("ClusterStore subtest took %s", time.Since(s).Round(100*time.Millisecond))
	})
}

// logBuffer collects a test's logrus lines, shown only if it fails:
// goroutines of the code under test may log after a subtest has ended,
// which t.Log does not allow.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func bufferedLog(t *testing.T) *logrus.Entry {
	b := &logBuffer{}
	l := logrus.New()
	l.SetOutput(b)
	l.SetLevel(logrus.DebugLevel)
	t.Cleanup(func() {
		if t.Failed() {
			b.mu.Lock()
			t.Logf("log:\n%s", b.buf.String())
			b.mu.Unlock()
		}
	})
	return logrus.NewEntry(l)
}

// storeTree is what a directory holds as the store sees it: each file's
// or link's mode and contents (a link: its target), by slash path.
func storeTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			tree[filepath.ToSlash(rel)] = "link " + target
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			tree[filepath.ToSlash(rel)] = fmt.Sprintf("%04o %s", info.Mode().Perm(), data)
		default:
			tree[filepath.ToSlash(rel)] = "special"
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return tree
}

// writeTree creates files: "link TARGET" makes a link, "0600 data" a file
// with that mode.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for rel, spec := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		os.Remove(p)
		kind, data, _ := strings.Cut(spec, " ")
		if kind == "link" {
			if err := os.Symlink(data, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var mode uint32
		fmt.Sscanf(kind, "%o", &mode)
		if err := os.WriteFile(p, []byte(data), fs.FileMode(mode)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, fs.FileMode(mode)); err != nil {
			t.Fatal(err)
		}
	}
}

// rootsIn is a certs and a state root under dir.
func rootsIn(dir string) map[string]string {
	return map[string]string{"certs": filepath.Join(dir, "certs"), "state": filepath.Join(dir, "state")}
}

// treeOf is storeTree of every root, keyed "root/path".
func treeOf(t *testing.T, roots map[string]string) map[string]string {
	t.Helper()
	all := map[string]string{}
	for name, dir := range roots {
		for rel, v := range storeTree(t, dir) {
			all[name+"/"+rel] = v
		}
	}
	return all
}

func testClusterStoreOnSwarm(t *testing.T, clis []*client.Client) {
	ctx := context.Background()
	log := bufferedLog(t)
	const ns = "berth-it"
	key := []byte("the store secret")
	// Short paths: a unix socket's path must fit 108 bytes.
	tmp, err := os.MkdirTemp("", "bst")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	store := func(node int, dir string, key []byte) *ClusterStore {
		s := newSwarmSource(clis[node]).ClusterStore(ns, key, rootsIn(filepath.Join(tmp, dir)))
		s.Log = log
		return s
	}
	configs := func() map[string]swarm.Config {
		t.Helper()
		list, err := clis[0].ConfigList(ctx, swarm.ConfigListOptions{Filters: filters.NewArgs(filters.Arg("label", storeLabel+"="+ns))})
		if err != nil {
			t.Fatal(err)
		}
		byPath := map[string]swarm.Config{}
		for _, c := range list {
			k := c.Spec.Labels[storeRootLabel] + "/" + c.Spec.Labels[storePathLabel]
			if _, dup := byPath[k]; dup {
				t.Errorf("two configs for %s", k)
			}
			byPath[k] = c
		}
		return byPath
	}
	key1 := "-----BEGIN PRIVATE KEY-----\nsecret key one\n-----END PRIVATE KEY-----\n"
	mirrored := map[string]string{
		"certs/.berth/a.test/20261205T230000-1/fullchain.pem": "0644 chain one",
		"certs/.berth/a.test/20261205T230000-1/privkey.pem":   "0600 " + key1,
		"certs/.berth/a.test/20261205T230000-1/meta.json":     "0644 {}",
		"certs/a.test":           "link .berth/a.test/20261205T230000-1",
		"certs/.berth/.lock":     "0600 ",
		"state/account.json":     "0600 {\"key\": \"account\"}",
		"state/names.json":       "0644 {}",
		"state/deep/er/file.txt": "0640 deep",
	}
	skipped := map[string]string{
		"certs/.berth/.user/0123abcd/privkey.pem":  "0600 the user's own key",
		"certs/.a.test.tmp-link":                   "link .berth/a.test/20261205T230000-1",
		"certs/.berth/a.test/.tmp-123/privkey.pem": "0600 half written",
		"state/.names.json.123.tmp":                "0644 half written",
		"state/agent-generation":                   "0644 7",
		"certs/elsewhere":                          "link /etc/passwd",
	}
	a := rootsIn(filepath.Join(tmp, "a"))
	for _, files := range []map[string]string{mirrored, skipped} {
		for k, v := range files {
			root, rel, _ := strings.Cut(k, "/")
			writeTree(t, a[root], map[string]string{rel: v})
		}
	}
	sock, err := net.Listen("unix", filepath.Join(a["state"], "berth.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()

	storeA := store(0, "a", key)
	if err := storeA.Sync(ctx); !errors.Is(err, ErrStoreNotRestored) {
		t.Fatalf("Sync before Restore: %v, want ErrStoreNotRestored", err)
	}
	if n, err := storeA.Restore(ctx); n != 0 || err != nil {
		t.Fatalf("Restore of an empty store: %d, %v", n, err)
	}
	took := time.Now()
	if err := storeA.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	t.Logf("first Sync of %d files: %s", len(mirrored), time.Since(took).Round(time.Millisecond))
	got := configs()
	if len(got) != len(mirrored) {
		t.Errorf("%d configs, want one for each of %d mirrored files: %v", len(got), len(mirrored), slices.Sorted(maps.Keys(got)))
	}
	for k, c := range got {
		if _, ok := mirrored[k]; !ok {
			t.Errorf("config %s for %s, which is not mirrored", c.Spec.Name, k)
		}
		if !strings.HasPrefix(c.Spec.Name, ns+"-") || len(c.Spec.Name) > 64 {
			t.Errorf("config name %q", c.Spec.Name)
		}
		if len(c.Spec.Data) == 0 {
			t.Logf("config %s: the list carries no data (Restore inspects each)", c.Spec.Name)
		}
		if bytes.Contains(c.Spec.Data, []byte("secret key one")) || bytes.Contains(c.Spec.Data, []byte("chain one")) {
			t.Errorf("config %s holds plaintext", c.Spec.Name)
		}
	}
	if got["certs/.berth/a.test/20261205T230000-1/privkey.pem"].Spec.Labels[storeModeLabel] != "0600" {
		t.Errorf("private key's mode label: %v", got["certs/.berth/a.test/20261205T230000-1/privkey.pem"].Spec.Labels)
	}
	if err := storeA.Sync(ctx); err != nil || len(configs()) != len(mirrored) {
		t.Errorf("a second Sync with nothing changed: %v, %d configs", err, len(configs()))
	}
	// Creating a config that exists (a retry, a race) is success.
	keys, err := storeA.keys()
	if err != nil {
		t.Fatal(err)
	}
	names := storeEntry{Root: "state", Path: "names.json", Mode: "0644", Data: []byte("{}")}
	if err := storeA.create(ctx, keys, names, keys.sum(names)); err != nil || len(configs()) != len(mirrored) {
		t.Errorf("creating an existing config again: %v, %d configs", err, len(configs()))
	}

	// Another node with empty directories gets identical files and modes.
	storeB := store(1, "b", key)
	b := rootsIn(filepath.Join(tmp, "b"))
	took = time.Now()
	n, err := storeB.Restore(ctx)
	if err != nil || n != len(mirrored) {
		t.Fatalf("Restore into empty directories: %d, %v; want %d files", n, err, len(mirrored))
	}
	t.Logf("Restore of %d files: %s", n, time.Since(took).Round(time.Millisecond))
	if diff := treeDiff(treeOf(t, b), mirrored); diff != "" {
		t.Errorf("restored tree differs from the mirrored files:\n%s", diff)
	}
	if n, err := storeB.Restore(ctx); n != 0 || err != nil {
		t.Errorf("a second Restore: %d, %v; want nothing written", n, err)
	}

	// A changed file: a new config, the old one deleted; Restore takes it.
	writeTree(t, a["state"], map[string]string{"names.json": "0644 {\"a.test\": {}}"})
	oldNames := got["state/names.json"].ID
	if err := storeA.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got = configs()
	if c := got["state/names.json"]; c.ID == oldNames || len(got) != len(mirrored) {
		t.Errorf("after a change: names.json config %s (was %s), %d configs", c.ID, oldNames, len(got))
	}
	if n, err := storeB.Restore(ctx); n != 1 || err != nil || treeOf(t, b)["state/names.json"] != "0644 {\"a.test\": {}}" {
		t.Errorf("Restore after a change: %d, %v, names.json %q", n, err, treeOf(t, b)["state/names.json"])
	}
	// A changed mode alone is a change too.
	os.Chmod(filepath.Join(a["state"], "deep", "er", "file.txt"), 0o600)
	if err := storeA.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := storeB.Restore(ctx); n != 1 || err != nil || treeOf(t, b)["state/deep/er/file.txt"] != "0600 deep" {
		t.Errorf("Restore after a chmod: %d, %v, file.txt %q", n, err, treeOf(t, b)["state/deep/er/file.txt"])
	}

	// A removed file drops its config.
	os.Remove(filepath.Join(a["state"], "deep", "er", "file.txt"))
	if err := storeA.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := configs()["state/deep/er/file.txt"]; ok || len(configs()) != len(mirrored)-1 {
		t.Errorf("the config of a removed file is still there: %v", slices.Sorted(maps.Keys(configs())))
	}

	// The wrong key: an error naming a config, and nothing written.
	storeC := store(2, "c", []byte("another secret"))
	if n, err := storeC.Restore(ctx); err == nil || n != 0 || !strings.Contains(err.Error(), "key does not match") || !strings.Contains(err.Error(), ns+"-") {
		t.Errorf("Restore with the wrong key: %d, %v; want an error naming the config and the key", n, err)
	}
	if tree := treeOf(t, rootsIn(filepath.Join(tmp, "c"))); len(tree) != 0 {
		t.Errorf("Restore with the wrong key wrote %v", tree)
	}
	if err := storeC.Sync(ctx); !errors.Is(err, ErrStoreNotRestored) {
		t.Errorf("Sync after a failed Restore: %v, want ErrStoreNotRestored", err)
	}

	// One blob under another key among good ones: still nothing written.
	alien, err := newStoreKeys([]byte("an alien secret"))
	if err != nil {
		t.Fatal(err)
	}
	e := storeEntry{Root: "state", Path: "zzz-alien", Mode: "0644", Data: []byte("alien")}
	sum := alien.sum(e)
	created, err := clis[0].ConfigCreate(ctx, swarm.ConfigSpec{Annotations: swarm.Annotations{
		Name: storeConfigName(ns, sum), Labels: map[string]string{storeLabel: ns, storeRootLabel: e.Root,
			storePathLabel: e.Path, storeModeLabel: e.Mode, storeSumLabel: sum}}, Data: alien.seal(e)})
	if err != nil {
		t.Fatal(err)
	}
	storeE := store(1, "e", key)
	if n, err := storeE.Restore(ctx); err == nil || n != 0 || !strings.Contains(err.Error(), storeConfigName(ns, sum)) {
		t.Errorf("Restore with one blob under another key: %d, %v; want an error naming %s", n, err, storeConfigName(ns, sum))
	}
	if tree := treeOf(t, rootsIn(filepath.Join(tmp, "e"))); len(tree) != 0 {
		t.Errorf("Restore with one blob under another key wrote the others: %v", slices.Sorted(maps.Keys(tree)))
	}
	if err := clis[0].ConfigRemove(ctx, created.ID); err != nil {
		t.Fatal(err)
	}

	// A fresh leader with empty directories that syncs before restoring
	// deletes nothing.
	before := len(configs())
	storeD := store(1, "d", key)
	if err := storeD.Sync(ctx); !errors.Is(err, ErrStoreNotRestored) || len(configs()) != before {
		t.Errorf("Sync before Restore: %v, %d configs (were %d)", err, len(configs()), before)
	}

	// A file too large for a config is an error naming it; the others
	// still sync.
	writeTree(t, a["state"], map[string]string{"huge.bin": "0644 " + strings.Repeat("x", storeMaxFile+1), "small.txt": "0644 small"})
	err = storeA.Sync(ctx)
	if err == nil || !strings.Contains(err.Error(), "huge.bin") {
		t.Errorf("Sync with a file over the limit: %v, want an error naming it", err)
	}
	if _, ok := configs()["state/small.txt"]; !ok {
		t.Errorf("a file beside one over the limit was not synced")
	}
	os.Remove(filepath.Join(a["state"], "huge.bin"))

	// A term ends: Sync refuses until the next term's Restore, which
	// finds nothing to write on the node that wrote everything.
	term, endTerm := context.WithCancel(ctx)
	if n, err := storeA.Restore(term); n != 0 || err != nil {
		t.Fatalf("Restore on the syncing node: %d, %v; want nothing written", n, err)
	}
	endTerm()
	if err := storeA.Sync(ctx); !errors.Is(err, ErrStoreNotRestored) {
		t.Errorf("Sync after the term of its Restore ended: %v, want ErrStoreNotRestored", err)
	}
	if _, err := storeA.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if err := storeA.Sync(ctx); err != nil {
		t.Errorf("Sync after the next term's Restore: %v", err)
	}

	// A config a service uses cannot be deleted: Sync carries on.
	inUse := configs()["state/small.txt"]
	if _, err := clis[0].ServiceCreate(ctx, swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "uses-config"},
		Mode:        swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: new(uint64)}},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: "busybox:none",
			Configs: []*swarm.ConfigReference{{ConfigID: inUse.ID, ConfigName: inUse.Spec.Name,
				File: &swarm.ConfigReferenceFileTarget{Name: "/small", UID: "0", GID: "0", Mode: 0o444}}}}},
	}, swarm.ServiceCreateOptions{}); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(a["state"], "small.txt"))
	if err := storeA.Sync(ctx); err != nil {
		t.Errorf("Sync with a config in use: %v, want no error", err)
	}
	if _, ok := configs()["state/small.txt"]; !ok {
		t.Errorf("a config in use disappeared")
	}
}

// treeDiff lists the differences between two trees.
func treeDiff(got, want map[string]string) string {
	var d []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			d = append(d, "missing "+k)
		} else if g != w {
			d = append(d, fmt.Sprintf("%s: %q, want %q", k, g, w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("extra %s: %q", k, g))
		}
	}
	slices.Sort(d)
	return strings.Join(d, "\n")
}
