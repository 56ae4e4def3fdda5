package acme

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// acmeCompanionDir lays out certificates as acme-companion does:
// <host>/{fullchain,key}.pem and <host>.crt/.key links to them, one more
// link per extra name of a SAN certificate.
func acmeCompanionDir(t *testing.T, ca *fakeCA, names ...string) string {
	dir := t.TempDir()
	c, k := ca.valid(t, names...)
	writePair(t, filepath.Join(dir, names[0], "fullchain.pem"), filepath.Join(dir, names[0], "key.pem"), c, k)
	write(t, filepath.Join(dir, names[0], "cert.pem"), c)
	for _, n := range names {
		for ext, target := range map[string]string{".crt": "fullchain.pem", ".key": "key.pem"} {
			if err := os.Symlink("./"+names[0]+"/"+target, filepath.Join(dir, n+ext)); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(t, filepath.Join(dir, "dhparam.pem"), []byte("-----BEGIN DH PARAMETERS-----\n"))
	return dir
}

// certbotDir lays out /etc/letsencrypt: live/<name>/ links into archive/.
func certbotDir(t *testing.T, ca *fakeCA, name string, names ...string) string {
	dir := t.TempDir()
	c, k := ca.valid(t, names...)
	writePair(t, filepath.Join(dir, "archive", name, "fullchain1.pem"), filepath.Join(dir, "archive", name, "privkey1.pem"), c, k)
	os.MkdirAll(filepath.Join(dir, "live", name), 0o755)
	for _, f := range []string{"fullchain", "privkey"} {
		if err := os.Symlink("../../archive/"+name+"/"+f+"1.pem", filepath.Join(dir, "live", name, f+".pem")); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func imported(results []ImportResult) []string {
	var out []string
	for _, r := range results {
		if r.Skipped == "" {
			out = append(out, r.Name+"="+strings.Join(r.Domains, ","))
		}
	}
	return out
}

func TestImportReadsEachLayoutIntoTheStore(t *testing.T) {
	ca := newFakeCA(t)
	flat := t.TempDir()
	c, k := ca.valid(t, "flat.test")
	writePair(t, filepath.Join(flat, "flat.test.crt"), filepath.Join(flat, "flat.test.key"), c, k)
	wild := t.TempDir()
	c, k = ca.valid(t, "*.star.test", "star.test")
	writePair(t, filepath.Join(wild, "_.star.test.crt"), filepath.Join(wild, "_.star.test.key"), c, k)
	cases := map[string]struct {
		dir  string
		want []string
	}{
		"nginx-proxy":    {flat, []string{"flat.test=flat.test"}},
		"acme-companion": {acmeCompanionDir(t, ca, "www.comp.test", "comp.test"), []string{"comp.test=comp.test,www.comp.test"}},
		"certbot":        {certbotDir(t, ca, "site", "bot.test", "www.bot.test"), []string{"bot.test=bot.test,www.bot.test"}},
		"certbot live/":  {filepath.Join(certbotDir(t, ca, "site", "live.test"), "live"), []string{"live.test=live.test"}},
		// A wildcard is stored as _.<domain>, as berth stores the ones it
		// orders: a "*" in a path would make the renderer refuse the site.
		"nginx-proxy wildcard": {wild, []string{"_.star.test=*.star.test,star.test"}},
	}
	for layout, c := range cases {
		store := Store{Dir: t.TempDir(), Log: quietLog()}
		results, err := Import(store, c.dir, time.Now())
		if err != nil {
			t.Fatalf("%s: %v", layout, err)
		}
		if got := imported(results); !slices.Equal(got, c.want) {
			t.Errorf("%s: imported %q, want %q (all results %+v)", layout, got, c.want, results)
			continue
		}
		name := strings.Split(c.want[0], "=")[0]
		st, err := store.Load(name)
		if err != nil || st.Meta.Source != SourceImport || st.Meta.Issuer != "fake root" || st.Meta.File == "" {
			t.Errorf("%s: stored %+v, %v; want meta saying it was imported, from which file, and its issuer", layout, st, err)
		}
	}
}

func TestImportSkipsUnusableFilesWithTheReason(t *testing.T) {
	ca, other, dir := newFakeCA(t), newFakeCA(t), t.TempDir()
	now := time.Now()
	c, k := ca.certPEM(t, []string{"expired.test"}, now.Add(-90*24*time.Hour), now.Add(-time.Hour))
	writePair(t, filepath.Join(dir, "expired.test.crt"), filepath.Join(dir, "expired.test.key"), c, k)
	c, _ = ca.valid(t, "mismatch.test")
	_, k = other.valid(t, "mismatch.test")
	writePair(t, filepath.Join(dir, "mismatch.test.crt"), filepath.Join(dir, "mismatch.test.key"), c, k)
	writePair(t, filepath.Join(dir, "garbage.test.crt"), filepath.Join(dir, "garbage.test.key"), []byte("garbage"), k)
	write(t, filepath.Join(dir, "nokey.test", "fullchain.pem"), c)
	c, k = ca.valid(t, "good.test")
	writePair(t, filepath.Join(dir, "good.test.crt"), filepath.Join(dir, "good.test.key"), c, k)

	results, err := Import(Store{Dir: t.TempDir(), Log: quietLog()}, dir, now)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"expired.test.crt":         "expired on",
		"mismatch.test.crt":        "the key does not match",
		"garbage.test.crt":         "no PEM certificate",
		"nokey.test/fullchain.pem": "missing key",
		"good.test.crt":            "",
	}
	if len(results) != len(want) {
		t.Fatalf("results %+v, want one per file of %v", results, want)
	}
	for _, r := range results {
		reason, ok := want[userName(dir, r.File)]
		if !ok || reason == "" && r.Skipped != "" || !strings.Contains(r.Skipped, reason) || r.Problem != (reason != "") {
			t.Errorf("%s: skipped %q (problem %v), want %q", userName(dir, r.File), r.Skipped, r.Problem, reason)
		}
	}
}

func TestImportingTwiceImportsOnce(t *testing.T) {
	ca := newFakeCA(t)
	dir := acmeCompanionDir(t, ca, "a.test", "www.a.test")
	store := Store{Dir: t.TempDir(), Log: quietLog()}
	first, err := Import(store, dir, time.Now())
	if err != nil || len(imported(first)) != 1 {
		t.Fatalf("first import: %+v %v", first, err)
	}
	version := store.current("a.test")
	second, err := Import(store, dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := imported(second); len(got) != 0 || store.current("a.test") != version {
		t.Fatalf("second import imported %q (version %s, was %s); want nothing", got, store.current("a.test"), version)
	}
	for _, r := range second {
		if r.Problem {
			t.Errorf("second import reports a problem: %+v", r)
		}
	}
}

func TestImportSkipsANameWithANewerCertificateInTheStore(t *testing.T) {
	ca := newFakeCA(t)
	store := Store{Dir: t.TempDir(), Log: quietLog()}
	newer, newerKey := ca.certPEM(t, []string{"a.test"}, time.Now().Add(-time.Hour), time.Now().Add(80*24*time.Hour))
	if err := store.Save("a.test", newer, newerKey, Meta{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c, k := ca.valid(t, "a.test") // 60 days: older than the stored one
	writePair(t, filepath.Join(dir, "a.test.crt"), filepath.Join(dir, "a.test.key"), c, k)
	results, err := Import(store, dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].Skipped == "" || results[0].Problem {
		t.Fatalf("results %+v, want a.test skipped as not needed", results)
	}
	if st, _ := store.Load("a.test"); string(st.ChainPEM) != string(newer) {
		t.Fatal("the newer stored certificate was replaced")
	}
}

func TestImportOfAnUnreadableDirIsAnError(t *testing.T) {
	if _, err := Import(Store{Dir: t.TempDir()}, filepath.Join(t.TempDir(), "missing"), time.Now()); err == nil ||
		!strings.Contains(err.Error(), "missing") {
		t.Fatalf("err = %v, want one naming the directory", err)
	}
}

func TestAnImportedCertificateIsServedNotReorderedAndRenewedAsBerthsOwn(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		dir := t.TempDir()
		// 30 days, of which 25 have passed: due for renewal.
		c, k := e.ca.certPEM(t, []string{"a.test"}, time.Now().Add(-25*24*time.Hour), time.Now().Add(5*24*time.Hour))
		writePair(t, filepath.Join(dir, "a.test.crt"), filepath.Join(dir, "a.test.key"), c, k)
		c, k = e.ca.valid(t, "b.test")
		writePair(t, filepath.Join(dir, "b.test.crt"), filepath.Join(dir, "b.test.key"), c, k)
		if _, err := Import(e.store(), dir, time.Now()); err != nil {
			t.Fatal(err)
		}
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"a.test"}, {"b.test"}}), []string{"a.test", "b.test"})
		time.Sleep(time.Minute)
		if got := m.Certs()["b.test"]; got.Name != "b.test" {
			t.Fatalf("b.test served from %+v, want the imported certificate", got)
		}
		orders := e.ca.ordersSoFar()
		if len(orders) != 1 || !slices.Equal(orders[0], []string{"a.test"}) {
			t.Fatalf("orders %q, want only the renewal of a.test (b.test's imported certificate is valid)", orders)
		}
		// Another account or CA issued it: the renewal does not name it as
		// the certificate it replaces (ARI), which the CA would refuse.
		if e.ca.replace[0] != nil {
			t.Fatal("the renewal of an imported certificate named it in replaces")
		}
		if st, _ := e.store().Load("a.test"); st.Meta.Source != "" {
			t.Fatalf("renewed certificate has source %q, want berth's own", st.Meta.Source)
		}
	})
}
