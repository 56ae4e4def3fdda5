package acme

import (
	"crypto/x509"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func TestRenewAt(t *testing.T) {
	day := 24 * time.Hour
	cases := []struct {
		name      string
		life      time.Duration
		ari       *Window
		jitter    float64
		wantAfter time.Duration // from notBefore
	}{
		{"90 days renew with a third left", 90 * day, nil, 0, 60 * day},
		{"jitter only moves renewal earlier", 90 * day, nil, 0.99, 60*day - time.Duration(0.99*float64(3*day))},
		{"6-day certificates renew at half life", 6 * day, nil, 0, 3 * day},
		{"a sane ARI window wins", 90 * day, &Window{t0.Add(10 * day), t0.Add(12 * day)}, 0.5, 11 * day},
		{"an empty ARI window is ignored", 90 * day, &Window{}, 0, 60 * day},
		{"an inverted ARI window is ignored", 90 * day, &Window{t0.Add(12 * day), t0.Add(10 * day)}, 0, 60 * day},
		{"an ARI window starting after expiry is ignored", 90 * day, &Window{t0.Add(91 * day), t0.Add(92 * day)}, 0, 60 * day},
		{"an ARI window in the past means renew now", 90 * day, &Window{t0.Add(-3 * day), t0.Add(-2 * day)}, 0, -3 * day},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := RenewAt(t0, t0.Add(tc.life), tc.ari, tc.jitter)
			if want := t0.Add(tc.wantAfter); !got.Equal(want) {
				t.Fatalf("RenewAt = %v, want %v", got, want)
			}
		})
	}
}

func TestRetryAfterDoublesToADayAndHonoursTheCA(t *testing.T) {
	for n, want := range map[int]time.Duration{1: 5 * time.Minute, 2: 10 * time.Minute, 3: 20 * time.Minute, 20: 24 * time.Hour} {
		if got := RetryAfter(t0, n, 0).Sub(t0); got != want {
			t.Errorf("failure %d: retry in %v, want %v", n, got, want)
		}
	}
	if got := RetryAfter(t0, 1, 3*time.Hour).Sub(t0); got != 3*time.Hour {
		t.Errorf("a CA Retry-After of 3h gave %v", got)
	}
}

func TestUnissuable(t *testing.T) {
	for name, bad := range map[string]bool{
		"localhost": true, "app.localhost": true, "192.0.2.1": true, "[2001:db8::1]": true, "intranet": true,
		"*.example.com": true, "example.*": true,
		"app.example.com": false, "a.test": false,
	} {
		if got := Unissuable(name) != ""; got != bad {
			t.Errorf("Unissuable(%q) = %v", name, got)
		}
	}
	// A DNS provider is no help for a name ending in a wildcard: the line
	// must not tell the user to configure one.
	if why := Unissuable("example.*"); strings.Contains(why, "BERTH_ACME_DNS_PROVIDER") {
		t.Errorf("Unissuable(example.*) = %q", why)
	}
}

func TestGroupsMergeOverlappingHostLists(t *testing.T) {
	got := Groups([][]string{{"b.test", "c.test"}, {"a.test", "b.test"}, {"x.test"}, {"x.test"}})
	want := [][]string{{"a.test", "b.test", "c.test"}, {"x.test"}}
	if !slices.EqualFunc(got, want, slices.Equal[[]string]) {
		t.Fatalf("Groups = %v, want %v", got, want)
	}
}

func TestPlanPutsNewCertificatesBeforeRenewalsAndSkipsBackedOffNames(t *testing.T) {
	now := t0
	stored := func(name string, renewAt time.Time) *certInfo {
		return &certInfo{stored: &Stored{Name: name, Meta: Meta{Domains: []string{name}},
			Leaf: &x509.Certificate{NotBefore: now.Add(-80 * 24 * time.Hour), NotAfter: now.Add(10 * 24 * time.Hour)}}, renewAt: renewAt}
	}
	certs := map[string]*certInfo{
		"due.test":   stored("due.test", now.Add(-time.Hour)),
		"later.test": stored("later.test", now.Add(48*time.Hour)),
	}
	names := map[string]NameState{"wait.test": {NextAttempt: now.Add(time.Hour)}}
	groups := groupRequests(Requests([][]string{{"due.test"}, {"later.test"}, {"new.test"}, {"wait.test"}}), "")
	jobs, next := planJobs(groups, certs, names, map[string]bool{}, now)
	if len(jobs) != 2 || jobs[0].cert != "new.test" || jobs[0].renewal || jobs[1].cert != "due.test" || !jobs[1].renewal {
		t.Fatalf("jobs %+v, want new.test then the renewal of due.test", jobs)
	}
	if !next.Equal(now.Add(time.Hour)) {
		t.Fatalf("next look at %v, want when wait.test's backoff ends", next)
	}
	if jobs, _ := planJobs(groups, certs, names, map[string]bool{"new.test": true}, now); len(jobs) != 1 {
		t.Fatalf("a running order was planned again: %+v", jobs)
	}
}

func leafFor(notBefore, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{NotBefore: notBefore, NotAfter: notAfter}
}

func TestPlanPlacesOneOrderPerCertificateWhenGroupsShareOne(t *testing.T) {
	now := t0
	shared := &certInfo{stored: &Stored{Name: "a.test", Meta: Meta{Domains: []string{"a.test", "b.test"}},
		Leaf: leafFor(now.Add(-60*24*time.Hour), now.Add(30*24*time.Hour))}, renewAt: now.Add(-time.Hour)}
	jobs, _ := planJobs(groupRequests(Requests([][]string{{"a.test"}, {"b.test"}}), ""), map[string]*certInfo{"a.test": shared}, nil, map[string]bool{}, now)
	if len(jobs) != 1 || jobs[0].cert != "a.test" {
		t.Fatalf("jobs %+v: two groups sharing one certificate must not race two orders onto its name", jobs)
	}
}
