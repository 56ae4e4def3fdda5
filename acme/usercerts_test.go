package acme

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sirupsen/logrus"
)

// certPEM is a certificate the fake CA signed for names, valid from nb to
// na, with its key, as a chain (leaf + CA) and a PKCS#8 key.
func (f *fakeCA) certPEM(t *testing.T, names []string, nb, na time.Time) (chain, key []byte) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names, NotBefore: nb, NotAfter: na}
	der, err := x509.CreateCertificate(rand.Reader, tpl, f.cert, &k.PublicKey, f.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(k)
	chain = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.cert.Raw})...)
	return chain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

// valid is a certificate for names valid for 60 more days.
func (f *fakeCA) valid(t *testing.T, names ...string) (chain, key []byte) {
	return f.certPEM(t, names, time.Now().Add(-time.Hour), time.Now().Add(60*24*time.Hour))
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// writePair writes chain and key at the two paths.
func writePair(t *testing.T, chainPath, keyPath string, chain, key []byte) {
	write(t, chainPath, chain)
	write(t, keyPath, key)
}

// scanNames scans dir as the daemon does at now and returns the names of
// the valid pairs, one string per certificate, and the rejected files.
func scanNames(t *testing.T, dir string, now time.Time) ([]string, []Rejected) {
	t.Helper()
	pairs, rejected, err := (&userScan{dir: dir}).scan()
	if err != nil {
		t.Fatal(err)
	}
	valid, late := currentPairs(pairs, now)
	var names []string
	for _, p := range valid {
		names = append(names, strings.Join(p.Names, ","))
	}
	slices.Sort(names)
	return names, append(rejected, late...)
}

func TestUserDirFindsNginxProxyAndCertbotLayoutsAndWildcardFileNames(t *testing.T) {
	ca, dir := newFakeCA(t), t.TempDir()
	c, k := ca.valid(t, "a.test")
	writePair(t, filepath.Join(dir, "a.test.crt"), filepath.Join(dir, "a.test.key"), c, k)
	c, k = ca.valid(t, "*.under.test")
	writePair(t, filepath.Join(dir, "_.under.test.crt"), filepath.Join(dir, "_.under.test.key"), c, k)
	c, k = ca.valid(t, "*.star.test", "star.test")
	writePair(t, filepath.Join(dir, "*.star.test.crt"), filepath.Join(dir, "*.star.test.key"), c, k)
	c, k = ca.valid(t, "b.test", "www.b.test")
	writePair(t, filepath.Join(dir, "mysite", "fullchain.pem"), filepath.Join(dir, "mysite", "privkey.pem"), c, k)
	// A file name says nothing: this one is served for its SAN only.
	c, k = ca.valid(t, "real.test")
	writePair(t, filepath.Join(dir, "misnamed.test.crt"), filepath.Join(dir, "misnamed.test.key"), c, k)
	write(t, filepath.Join(dir, "dhparam.pem"), []byte("not a certificate, and not looked at"))

	names, rejected := scanNames(t, dir, time.Now())
	want := []string{"*.star.test,star.test", "*.under.test", "a.test", "b.test,www.b.test", "real.test"}
	if !slices.Equal(names, want) || len(rejected) != 0 {
		t.Fatalf("found %q, rejected %v; want %q and nothing rejected", names, rejected, want)
	}
}

func TestUserDirRejectsEachBadFileWithItsReason(t *testing.T) {
	ca, other, dir := newFakeCA(t), newFakeCA(t), t.TempDir()
	now := time.Now()
	good, goodKey := ca.valid(t, "good.test")
	writePair(t, filepath.Join(dir, "good.test.crt"), filepath.Join(dir, "good.test.key"), good, goodKey)
	_, otherKey := other.valid(t, "mismatch.test")
	c, _ := ca.valid(t, "mismatch.test")
	writePair(t, filepath.Join(dir, "mismatch.test.crt"), filepath.Join(dir, "mismatch.test.key"), c, otherKey)
	c, k := ca.certPEM(t, []string{"expired.test"}, now.Add(-90*24*time.Hour), now.Add(-time.Hour))
	writePair(t, filepath.Join(dir, "expired.test.crt"), filepath.Join(dir, "expired.test.key"), c, k)
	c, k = ca.certPEM(t, []string{"future.test"}, now.Add(time.Hour), now.Add(90*24*time.Hour))
	writePair(t, filepath.Join(dir, "future.test.crt"), filepath.Join(dir, "future.test.key"), c, k)
	writePair(t, filepath.Join(dir, "garbage.test.crt"), filepath.Join(dir, "garbage.test.key"), []byte("hello"), goodKey)
	broken := bytes.Replace(good, []byte("MII"), []byte("XXX"), 1)
	writePair(t, filepath.Join(dir, "broken.test.crt"), filepath.Join(dir, "broken.test.key"), broken, goodKey)
	c, _ = ca.valid(t, "nokey.test")
	write(t, filepath.Join(dir, "nokey.test.crt"), c)
	write(t, filepath.Join(dir, "site", "fullchain.pem"), c)

	names, rejected := scanNames(t, dir, now)
	if !slices.Equal(names, []string{"good.test"}) {
		t.Errorf("valid: %q, want only good.test", names)
	}
	want := map[string]string{
		"mismatch.test.crt":  "the key does not match the certificate",
		"expired.test.crt":   "expired on",
		"future.test.crt":    "not valid yet",
		"garbage.test.crt":   "no PEM certificate",
		"broken.test.crt":    "does not parse",
		"nokey.test.crt":     "missing key: no nokey.test.key",
		"site/fullchain.pem": "missing key: no privkey.pem",
	}
	got := map[string]string{}
	for _, r := range rejected {
		got[userName(dir, r.File)] = r.Reason
	}
	for file, reason := range want {
		if !strings.Contains(got[file], reason) {
			t.Errorf("%s rejected for %q, want a reason with %q", file, got[file], reason)
		}
	}
	if len(got) != len(want) {
		t.Errorf("rejected %v, want exactly %v", got, want)
	}
}

func TestExpiryWarningFromTwoWeeksBeforeOnceADay(t *testing.T) {
	notAfter := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	cases := []struct {
		what      string
		now, last time.Time
		want      bool
	}{
		{"a month before expiry: no warning", notAfter.Add(-30 * day), time.Time{}, false},
		{"just over 14 days before: no warning", notAfter.Add(-14*day - time.Minute), time.Time{}, false},
		{"14 days before, never warned: warn", notAfter.Add(-14 * day), time.Time{}, true},
		{"warned 23 hours ago: quiet", notAfter.Add(-5 * day), notAfter.Add(-5*day - 23*time.Hour), false},
		{"warned a day ago: warn again", notAfter.Add(-5 * day), notAfter.Add(-6 * day), true},
		{"expired: no warning (it is rejected instead)", notAfter, time.Time{}, false},
	}
	for _, c := range cases {
		if got := expiryWarningDue(notAfter, c.now, c.last); got != c.want {
			t.Errorf("%s: got %v", c.what, got)
		}
	}
}

func TestNamesAUserCertificateCoversAreNotOrdered(t *testing.T) {
	groups := []group{{names: []string{"a.test", "www.a.test"}, profile: "p"}, {names: []string{"x.wild.test"}},
		{names: []string{"a.b.wild.test"}}, {names: []string{"other.test"}, challenge: ChallengeDNS01}}
	got := withoutCovered(groups, [][]string{{"a.test"}, {"*.wild.test"}})
	want := []group{{names: []string{"www.a.test"}, profile: "p"}, {names: []string{"a.b.wild.test"}},
		{names: []string{"other.test"}, challenge: ChallengeDNS01}}
	if !slices.EqualFunc(got, want, func(a, b group) bool {
		return slices.Equal(a.names, b.names) && a.challenge == b.challenge && a.profile == b.profile
	}) {
		t.Fatalf("withoutCovered = %+v, want %+v", got, want)
	}
}

func TestAUserCertificateWinsOverAStoredOneAndIsNeverOrderedOrRenewed(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		user := t.TempDir()
		// berth's own certificate for a.test expires later than the user's:
		// the user's still wins.
		c, k := e.ca.certPEM(t, []string{"a.test"}, time.Now().Add(-time.Hour), time.Now().Add(80*24*time.Hour))
		if err := e.store().Save("a.test", c, k, Meta{}); err != nil {
			t.Fatal(err)
		}
		uc, uk := e.ca.valid(t, "a.test", "b.test")
		writePair(t, filepath.Join(user, "a.test.crt"), filepath.Join(user, "a.test.key"), uc, uk)
		m := e.managerWith(t, Options{UserDir: user})
		run(t, m)
		m.Want(Requests([][]string{{"a.test", "b.test", "c.test"}}), []string{"a.test", "b.test", "c.test"})
		time.Sleep(time.Minute)
		certs := m.Certs()
		for _, h := range []string{"a.test", "b.test"} {
			served, err := os.ReadFile(certs[h].Chain)
			if err != nil || !bytes.Equal(served, uc) || !strings.Contains(certs[h].Chain, "/.berth/.user/") {
				t.Fatalf("%s served from %q (%v), want a copy of the user's file in .berth/.user", h, certs[h].Chain, err)
			}
		}
		if orders := e.ca.ordersSoFar(); len(orders) != 1 || !slices.Equal(orders[0], []string{"c.test"}) {
			t.Fatalf("orders %q, want one for c.test only", orders)
		}

		// Replaced by the user: a new path (so nginx reloads), signalled.
		drain(m)
		uc2, uk2 := e.ca.valid(t, "a.test", "b.test")
		synctest.Wait() // no pass reads the pair half-written (cert new, key old)
		writePair(t, filepath.Join(user, "a.test.crt"), filepath.Join(user, "a.test.key"), uc2, uk2)
		changed(t, m, 2*refreshInterval, "the user replaced the file")
		if got := m.Certs()["a.test"]; got.Chain == certs["a.test"].Chain || got.Serial == certs["a.test"].Serial {
			t.Fatalf("after the replacement a.test is served from %q (serial %s), the old path", got.Chain, got.Serial)
		}
		// Removed: berth's own certificate serves a.test again; b.test is
		// ordered now that nothing covers it.
		drain(m)
		os.Remove(filepath.Join(user, "a.test.crt"))
		changed(t, m, 2*refreshInterval, "the user removed the file")
		if got := m.Certs()["a.test"]; !strings.Contains(got.Chain, "/.berth/a.test/") {
			t.Fatalf("after removal a.test is served from %q, want berth's own", got.Chain)
		}
		time.Sleep(time.Minute)
		if orders := e.ca.ordersSoFar(); len(orders) != 2 || !slices.Contains(orders[1], "b.test") {
			t.Fatalf("orders %q, want a second one with b.test", orders)
		}
		if _, err := os.Stat(filepath.Join(user, "a.test.key")); err != nil {
			t.Fatalf("berth touched the user's key file: %v", err)
		}
	})
}

