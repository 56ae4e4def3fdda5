package acme

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

func TestARenewalKeepsAFailingNameUntilTheCertificateIsCloseToExpiry(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		e.ca.life = time.Hour // renewal from 27-30 min, close to expiry at 50 min
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"a.test", "b.test"}}), []string{"a.test", "b.test"})
		changed(t, m, time.Minute, "the order")
		first, _ := e.store().Load("a.test")
		e.ca.setFail("b.test", true)
		split := splitAt(first.Leaf)

		time.Sleep(time.Until(split) - time.Second)
		synctest.Wait()
		orders := e.ca.ordersSoFar()
		if len(orders) < 3 {
			t.Fatalf("orders %v: want the renewal retried with b.test during its backoff", orders)
		}
		for _, o := range orders {
			if !slices.Contains(o, "b.test") {
				t.Fatalf("orders %v: a renewal without b.test before the certificate was close to expiry", orders)
			}
		}
		if got := m.Certs()["b.test"].Serial; got != first.Leaf.SerialNumber.Text(16) {
			t.Fatal("b.test lost its certificate while it was still valid")
		}

		time.Sleep(5 * time.Second)
		orders = e.ca.ordersSoFar()
		if last := orders[len(orders)-1]; !slices.Equal(last, []string{"a.test"}) {
			t.Fatalf("orders %v: close to expiry, a.test must be renewed without the failing b.test", orders)
		}
		certs := m.Certs()
		if certs["a.test"].Serial == first.Leaf.SerialNumber.Text(16) {
			t.Fatal("a.test was not renewed")
		}
		if certs["b.test"].Serial != first.Leaf.SerialNumber.Text(16) {
			t.Fatal("b.test must keep the old certificate until it expires")
		}
	})
}

func TestAHostListThatShrinksPlacesNoOrderWhileAValidCertificateCoversIt(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"a.test", "b.test"}}), nil)
		changed(t, m, time.Minute, "the order")
		m.Want(Requests([][]string{{"b.test"}}), nil) // a.test, the certificate's name, goes away
		time.Sleep(24 * time.Hour)
		if orders := e.ca.ordersSoFar(); len(orders) != 1 {
			t.Fatalf("orders %v: b.test is covered by a valid certificate", orders)
		}
		if got := m.Certs()["b.test"]; got.Name != "a.test" {
			t.Fatalf("Certs()[b.test] = %+v, want the a.test certificate", got)
		}
	})
}

func TestChangedFiresWhenAnotherProcessRenewsOrRevokes(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"a.test"}}), []string{"a.test"})
		changed(t, m, time.Minute, "the order")
		before := m.Certs()["a.test"]

		// "berth renew --force" and "berth revoke" are separate processes
		// sharing only the files.
		if _, err := RenewHost(context.Background(), e.store(), e.state, e.ca, "a.test", true, time.Now()); err != nil {
			t.Fatal(err)
		}
		changed(t, m, 3*time.Second, "berth renew --force")
		if after := m.Certs()["a.test"]; after.Serial == before.Serial {
			t.Fatal("Changed fired but Certs() still gives the old certificate")
		}
		if _, err := RevokeHost(context.Background(), e.store(), e.state, e.ca, "a.test"); err != nil {
			t.Fatal(err)
		}
		changed(t, m, 3*time.Second, "berth revoke")
		if _, ok := m.Certs()["a.test"]; ok {
			t.Fatal("a revoked certificate is still offered")
		}
		time.Sleep(time.Hour)
		if n := e.ca.orderCount(); n != 2 {
			t.Fatalf("%d orders: the revoked name was ordered again", n)
		}
	})
}

func TestPlanFindsAnyValidCertificateCoveringTheNames(t *testing.T) {
	now := t0
	ci := &certInfo{stored: &Stored{Name: "old-first.test", Meta: Meta{Domains: []string{"b.test", "old-first.test"}}},
		renewAt: now.Add(time.Hour)}
	ci.stored.Leaf = leafFor(now.Add(-time.Hour), now.Add(90*24*time.Hour))
	jobs, next := planJobs(groupRequests(Requests([][]string{{"b.test"}}), ""), map[string]*certInfo{"old-first.test": ci}, nil, map[string]bool{}, now)
	if len(jobs) != 0 || !next.Equal(now.Add(time.Hour)) {
		t.Fatalf("jobs %+v, next %v: want none until the covering certificate's renewal", jobs, next)
	}
}
