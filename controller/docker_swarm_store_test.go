package controller

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func testStoreKeys(t *testing.T, secret string) storeKeys {
	t.Helper()
	k, err := newStoreKeys([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestClusterStoreSealOpens(t *testing.T) {
	k := testStoreKeys(t, "secret")
	e := storeEntry{Root: "certs", Path: ".berth/a.test/v1/privkey.pem", Mode: "0600", Data: []byte("the key")}
	blob := k.seal(e)
	if bytes.Contains(blob, e.Data) {
		t.Fatalf("sealed blob holds the plaintext")
	}
	if len(blob) != 12+len(e.Data)+16 {
		t.Errorf("blob of %d bytes, want nonce + data + tag = %d", len(blob), 12+len(e.Data)+16)
	}
	if got, err := k.open(e, blob); err != nil || !bytes.Equal(got, e.Data) {
		t.Errorf("open = %q, %v; want %q", got, err, e.Data)
	}
	if again := k.seal(e); bytes.Equal(again, blob) {
		t.Errorf("two seals of one file are equal: the nonce is not random")
	}
}

func TestClusterStoreOpenRefuses(t *testing.T) {
	k := testStoreKeys(t, "secret")
	e := storeEntry{Root: "certs", Path: ".berth/a.test/v1/privkey.pem", Mode: "0600", Data: []byte("the key")}
	blob := k.seal(e)
	moved := func(f func(*storeEntry)) storeEntry { c := e; f(&c); return c }
	for _, tc := range []struct {
		name string
		keys storeKeys
		as   storeEntry
		blob []byte
	}{
		{"a blob under another key", testStoreKeys(t, "other secret"), e, blob},
		{"a blob replayed as another path", k, moved(func(c *storeEntry) { c.Path = ".berth/b.test/v1/privkey.pem" }), blob},
		{"a blob replayed under another root", k, moved(func(c *storeEntry) { c.Root = "state" }), blob},
		{"a blob relabelled with another mode", k, moved(func(c *storeEntry) { c.Mode = "0644" }), blob},
		{"a blob relabelled as a link", k, moved(func(c *storeEntry) { c.Mode = storeLinkMode }), blob},
		{"a truncated blob", k, e, blob[:10]},
		{"a flipped bit", k, e, append(slices.Clone(blob[:len(blob)-1]), blob[len(blob)-1]^1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := tc.keys.open(tc.as, tc.blob); !errors.Is(err, errStoreKey) {
				t.Errorf("open = %q, %v; want errStoreKey", got, err)
			}
		})
	}
}

func TestClusterStoreEmptyKeyIsRefused(t *testing.T) {
	if _, err := newStoreKeys(nil); err == nil {
		t.Errorf("an empty store key was accepted")
	}
}

func TestClusterStoreNaming(t *testing.T) {
	k := testStoreKeys(t, "secret")
	e := storeEntry{Root: "state", Path: "names.json", Mode: "0644", Data: []byte("{}")}
	sum := k.sum(e)
	name := storeConfigName("berth", sum)
	if len(sum) != 64 || name != "berth-"+sum[:24] {
		t.Errorf("sum %q, name %q", sum, name)
	}
	long := strings.Repeat("n", storeMaxNamespace)
	if n := storeConfigName(long, sum); len(n) != 64 || checkStoreNamespace(long) != nil {
		t.Errorf("the longest namespace gives a name of %d characters", len(n))
	}
	for _, bad := range []string{"", long + "n", "-berth", "ber th", "berth/x"} {
		if checkStoreNamespace(bad) == nil {
			t.Errorf("namespace %q accepted", bad)
		}
	}
	differs := map[string]storeEntry{
		"contents":  {Root: "state", Path: "names.json", Mode: "0644", Data: []byte("{ }")},
		"path":      {Root: "state", Path: "names2.json", Mode: "0644", Data: []byte("{}")},
		"root":      {Root: "certs", Path: "names.json", Mode: "0644", Data: []byte("{}")},
		"mode":      {Root: "state", Path: "names.json", Mode: "0600", Data: []byte("{}")},
		"the split": {Root: "state/names.json", Path: "", Mode: "0644", Data: []byte("{}")},
	}
	for what, o := range differs {
		if k.sum(o) == sum {
			t.Errorf("another %s, same sum", what)
		}
	}
	if testStoreKeys(t, "other").sum(e) == sum {
		t.Errorf("another key, same sum: the name would tell what a file holds")
	}
	if k.sum(e) != sum {
		t.Errorf("the sum is not stable")
	}
}

func TestClusterStoreModes(t *testing.T) {
	if got := storeModeOf(0o600 | os.ModeSetuid); got != "0600" {
		t.Errorf("storeModeOf = %q", got)
	}
	for in, want := range map[string]os.FileMode{"0600": 0o600, "0644": 0o644, "0755": 0o755} {
		if got, link, err := parseStoreMode(in); got != want || link || err != nil {
			t.Errorf("parseStoreMode(%q) = %o, %v, %v", in, got, link, err)
		}
	}
	if _, link, err := parseStoreMode(storeLinkMode); !link || err != nil {
		t.Errorf("parseStoreMode(symlink) = %v, %v", link, err)
	}
	for _, bad := range []string{"", "rw", "1777", "9", "-1"} {
		if _, _, err := parseStoreMode(bad); err == nil {
			t.Errorf("mode %q accepted", bad)
		}
	}
}

func TestClusterStoreSkips(t *testing.T) {
	for rel, skip := range map[string]bool{
		".berth/a.test/20261205T230000-1/privkey.pem": false,
		".berth/.lock":                      false,
		"a.test":                            false,
		"names.json":                        false,
		"deep/agent-generations":            false,
		"x.tmpl":                            false,
		".names.json.123456.tmp":            true,  // atomicfile's temp
		".tmp-123":                          true,  // the certificate store's temp version directory
		".berth/a.test/.tmp-99/privkey.pem": false, // the walk never gets there: the directory is skipped
		".a.test.tmp-link":                  true,  // a link being published
		"berth-x.conf.tmp":                  true,
		".berth/.user":                      true,
		".berth/.user/0123/privkey.pem":     true,
		".berth/.users":                     false,
		"agent-generation":                  true,
		"sub/agent-generation":              true,
	} {
		if got := storeSkip(rel); got != skip {
			t.Errorf("storeSkip(%q) = %v, want %v", rel, got, skip)
		}
	}
	for _, tc := range []struct {
		rel, target string
		ok          bool
	}{
		{"a.test", ".berth/a.test/20261205T230000-1", true},
		{"sub/b", "../a.test", true},
		{"a.test", "/etc/passwd", false},
		{"a.test", "../outside", false},
		{"sub/b", "../../outside", false},
		{"a.test", ".berth/.user/0123", false},
		{"a.test", ".", false},
		{"a.test", "", false},
	} {
		if got := storeLinkOK(tc.rel, tc.target); got != tc.ok {
			t.Errorf("storeLinkOK(%q -> %q) = %v, want %v", tc.rel, tc.target, got, tc.ok)
		}
	}
}

func TestClusterStoreWalkMirrorsOnlyWhatItShould(t *testing.T) {
	dir := t.TempDir()
	for rel, data := range map[string]string{
		".berth/a.test/v1/privkey.pem": "key",
		".berth/a.test/v1/meta.json":   "{}",
		".berth/a.test/.tmp-9/x":       "half",
		".berth/.user/h/privkey.pem":   "user",
		".x.123.tmp":                   "half",
		"agent-generation":             "3",
	} {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(dir, ".berth/a.test/v1/privkey.pem"), 0o600)
	os.Symlink(".berth/a.test/v1", filepath.Join(dir, "a.test"))
	os.Symlink("/etc", filepath.Join(dir, "abs"))
	os.WriteFile(filepath.Join(dir, "big"), make([]byte, storeMaxFile+1), 0o644)
	c := &ClusterStore{roots: map[string]string{"certs": dir}}
	entries, held, err := c.walk()
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "big")) {
		t.Errorf("walk with a file over the limit: %v, want an error naming it", err)
	}
	if !held["certs/big"] || len(held) != 1 {
		t.Errorf("held %v, want the file over the limit", held)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Root+"/"+e.Path+" "+e.Mode+" "+string(e.Data))
	}
	slices.Sort(got)
	want := []string{
		"certs/.berth/a.test/v1/meta.json 0644 {}",
		"certs/.berth/a.test/v1/privkey.pem 0600 key",
		"certs/a.test symlink .berth/a.test/v1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("walk:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, _, err := (&ClusterStore{roots: map[string]string{"certs": filepath.Join(dir, "missing")}}).walk(); err == nil {
		t.Errorf("a missing root walked as an empty one")
	}
}

func TestClusterStoreRestoreEntryWritesOnlyDifferences(t *testing.T) {
	dir := t.TempDir()
	c := &ClusterStore{roots: map[string]string{"certs": dir}}
	key := storeEntry{Root: "certs", Path: ".berth/a/v1/privkey.pem", Mode: "0600", Data: []byte("key")}
	link := storeEntry{Root: "certs", Path: "a", Mode: storeLinkMode, Data: []byte(".berth/a/v1")}
	for i, want := range []bool{true, false} {
		for _, e := range []storeEntry{key, link} {
			if wrote, err := c.restoreEntry(e); wrote != want || err != nil {
				t.Errorf("restore %d of %s: %v, %v; want %v", i+1, e.Path, wrote, err, want)
			}
		}
	}
	fi, err := os.Stat(filepath.Join(dir, ".berth/a/v1/privkey.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("restored key: %v, %v; want mode 0600", fi, err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "a", "privkey.pem")); err != nil || string(got) != "key" {
		t.Errorf("through the restored link: %q, %v", got, err)
	}
	os.Chmod(filepath.Join(dir, ".berth/a/v1/privkey.pem"), 0o644)
	if wrote, err := c.restoreEntry(key); !wrote || err != nil {
		t.Errorf("a file with another mode was not rewritten: %v, %v", wrote, err)
	}
	os.Mkdir(filepath.Join(dir, "b"), 0o755)
	if _, err := c.restoreEntry(storeEntry{Root: "certs", Path: "b", Mode: "0644"}); err == nil {
		t.Errorf("a directory in the way was not an error")
	}
}

func TestClusterStoreNewestBlobWins(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 23, 0, 0, 0, time.UTC)
	blob := func(id, path string, created time.Time, index uint64) storedBlob {
		return storedBlob{ID: id, Entry: storeEntry{Root: "state", Path: path, Mode: "0644"}, Created: created, Index: index}
	}
	got := newestBlobs([]storedBlob{
		blob("old", "names.json", t0, 10),
		blob("new", "names.json", t0.Add(time.Second), 11),
		blob("same-time-lower", "account.json", t0, 12),
		blob("same-time-higher", "account.json", t0, 13),
	})
	var ids []string
	for _, b := range got {
		ids = append(ids, b.ID)
	}
	if want := []string{"same-time-higher", "new"}; !slices.Equal(ids, want) {
		t.Errorf("newestBlobs = %v, want %v", ids, want)
	}
}

func TestClusterStorePlanSync(t *testing.T) {
	file := func(path string) storeEntry { return storeEntry{Root: "certs", Path: path, Mode: "0644"} }
	blob := func(id, path, sum string) storedBlob {
		return storedBlob{ID: id, Entry: file(path), Sum: sum}
	}
	for _, tc := range []struct {
		name   string
		local  map[string]string // path → sum
		held   []string
		remote []storedBlob
		create []string // path:sum
		delete []string // IDs
	}{
		{name: "an empty store gets every file",
			local: map[string]string{"a": "s1", "b": "s2"}, create: []string{"a:s1", "b:s2"}},
		{name: "files already stored change nothing",
			local:  map[string]string{"a": "s1"},
			remote: []storedBlob{blob("c1", "a", "s1")}},
		{name: "a changed file gets a new config and its old one goes",
			local:  map[string]string{"a": "s2"},
			remote: []storedBlob{blob("c1", "a", "s1")}, create: []string{"a:s2"}, delete: []string{"c1"}},
		{name: "a file gone locally loses its config",
			remote: []storedBlob{blob("c1", "a", "s1")}, delete: []string{"c1"}},
		{name: "a file back to older contents keeps that config and drops the newer one",
			local:  map[string]string{"a": "s1"},
			remote: []storedBlob{blob("c1", "a", "s1"), blob("c2", "a", "s2")}, delete: []string{"c2"}},
		{name: "an unreadable file keeps its configs",
			held:   []string{"certs/a"},
			remote: []storedBlob{blob("c1", "a", "s1")}},
		{name: "an unreadable directory keeps the configs under it",
			held:   []string{"certs/.berth"},
			remote: []storedBlob{blob("c1", ".berth/x/key", "s1"), blob("c2", ".berthy", "s2")}, delete: []string{"c2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var local []storeEntry
			var sums []string
			for _, p := range slices.Sorted(maps.Keys(tc.local)) {
				local = append(local, file(p))
				sums = append(sums, tc.local[p])
			}
			held := map[string]bool{}
			for _, h := range tc.held {
				held[h] = true
			}
			p := planSync(local, sums, held, tc.remote)
			var create, del []string
			for i, e := range p.Create {
				create = append(create, e.Path+":"+p.Sums[i])
			}
			for _, b := range p.Delete {
				del = append(del, b.ID)
			}
			if !slices.Equal(create, tc.create) || !slices.Equal(del, tc.delete) {
				t.Errorf("planSync: create %v delete %v; want create %v delete %v", create, del, tc.create, tc.delete)
			}
		})
	}
}

func TestClusterStoreSyncNeedsARestoreInTheCurrentTerm(t *testing.T) {
	c := &ClusterStore{}
	if c.restoredInTerm() {
		t.Errorf("restored before any Restore")
	}
	term, end := context.WithCancel(context.Background())
	done := term.Done()
	c.restored.Store(&done)
	if !c.restoredInTerm() {
		t.Errorf("not restored within the term of the Restore")
	}
	end()
	if c.restoredInTerm() {
		t.Errorf("still restored after the term of the Restore ended")
	}
	forever := context.Background().Done()
	c.restored.Store(&forever)
	if !c.restoredInTerm() {
		t.Errorf("a Restore with a context that never ends does not last")
	}
}