func TestABadUserCertificateIsIgnoredAndTheStoredOneServed(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		user := t.TempDir()
		c, k := e.ca.valid(t, "a.test")
		if err := e.store().Save("a.test", c, k, Meta{}); err != nil {
			t.Fatal(err)
		}
		_, otherKey := newFakeCA(t).valid(t, "a.test")
		uc, _ := e.ca.valid(t, "a.test")
		writePair(t, filepath.Join(user, "a.test.crt"), filepath.Join(user, "a.test.key"), uc, otherKey)
		m := e.managerWith(t, Options{UserDir: user})
		run(t, m)
		m.Want(Requests([][]string{{"a.test"}}), []string{"a.test"})
		time.Sleep(time.Minute)
		if got := m.Certs()["a.test"]; !strings.Contains(got.Chain, "/.berth/a.test/") {
			t.Fatalf("a.test served from %q, want berth's own certificate", got.Chain)
		}
		if n := e.ca.orderCount(); n != 0 {
			t.Fatalf("%d orders; the stored certificate is valid", n)
		}
	})
}

func TestAUserCertificateShowsInTheStatusAsTheUsers(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		user := t.TempDir()
		c, k := e.ca.valid(t, "*.wild.test")
		writePair(t, filepath.Join(user, "_.wild.test.crt"), filepath.Join(user, "_.wild.test.key"), c, k)
		m := e.managerWith(t, Options{UserDir: user})
		run(t, m)
		changed(t, m, time.Minute, "the copy")
		if got := m.Certs()["*.wild.test"]; got.Chain == "" {
			t.Fatalf("Certs() = %v, want the wildcard under *.wild.test", m.Certs())
		}
		p := m.CertStatus(time.Now())
		if len(p.Certificates) != 1 || p.Certificates[0].Source != SourceUser || p.Certificates[0].Name != "_.wild.test.crt" ||
			!p.Certificates[0].NextRenewal.IsZero() {
			t.Fatalf("certificates = %+v, want the user's, with no renewal", p.Certificates)
		}
	})
}

