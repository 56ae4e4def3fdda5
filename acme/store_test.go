package acme

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// save stores a certificate for names straight from the fake CA, as
// "berth renew" or a restored backup would leave it.
func (e *env) save(t *testing.T, name string, names ...string) {
	t.Helper()
	issued, err := e.ca.Obtain(context.Background(), names, OrderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store().Save(name, issued.ChainPEM, issued.KeyPEM, Meta{}); err != nil {
		t.Fatal(err)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestSaveKeepsEveryVersionAndPublishesTheNewest(t *testing.T) {
	e := newEnv(t)
	var versions []string
	for range 3 {
		e.save(t, "a.test", "a.test")
		st, err := e.store().Load("a.test")
		if err != nil {
			t.Fatal(err)
		}
		versions = append(versions, st.Version)
	}
	for _, v := range versions {
		if !exists(filepath.Join(e.certs, v, "fullchain.pem")) {
			t.Fatalf("version %s was removed by a later Save; only Prune may remove versions", v)
		}
	}
	if cur := e.store().current("a.test"); cur != versions[2] {
		t.Fatalf("link points at %s, want the newest %s", cur, versions[2])
	}
}

func TestCertsNamesVersionsAndOldOnesGoOnlyWhenNoNginxFileNamesThem(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"a.test"}}), []string{"a.test"})
		changed(t, m, time.Minute, "the order")
		first := m.Certs()["a.test"]
		if !strings.Contains(first.Chain, string(filepath.Separator)+versionsDir+string(filepath.Separator)) {
			t.Fatalf("Certs() gives %s, want a path inside a version directory", first.Chain)
		}
		if _, err := RenewHost(context.Background(), e.store(), e.state, e.ca, "a.test", true, time.Now()); err != nil {
			t.Fatal(err)
		}
		changed(t, m, 3*time.Second, "berth renew --force")
		second := m.Certs()["a.test"]
		if second.Chain == first.Chain || second.Key == first.Key {
			t.Fatalf("a renewal kept the paths %s: nginx's config would not change", second.Chain)
		}
		time.Sleep(time.Minute)
		if !exists(first.Chain) {
			t.Fatal("an old version was removed before any InUse call")
		}
		m.InUse([]string{first.Chain, first.Key})
		time.Sleep(time.Minute)
		if !exists(first.Chain) || !exists(second.Chain) {
			t.Fatal("a version in use (or the current one) was removed")
		}
		m.InUse([]string{second.Chain, second.Key})
		time.Sleep(time.Minute)
		if exists(filepath.Dir(first.Chain)) {
			t.Fatal("the old version is still on disk after no nginx file names it")
		}
		if !exists(second.Chain) || !exists(second.Key) {
			t.Fatal("the current version was removed")
		}
	})
}

func TestALeftoverTemporaryLinkIsNeverListed(t *testing.T) {
	e := newEnv(t)
	e.save(t, "a.test", "a.test")
	target := e.store().current("a.test")
	for _, leftover := range []string{"a.test" + linkSuffix, ".a.test" + linkSuffix} {
		if err := os.Symlink(target, filepath.Join(e.certs, leftover)); err != nil {
			t.Fatal(err)
		}
	}
	if list, err := e.store().List(); err != nil || !slices.Equal(list, []string{"a.test"}) {
		t.Fatalf("List() = %v, %v; want a.test only", list, err)
	}
}

