package acme

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sirupsen/logrus"
)

// env is one daemon's world: its directories and its CA. Loop tests run
// inside a synctest bubble, so the manager's timers run on a fake clock
// and no test sleeps for real.
type env struct {
	certs, state, webroot string
	ca                    *fakeCA
}

func newEnv(t *testing.T) *env {
	return &env{certs: t.TempDir(), state: t.TempDir(), webroot: t.TempDir(), ca: newFakeCA(t)}
}

// bubble runs f in a synctest bubble with a fresh env.
func bubble(t *testing.T, f func(t *testing.T, e *env)) {
	synctest.Test(t, func(t *testing.T) { f(t, newEnv(t)) })
}

func (e *env) manager(t *testing.T, probe Prober) *Manager {
	return e.managerWith(t, Options{Probe: probe})
}

func (e *env) store() Store { return Store{Dir: e.certs, Log: quietLog()} }

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func (e *env) managerWith(t *testing.T, o Options) *Manager {
	o.Store, o.Issuer, o.Webroot, o.StateDir, o.Log = e.store(), e.ca, e.webroot, e.state, quietLog()
	m, err := NewManager(o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (e *env) names(t *testing.T) map[string]NameState {
	t.Helper()
	names, _, err := newNameBook(e.state, quietLog()).read()
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func run(t *testing.T, m *Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// changed waits for Changed within d of the bubble's clock.
func changed(t *testing.T, m *Manager, d time.Duration, what string) {
	t.Helper()
	select {
	case <-m.Changed():
	case <-time.After(d):
		t.Fatalf("Changed() did not fire within %v after %s", d, what)
	}
}

func TestObtainStoresFilesAndSurvivesRestartWithoutReissue(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"a.test", "www.a.test"}}), nil)
		changed(t, m, time.Minute, "the first order")
		certs := m.Certs()
		if len(certs) != 2 || certs["a.test"] != certs["www.a.test"] || certs["a.test"].Name != "a.test" {
			t.Fatalf("Certs() = %v, want both names on one certificate", certs)
		}
		if fi, err := os.Stat(certs["a.test"].Key); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("private key: %v, mode %v; want 0600", err, fi.Mode().Perm())
		}
		st, err := e.store().Load("a.test")
		if err != nil || !slices.Equal(st.Meta.Domains, []string{"a.test", "www.a.test"}) {
			t.Fatalf("stored: %v %+v", err, st)
		}
		if got := certs["a.test"].Serial; got != st.Leaf.SerialNumber.Text(16) {
			t.Fatalf("Serial %q, want the leaf's %q", got, st.Leaf.SerialNumber.Text(16))
		}

		restarted := e.manager(t, nil)
		if got := restarted.Certs(); len(got) != 2 {
			t.Fatalf("after restart Certs() = %v; stored certificates must be served at once", got)
		}
		run(t, restarted)
		restarted.Want(Requests([][]string{{"a.test", "www.a.test"}}), nil)
		time.Sleep(time.Hour)
		if n := e.ca.orderCount(); n != 1 {
			t.Fatalf("%d orders after a restart; a valid certificate must not be re-issued", n)
		}
	})
}

func TestAFailingNameDoesNotHoldBackTheOthersAndItsBackoffPersists(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		e.ca.fail["bad.test"] = true
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"bad.test", "good.test"}}), nil)
		changed(t, m, time.Minute, "the order")
		certs := m.Certs()
		if _, ok := certs["good.test"]; !ok || len(certs) != 1 {
			t.Fatalf("Certs() = %v, want good.test only", certs)
		}
		bad := e.names(t)["bad.test"]
		if bad.Failures != 1 || time.Until(bad.NextAttempt) != 5*time.Minute || !strings.Contains(bad.LastError, "validation failed") {
			t.Fatalf("bad.test state %+v", bad)
		}
		// A restart must not retry bad.test before its backoff ends.
		before := e.ca.orderCount()
		restarted := e.manager(t, nil)
		run(t, restarted)
		restarted.Want(Requests([][]string{{"bad.test", "good.test"}}), nil)
		time.Sleep(4 * time.Minute)
		if n := e.ca.orderCount(); n != before {
			t.Fatalf("restart placed %d new orders during backoff", n-before)
		}
	})
}

func TestBackoffDoublesFromFiveMinutes(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		e.ca.fail["a.test"] = true
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"a.test"}}), nil)
		time.Sleep(2*time.Hour + time.Minute)
		synctest.Wait()
		e.ca.mu.Lock()
		times := slices.Clone(e.ca.times)
		e.ca.mu.Unlock()
		want := []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute}
		if len(times) != len(want)+1 {
			t.Fatalf("%d orders in 2h01m, want %d (at 0, 5, 15, 35 and 75 minutes)", len(times), len(want)+1)
		}
		for i, w := range want {
			if got := times[i+1].Sub(times[i]); got != w {
				t.Errorf("retry %d came after %v, want %v", i+1, got, w)
			}
		}
	})
}

func TestRateLimitHonoursRetryAfter(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		e.ca.limit = 3 * time.Hour
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"a.test"}}), nil)
		time.Sleep(time.Minute)
		if got := time.Until(e.names(t)["a.test"].NextAttempt); got != 3*time.Hour-time.Minute {
			t.Fatalf("retry in %v, want the CA's 3h", got)
		}
		time.Sleep(3*time.Hour - 2*time.Minute)
		if n := e.ca.orderCount(); n != 1 {
			t.Fatalf("%d orders before the CA's Retry-After", n)
		}
	})
}