// drain consumes a pending Changed, so the next wait sees a new one.
func drain(m *Manager) {
	select {
	case <-m.Changed():
	default:
	}
}

func TestTheCopyOfARemovedUserCertificateGoesOnceNoFileNamesIt(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		user := t.TempDir()
		c, k := e.ca.valid(t, "a.test")
		writePair(t, filepath.Join(user, "a.test.crt"), filepath.Join(user, "a.test.key"), c, k)
		m := e.managerWith(t, Options{UserDir: user})
		run(t, m)
		changed(t, m, time.Minute, "the copy")
		copied := m.Certs()["a.test"]
		m.InUse([]string{copied.Chain, copied.Key})
		os.Remove(filepath.Join(user, "a.test.crt"))
		changed(t, m, 2*refreshInterval, "the removal")
		time.Sleep(time.Minute)
		if _, err := os.Stat(copied.Chain); err != nil {
			t.Fatalf("the copy went while nginx's config still names it: %v", err)
		}
		m.InUse([]string{})
		time.Sleep(time.Minute)
		if _, err := os.Stat(filepath.Dir(copied.Chain)); !os.IsNotExist(err) {
			t.Fatalf("the copy is still there (%v) after no file names it", err)
		}
	})
}

// servedBytes is the chain served for host, read from the copy.
func servedBytes(t *testing.T, m *Manager, host string) []byte {
	t.Helper()
	data, err := os.ReadFile(m.Certs()[host].Chain)
	if err != nil {
		t.Fatalf("%s: %v", host, err)
	}
	return data
}