func TestConcurrentWritersNeverLoseAnUpdateOrCorruptNamesJSON(t *testing.T) {
	dir := t.TempDir()
	const writers, rounds = 20, 20
	var wg sync.WaitGroup
	stop := make(chan struct{})
	readerDone := make(chan error, 1)
	go func() { // a reader like the daemon's refresh, alongside
		for {
			select {
			case <-stop:
				readerDone <- nil
				return
			default:
			}
			if _, _, err := newNameBook(dir, quietLog()).read(); err != nil {
				readerDone <- err
				return
			}
		}
	}()
	for w := range writers {
		wg.Go(func() {
			name := fmt.Sprintf("w%d.test", w)
			for range rounds {
				// A new book per round: its own open lock file, as another
				// process would have.
				book := newNameBook(dir, quietLog())
				if _, _, err := book.update([]string{name}, func(s NameState) NameState { s.Failures++; return s }); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	if err := <-readerDone; err != nil {
		t.Fatalf("a reader saw names.json unparsable: %v", err)
	}
	names, _, err := newNameBook(dir, quietLog()).read()
	if err != nil {
		t.Fatal(err)
	}
	for w := range writers {
		if got := names[fmt.Sprintf("w%d.test", w)].Failures; got != rounds {
			t.Errorf("w%d.test: %d of %d updates survived", w, got, rounds)
		}
	}
}

func TestRevokeIsNotUndoneByTheDaemonsNextWrite(t *testing.T) {
	e := newEnv(t)
	e.save(t, "rev.test", "rev.test")
	m := e.manager(t, nil) // loads names.json before the revocation
	if _, err := RevokeHost(context.Background(), e.store(), e.state, e.ca, "rev.test"); err != nil {
		t.Fatal(err)
	}
	m.fail([]string{"other.test"}, errors.New("validation failed"), 0, quietLog(), false)
	names := e.names(t)
	if !names["rev.test"].Revoked || names["other.test"].Failures != 1 {
		t.Fatalf("names.json after the daemon's write: %+v; the revocation must survive", names)
	}
}

func TestCorruptStateFilesAreMovedAsideAndEveryValidCertificateIsServed(t *testing.T) {
	e := newEnv(t)
	e.save(t, "a.test", "a.test")
	e.save(t, "b.test", "b.test")
	namesFile := filepath.Join(e.state, "names.json")
	metaFile := filepath.Join(e.certs, e.store().current("a.test"), "meta.json")
	for _, f := range []string{namesFile, metaFile} {
		if err := os.WriteFile(f, []byte(`{"truncated`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m := e.manager(t, nil)
	if certs := m.Certs(); len(certs) != 2 {
		t.Fatalf("Certs() = %v, want both certificates served", certs)
	}
	for _, f := range []string{namesFile, metaFile} {
		if aside, _ := filepath.Glob(f + ".corrupt-*"); len(aside) != 1 || exists(f) {
			t.Fatalf("%s: moved aside to %v, still there: %v", f, aside, exists(f))
		}
	}
}

func TestACorruptAccountFileIsMovedAsideAndReplaced(t *testing.T) {
	dir := t.TempDir()
	key, reg := filepath.Join(dir, "key.pem"), filepath.Join(dir, "account.json")
	os.WriteFile(key, []byte("-----BEGIN EC PRIVATE KEY-----\ngarbage\n"), 0o600)
	os.WriteFile(reg, []byte(`{"email":"","registration":{"uri":"https://ca/acct/1"}}`), 0o600)
	acc, err := loadAccount(dir, "", quietLog())
	if err != nil || acc.key == nil || acc.Registration != nil {
		t.Fatalf("loadAccount with a corrupt key: %+v, %v; want a new key and no registration", acc, err)
	}
	for _, f := range []string{key, reg} {
		if aside, _ := filepath.Glob(f + ".corrupt-*"); len(aside) != 1 {
			t.Fatalf("%s not moved aside: %v", f, aside)
		}
	}
	if err := saveAccount(dir, acc); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(reg, []byte(`{"email":`), 0o600)
	again, err := loadAccount(dir, "", quietLog())
	if err != nil || again.key == nil || again.Registration != nil {
		t.Fatalf("loadAccount with a corrupt registration: %+v, %v", again, err)
	}
	if aside, _ := filepath.Glob(reg + ".corrupt-*"); len(aside) != 2 {
		t.Fatalf("corrupt account.json not moved aside: %v", aside)
	}
}

func TestAForeignDirectoryAtACertificatePathIsReportedBeforeAnyOrder(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		if err := os.MkdirAll(filepath.Join(e.certs, "a.test"), 0o755); err != nil {
			t.Fatal(err)
		}
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"a.test"}}), nil)
		time.Sleep(6 * time.Minute) // past the first backoff
		if n := e.ca.orderCount(); n != 0 {
			t.Fatalf("%d orders for a name whose certificate berth could not publish", n)
		}
		st := e.names(t)["a.test"]
		if st.Failures != 2 || !strings.Contains(st.LastError, "is a directory") || !strings.Contains(st.LastError, ErrForeignPath.Error()) {
			t.Fatalf("a.test state %+v, want two backed-off attempts naming the directory", st)
		}
	})
}

// BenchmarkRefreshOf200Certificates is the daemon's periodic look for
// changes by another process when nothing changed: it runs every
// refreshInterval, so it must stay cheap.
func BenchmarkRefreshOf200Certificates(b *testing.B) {
	e := &env{certs: b.TempDir(), state: b.TempDir(), webroot: b.TempDir(), ca: newFakeCA(b)}
	for i := range 200 {
		name := fmt.Sprintf("h%d.test", i)
		issued, _ := e.ca.Obtain(context.Background(), []string{name}, OrderOptions{})
		if err := e.store().Save(name, issued.ChainPEM, issued.KeyPEM, Meta{}); err != nil {
			b.Fatal(err)
		}
	}
	m, err := NewManager(Options{Store: e.store(), Issuer: e.ca, StateDir: e.state, Log: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		m.housekeep(time.Now())
	}
}
