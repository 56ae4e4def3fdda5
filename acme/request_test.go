package acme

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGroupRequestsSayHowEachCertificateIsOrdered(t *testing.T) {
	for _, tc := range []struct {
		name string
		reqs []CertRequest
		want []group
	}{
		{"a plain request is HTTP-01 with the default profile",
			[]CertRequest{{Names: []string{"a.test"}}},
			[]group{{names: []string{"a.test"}, challenge: ChallengeHTTP01, profile: "default", fallback: "default"}}},
		{"a wildcard is always DNS-01",
			[]CertRequest{{Names: []string{"w.test", "*.w.test"}, Challenge: ChallengeHTTP01}},
			[]group{{names: []string{"*.w.test", "w.test"}, challenge: ChallengeDNS01, profile: "default", fallback: "default"}}},
		{"one DNS-01 request makes its merged group DNS-01",
			[]CertRequest{{Names: []string{"a.test", "b.test"}}, {Names: []string{"b.test"}, Challenge: ChallengeDNS01}},
			[]group{{names: []string{"a.test", "b.test"}, challenge: ChallengeDNS01, profile: "default", fallback: "default"}}},
		{"the profile of a merged group is the first set one by sorted names, whatever the input order",
			[]CertRequest{{Names: []string{"c.test", "b.test"}, Profile: "late"}, {Names: []string{"a.test"}}, {Names: []string{"b.test", "a.test"}, Profile: "early"}},
			[]group{{names: []string{"a.test", "b.test", "c.test"}, challenge: ChallengeHTTP01, profile: "early", fallback: "default"}}},
		{"separate requests keep their own choices",
			[]CertRequest{{Names: []string{"x.test"}, Profile: "shortlived"}, {Names: []string{"y.test"}, Challenge: ChallengeDNS01}},
			[]group{{names: []string{"x.test"}, challenge: ChallengeHTTP01, profile: "shortlived", fallback: "default"},
				{names: []string{"y.test"}, challenge: ChallengeDNS01, profile: "default", fallback: "default"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := groupRequests(tc.reqs, "default")
			if !slices.EqualFunc(got, tc.want, equalGroup) {
				t.Fatalf("groups %+v, want %+v", got, tc.want)
			}
			reversed := slices.Clone(tc.reqs)
			slices.Reverse(reversed)
			if again := groupRequests(reversed, "default"); !slices.EqualFunc(again, got, equalGroup) {
				t.Fatalf("input order changed the groups: %+v, then %+v", got, again)
			}
		})
	}
}

func TestPlanRenewsACertificateWhoseProfileChanged(t *testing.T) {
	now := t0
	certs := func(profile string) map[string]*certInfo {
		return map[string]*certInfo{"a.test": {stored: &Stored{Name: "a.test", Meta: Meta{Domains: []string{"a.test"}, Profile: profile},
			Leaf: leafFor(now.Add(-24*time.Hour), now.Add(60*24*time.Hour))}, renewAt: now.Add(30 * 24 * time.Hour)}}
	}
	for _, tc := range []struct {
		name                      string
		stored, label, defaultSet string
		renew                     bool
	}{
		{"same profile: not due", "shortlived", "shortlived", "", false},
		{"label names another profile: due", "classic", "shortlived", "", true},
		{"label removed, back to the default: due", "shortlived", "", "classic", true},
		{"the default changed: due", "classic", "", "tlsserver", true},
		{"no recorded profile counts as the default: not due", "", "", "classic", false},
		{"no recorded profile, label names another: due", "", "shortlived", "classic", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			groups := groupRequests([]CertRequest{{Names: []string{"a.test"}, Profile: tc.label}}, tc.defaultSet)
			jobs, _ := planJobs(groups, certs(tc.stored), nil, map[string]bool{}, now)
			if got := len(jobs) == 1 && jobs[0].renewal; got != tc.renew {
				t.Fatalf("jobs %+v; want a renewal: %v", jobs, tc.renew)
			}
			if tc.renew && (jobs[0].order.Profile != groups[0].profile || jobs[0].replaces == nil) {
				t.Fatalf("renewal %+v must carry the wanted profile %q and replace the old certificate", jobs[0], groups[0].profile)
			}
		})
	}
}