func TestAHalfReplacedUserPairKeepsThePreviousCopyServedAndOrdersNothing(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		user := t.TempDir()
		crt, key := filepath.Join(user, "a.test.crt"), filepath.Join(user, "a.test.key")
		c, k := e.ca.valid(t, "a.test")
		writePair(t, crt, key, c, k)
		m := e.managerWith(t, Options{UserDir: user})
		run(t, m)
		m.Want(Requests([][]string{{"a.test"}}), []string{"a.test"})
		changed(t, m, time.Minute, "the copy")
		before := m.Certs()["a.test"]

		// The new certificate is in place, its key not yet: they do not match.
		c2, k2 := e.ca.valid(t, "a.test")
		write(t, crt, c2)
		time.Sleep(time.Minute)
		if got := m.Certs()["a.test"]; got != before {
			t.Fatalf("while the pair does not match, a.test is served from %+v, want the previous copy %+v", got, before)
		}
		if n := e.ca.orderCount(); n != 0 {
			t.Fatalf("%d orders while the user's previous certificate is still valid", n)
		}

		// The key follows: the new pair is served.
		drain(m)
		write(t, key, k2)
		changed(t, m, 2*refreshInterval, "the matching key")
		if got := servedBytes(t, m, "a.test"); !bytes.Equal(got, c2) {
			t.Fatalf("after the key was replaced, a.test is not served the new certificate")
		}

		// Both files removed: berth orders a.test and serves its own.
		drain(m)
		os.Remove(crt)
		os.Remove(key)
		time.Sleep(time.Minute)
		if orders := e.ca.ordersSoFar(); len(orders) != 1 || !slices.Equal(orders[0], []string{"a.test"}) {
			t.Fatalf("orders %q after the user's files were removed, want one for a.test", orders)
		}
		if got := m.Certs()["a.test"]; !strings.Contains(got.Chain, "/.berth/a.test/") {
			t.Fatalf("after removal a.test is served from %q, want berth's own", got.Chain)
		}
	})
}

func TestAnUnreadableUserDirectoryKeepsTheUsersCertificatesServed(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		user := filepath.Join(t.TempDir(), "user")
		c, k := e.ca.valid(t, "a.test", "b.test")
		writePair(t, filepath.Join(user, "a.test.crt"), filepath.Join(user, "a.test.key"), c, k)
		m := e.managerWith(t, Options{UserDir: user})
		run(t, m)
		m.Want(Requests([][]string{{"a.test", "b.test"}}), []string{"a.test", "b.test"})
		changed(t, m, time.Minute, "the copy")
		before := m.Certs()

		// The directory cannot be listed for a while (here: a file stands
		// where it was, so the listing fails with "not a directory"). The
		// swap is not atomic, and in between the directory is gone: wait
		// for the manager to be idle first, so no pass sees that.
		synctest.Wait()
		aside := user + ".aside"
		if err := os.Rename(user, aside); err != nil {
			t.Fatal(err)
		}
		write(t, user, []byte("not a directory"))
		time.Sleep(time.Minute)
		if got := m.Certs(); !maps.Equal(got, before) {
			t.Fatalf("while the directory cannot be read, Certs() = %v, want %v as before", got, before)
		}
		synctest.Wait()
		os.Remove(user)
		if err := os.Rename(aside, user); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		if got := m.Certs(); !maps.Equal(got, before) {
			t.Fatalf("once the directory is back, Certs() = %v, want %v as before", got, before)
		}
		if n := e.ca.orderCount(); n != 0 {
			t.Fatalf("%d orders; the user's certificate never stopped being valid", n)
		}
	})
}