func TestSelfCheckStopsOrdersForABrokenChallengePath(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		probe := ProbeFunc(func(_ context.Context, host, path string) (string, error) {
			if host == "broken.test" {
				return "<html>welcome to nginx</html>", nil
			}
			data, err := os.ReadFile(e.webroot + path)
			return string(data), err
		})
		m := e.manager(t, probe)
		run(t, m)
		m.Want(Requests([][]string{{"broken.test", "ok.test"}}), nil)
		changed(t, m, time.Minute, "the order")
		for _, order := range e.ca.ordersSoFar() {
			if slices.Contains(order, "broken.test") {
				t.Fatalf("broken.test reached the CA: %v", e.ca.orders)
			}
		}
		if st := e.names(t)["broken.test"]; !strings.Contains(st.LastError, "self-check") {
			t.Fatalf("broken.test state %+v", st)
		}
		if entries, _ := os.ReadDir(e.webroot + "/.well-known/acme-challenge"); len(entries) != 0 {
			t.Fatalf("probe files left in the webroot: %v", entries)
		}
	})
}

func TestUnissuableNamesAreNeverOrdered(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"app.localhost", "intranet", "10.0.0.1"}, {"real.test"}}), nil)
		changed(t, m, time.Minute, "the order")
		if orders := e.ca.ordersSoFar(); len(orders) != 1 || !slices.Equal(orders[0], []string{"real.test"}) {
			t.Fatalf("orders %v", orders)
		}
	})
}

func TestRenewalHappensAtThePlannedTimeAndChangesThePaths(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		e.ca.life = time.Hour // renews at half life, jitter up to 3 minutes earlier
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"a.test"}}), nil)
		changed(t, m, time.Minute, "the first order")
		first, _ := e.store().Load("a.test")
		before := m.Certs()["a.test"]
		m.mu.Lock()
		renewAt := m.certs["a.test"].renewAt
		m.mu.Unlock()
		if d := renewAt.Sub(first.Leaf.NotBefore); d > 30*time.Minute || d < 27*time.Minute {
			t.Fatalf("renewal planned %v after issue, want 27-30 minutes", d)
		}
		time.Sleep(time.Until(renewAt) - time.Second)
		synctest.Wait()
		if n := e.ca.orderCount(); n != 1 {
			t.Fatalf("%d orders a second before the planned renewal", n)
		}
		changed(t, m, 2*time.Second, "the planned renewal time")
		if n := e.ca.orderCount(); n != 2 {
			t.Fatalf("%d orders after the planned renewal time, want 2", n)
		}
		e.ca.mu.Lock()
		replaced := e.ca.replace[1]
		e.ca.mu.Unlock()
		if replaced == nil || replaced.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
			t.Fatal("the renewal did not name the certificate it replaces")
		}
		after := m.Certs()["a.test"]
		if after.Chain == before.Chain || after.Key == before.Key || after.Serial == before.Serial {
			t.Fatalf("a renewal must change the paths nginx is given: before %+v, after %+v", before, after)
		}
	})
}

func TestUnusedCertificatesAreKeptForTheGracePeriodThenRemoved(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		const grace = 3 * time.Hour
		m := e.managerWith(t, Options{UnusedGrace: grace})
		run(t, m)
		m.Want(Requests([][]string{{"gone.test"}, {"kept.test"}}), []string{"gone.test", "kept.test"})
		time.Sleep(time.Minute)
		if len(m.Certs()) != 2 {
			t.Fatalf("Certs() = %v", m.Certs())
		}
		<-m.Changed() // the stores
		// gone.test's container stops: no site uses it any more.
		m.Want(Requests([][]string{{"kept.test"}}), []string{"kept.test"})
		time.Sleep(grace - time.Hour) // last use is kept to the hour
		if _, ok := m.Certs()["gone.test"]; !ok {
			t.Fatal("a certificate was dropped before the grace period")
		}
		changed(t, m, time.Hour+time.Minute, "the grace period")
		if _, err := e.store().Load("gone.test"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Load(gone.test) = %v, want ErrNotFound", err)
		}
		if _, ok := m.Certs()["gone.test"]; ok {
			t.Fatal("a removed certificate is still offered")
		}
		if _, err := e.store().Load("kept.test"); err != nil {
			t.Fatalf("a certificate in use was removed: %v", err)
		}
	})
}

func TestAFailedRenewalKeepsTheOldCertificateInService(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		e.ca.life = time.Hour
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"a.test"}}), []string{"a.test"})
		changed(t, m, time.Minute, "the order")
		first, _ := e.store().Load("a.test")
		e.ca.setFail("a.test", true)
		time.Sleep(31 * time.Minute)
		if e.names(t)["a.test"].Failures == 0 {
			t.Fatal("no failed renewal")
		}
		if got := m.Certs()["a.test"]; got.Serial != first.Leaf.SerialNumber.Text(16) {
			t.Fatalf("Certs()[a.test] = %+v: a failed renewal took the old certificate out of service", got)
		}
	})
}

func TestDirectoryURLShortcuts(t *testing.T) {
	for in, want := range map[string]string{
		"letsencrypt":                  "https://acme-v02.api.letsencrypt.org/directory",
		"letsencrypt-staging":          "https://acme-staging-v02.api.letsencrypt.org/directory",
		"https://ca.example/directory": "https://ca.example/directory",
	} {
		if got := DirectoryURL(in); got != want {
			t.Errorf("DirectoryURL(%q) = %q, want %q", in, got, want)
		}
	}
}