func TestTheIssuersOwnDefaultProfileIsNoChange(t *testing.T) {
	e := newEnv(t)
	e.ca.profile = "issuer-default" // what the CA chose when asked for none
	o := orderer{store: e.store(), issuer: e.ca, update: bookUpdate(newNameBook(e.state, quietLog()))}
	st, err := o.place(context.Background(), "a.test", []string{"a.test"}, OrderOptions{}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Meta.Profile != "" {
		t.Fatalf("meta profile %q, want what was asked for: none", st.Meta.Profile)
	}
	ci := &certInfo{stored: st, renewAt: st.Leaf.NotAfter.Add(-time.Hour)}
	if jobs, _ := planJobs(groupRequests(Requests([][]string{{"a.test"}}), ""), map[string]*certInfo{"a.test": ci}, nil, map[string]bool{}, time.Now()); len(jobs) != 0 {
		t.Fatalf("jobs %+v: the CA's own default profile was taken for a profile change", jobs)
	}
}

func TestPlanOrdersWildcardsByDNS01(t *testing.T) {
	groups := groupRequests([]CertRequest{{Names: []string{"*.w.test"}}, {Names: []string{"a.test"}, Challenge: ChallengeDNS01, Profile: "p"}, {Names: []string{"b.test"}}}, "")
	jobs, _ := planJobs(groups, nil, nil, map[string]bool{}, t0)
	got := map[string]OrderOptions{}
	for _, j := range jobs {
		got[j.cert] = j.order
	}
	want := map[string]OrderOptions{"_.w.test": {Challenge: ChallengeDNS01}, "a.test": {Challenge: ChallengeDNS01, Profile: "p"}, "b.test": {Challenge: ChallengeHTTP01}}
	if len(got) != len(want) {
		t.Fatalf("jobs %+v", jobs)
	}
	for cert, o := range want {
		if got[cert] != o {
			t.Errorf("%s ordered with %+v, want %+v", cert, got[cert], o)
		}
	}
}

func TestAWildcardCertificateIsStoredUnderAnUnderscore(t *testing.T) {
	for in, want := range map[string]string{"*.w.test": "_.w.test", "a.test": "a.test"} {
		if got := CertName(in); got != want {
			t.Errorf("CertName(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestWildcardsAndDNS01NeedADNSProvider(t *testing.T) {
	reqs := []CertRequest{{Names: []string{"*.w.test", "w.test"}}, {Names: []string{"d.test"}, Challenge: ChallengeDNS01}, {Names: []string{"h.test"}}, {Names: []string{"*.test"}}}
	for _, tc := range []struct {
		dns01 bool
		want  [][]string
	}{
		{false, [][]string{{"h.test"}, {"w.test"}}},
		{true, [][]string{{"*.w.test", "w.test"}, {"d.test"}, {"h.test"}}}, // *.test stays unissuable: the rest is one label
	} {
		bubble(t, func(t *testing.T, e *env) {
			m := e.managerWith(t, Options{DNS01: tc.dns01})
			m.Want(reqs, nil)
			var got [][]string
			for _, g := range m.groups {
				got = append(got, g.names)
			}
			if !slices.EqualFunc(got, tc.want, slices.Equal[[]string]) {
				t.Fatalf("with a DNS provider %v: wanted groups %v, want %v", tc.dns01, got, tc.want)
			}
		})
	}
}

func TestDNS01OrdersSkipTheSelfCheckAndCarryTheirOptions(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		var probed []string
		probe := ProbeFunc(func(_ context.Context, host, path string) (string, error) {
			probed = append(probed, host)
			return "", context.DeadlineExceeded // nothing answers over HTTP
		})
		m := e.managerWith(t, Options{Probe: probe, DNS01: true, Profile: "classic"})
		run(t, m)
		m.Want([]CertRequest{{Names: []string{"*.w.test"}}, {Names: []string{"internal.test"}, Challenge: ChallengeDNS01, Profile: "shortlived"}}, nil)
		changed(t, m, time.Minute, "the orders")
		time.Sleep(time.Second)
		if len(probed) != 0 {
			t.Fatalf("DNS-01 names were probed over HTTP: %v", probed)
		}
		if got := m.Certs(); len(got) != 2 {
			t.Fatalf("Certs() = %v, want both names", got)
		}
		opts := e.ca.optionsSoFar()
		slices.SortFunc(opts, func(a, b OrderOptions) int { return strings.Compare(a.Profile, b.Profile) })
		want := []OrderOptions{{Challenge: ChallengeDNS01, Profile: "classic"}, {Challenge: ChallengeDNS01, Profile: "shortlived"}}
		if !slices.Equal(opts, want) {
			t.Fatalf("orders placed with %+v, want %+v", opts, want)
		}
		st, err := e.store().Load("internal.test")
		if err != nil || st.Meta.Profile != "shortlived" || st.Meta.Challenge != ChallengeDNS01 {
			t.Fatalf("meta %+v (%v): want the profile and challenge it was ordered with", st.Meta, err)
		}
	})
}

func TestAFailingDNS01NameBacksOffLikeHTTP01(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		e.ca.fail["*.bad.test"] = true
		m := e.managerWith(t, Options{DNS01: true})
		run(t, m)
		m.Want([]CertRequest{{Names: []string{"*.bad.test"}}, {Names: []string{"ok.test"}, Challenge: ChallengeDNS01}}, nil)
		changed(t, m, time.Minute, "the orders")
		if _, ok := m.Certs()["ok.test"]; !ok {
			t.Fatalf("ok.test was held back by *.bad.test: %v", m.Certs())
		}
		if st := e.names(t)["*.bad.test"]; st.Failures != 1 || time.Until(st.NextAttempt) != 5*time.Minute {
			t.Fatalf("*.bad.test state %+v, want one failure retried in 5m", st)
		}
		before := e.ca.orderCount()
		time.Sleep(4 * time.Minute)
		if n := e.ca.orderCount(); n != before {
			t.Fatalf("%d orders during the backoff", n-before)
		}
		time.Sleep(2 * time.Minute)
		if n := e.ca.orderCount(); n != before+1 {
			t.Fatalf("%d orders after the backoff, want 1 retry", n-before)
		}
	})
}

func TestRenewHostOrdersAsTheCertificateWasOrdered(t *testing.T) {
	e := newEnv(t)
	issued, err := e.ca.Obtain(context.Background(), []string{"*.w.test"}, OrderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store().Save("_.w.test", issued.ChainPEM, issued.KeyPEM, Meta{Challenge: ChallengeDNS01, Profile: "shortlived"}); err != nil {
		t.Fatal(err)
	}
	if _, err := RenewHost(context.Background(), e.store(), e.state, e.ca, "*.w.test", true, time.Now()); err != nil {
		t.Fatal(err)
	}
	opts := e.ca.optionsSoFar()
	if len(opts) != 2 || opts[1] != (OrderOptions{Challenge: ChallengeDNS01, Profile: "shortlived"}) {
		t.Fatalf("renew placed %+v, want DNS-01 with the stored profile", opts)
	}
}