func TestAUserWildcardWinsOverAStoredCertificateForANameItCovers(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		user := t.TempDir()
		c, k := e.ca.certPEM(t, []string{"a.example.com"}, time.Now().Add(-time.Hour), time.Now().Add(80*24*time.Hour))
		if err := e.store().Save("a.example.com", c, k, Meta{}); err != nil {
			t.Fatal(err)
		}
		c, k = e.ca.certPEM(t, []string{"x.a.example.com"}, time.Now().Add(-time.Hour), time.Now().Add(80*24*time.Hour))
		if err := e.store().Save("x.a.example.com", c, k, Meta{}); err != nil {
			t.Fatal(err)
		}
		uc, uk := e.ca.valid(t, "*.example.com")
		writePair(t, filepath.Join(user, "_.example.com.crt"), filepath.Join(user, "_.example.com.key"), uc, uk)
		m := e.managerWith(t, Options{UserDir: user})
		run(t, m)
		changed(t, m, time.Minute, "the copy")
		certs := m.Certs()
		if got := certs["a.example.com"]; got != certs["*.example.com"] || got.Name != "_.example.com.crt" {
			t.Fatalf("a.example.com is served %+v, want the user's wildcard %+v (berth no longer renews its own)", got, certs["*.example.com"])
		}
		if got := certs["x.a.example.com"]; got.Name != "x.a.example.com" {
			t.Fatalf("x.a.example.com is served %+v, want berth's own: a wildcard covers one label", got)
		}
	})
}

func TestTheWildcardOverANameMatchesIt(t *testing.T) {
	for name, want := range map[string]string{"a.example.com": "*.example.com", "a.b.example.com": "*.b.example.com",
		"example.com": "*.com", "*.example.com": "", "localhost": "", "a.": ""} {
		got := wildcardOver(name)
		if got != want || got != "" && !nameMatches(got, name) {
			t.Errorf("wildcardOver(%q) = %q, want %q, which nameMatches", name, got, want)
		}
	}
}

// warnings records the warnings logged about each file.
type warnings struct {
	mu     sync.Mutex
	byFile map[string]int
}

func (w *warnings) Levels() []logrus.Level { return []logrus.Level{logrus.WarnLevel} }

func (w *warnings) Fire(e *logrus.Entry) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if f, ok := e.Data["file"].(string); ok {
		w.byFile[f]++
	}
	return nil
}

func (w *warnings) of(file string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.byFile[file]
}

// The rejection of a user file is logged once while it lasts, and again
// when the file breaks the same way after having been fixed or removed in
// between: that log line is all the user sees of it, so it is what is
// tested here.
func TestAUserFileThatBreaksAgainTheSameWayIsReportedAgain(t *testing.T) {
	ca, user := newFakeCA(t), t.TempDir()
	e := newEnv(t)
	crt, key := filepath.Join(user, "a.test.crt"), filepath.Join(user, "a.test.key")
	c, k := ca.valid(t, "a.test")
	_, wrong := ca.valid(t, "a.test")
	writePair(t, crt, key, c, k)
	m := e.managerWith(t, Options{UserDir: user})
	w := &warnings{byFile: map[string]int{}}
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.AddHook(w)
	m.opts.Log = logrus.NewEntry(l)
	pass := func() {
		m.refreshUser(time.Now())
		m.copyUser(time.Now())
	}
	steps := []struct {
		what string
		do   func()
		want int // warnings about crt so far
	}{
		{"a valid pair", func() {}, 0},
		{"the wrong key", func() { write(t, key, wrong) }, 1},
		{"still the wrong key", func() {}, 1},
		{"the right key again", func() { write(t, key, k) }, 1},
		{"the same wrong key again", func() { write(t, key, wrong) }, 2},
		{"both files removed", func() { os.Remove(crt); os.Remove(key) }, 2},
		{"the mismatched pair put back", func() { writePair(t, crt, key, c, wrong) }, 3},
		{"removed", func() { os.Remove(crt); os.Remove(key) }, 3},
		{"the mismatched pair put back again", func() { writePair(t, crt, key, c, wrong) }, 4},
	}
	for _, s := range steps {
		s.do()
		pass()
		if got := w.of(crt); got != s.want {
			t.Fatalf("after %s: %d warnings about the file, want %d", s.what, got, s.want)
		}
	}
}
