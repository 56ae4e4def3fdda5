package controller

import (
	"testing"
	"time"
)

func TestLeaseFromLabels(t *testing.T) {
	exp := time.Date(2026, 12, 5, 23, 0, 0, 123456789, time.UTC)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   leaseView
	}{
		{"no labels is no lease", nil, leaseView{}},
		{"other labels are no lease", map[string]string{"proxy.host": "a"}, leaseView{}},
		{"a holder and an expiry are a held lease",
			map[string]string{LeaseHolderLabel: "A", LeaseExpiresLabel: exp.Format(time.RFC3339Nano)},
			leaseView{Present: true, Holder: "A", Expires: exp}},
		{"an expiry without a holder is a released lease",
			map[string]string{LeaseExpiresLabel: exp.Format(time.RFC3339Nano)},
			leaseView{Present: true, Expires: exp}},
		{"an unreadable expiry reads as long expired",
			map[string]string{LeaseHolderLabel: "A", LeaseExpiresLabel: "tomorrow"},
			leaseView{Present: true, Holder: "A"}},
		{"a holder without an expiry is present and expired",
			map[string]string{LeaseHolderLabel: "A"},
			leaseView{Present: true, Holder: "A"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := leaseFromLabels(tc.labels)
			if got.Present != tc.want.Present || got.Holder != tc.want.Holder || !got.Expires.Equal(tc.want.Expires) {
				t.Errorf("leaseFromLabels(%v) = %+v, want %+v", tc.labels, got, tc.want)
			}
		})
	}
}

func TestLeaseDecide(t *testing.T) {
	const ttl, grace = 15 * time.Second, 2 * time.Second
	now := time.Date(2026, 12, 5, 23, 0, 0, 0, time.UTC)
	held := func(holder string, expires time.Time) leaseView {
		return leaseView{Present: true, Holder: holder, Expires: expires}
	}
	for _, tc := range []struct {
		name        string
		v           leaseView
		absentSince time.Time
		take        bool
		retryAt     time.Time
	}{
		{"B may not take A's lease before it expires", held("A", now.Add(10*time.Second)), time.Time{}, false, now.Add(12 * time.Second)},
		{"B may not take A's lease just after it expires, within the skew grace", held("A", now.Add(-time.Second)), time.Time{}, false, now.Add(time.Second)},
		{"B takes A's lease once expiry plus grace has passed by B's clock", held("A", now.Add(-grace-time.Millisecond)), time.Time{}, true, now},
		{"B takes its own lease back at any time", held("B", now.Add(10*time.Second)), time.Time{}, true, now},
		{"B takes its own expired lease", held("B", now.Add(-time.Hour)), time.Time{}, true, now},
		{"B takes a released lease at once", leaseView{Present: true, Expires: now}, time.Time{}, true, now},
		{"B takes a lease with an unreadable expiry", leaseView{Present: true, Holder: "A"}, time.Time{}, true, now},
		{"B waits a TTL plus grace after first seeing no labels (a stack deploy may have wiped a live lease)",
			leaseView{}, now.Add(-ttl), false, now.Add(grace)},
		{"B takes a lease missing for longer than TTL plus grace", leaseView{}, now.Add(-ttl - grace - time.Millisecond), true, now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			take, at := leaseDecide(tc.v, "B", now, tc.absentSince, ttl, grace)
			if take != tc.take || !at.Equal(tc.retryAt) {
				t.Errorf("leaseDecide(%+v, absent since %v) = %v, retry at %v; want %v, %v", tc.v, tc.absentSince, take, at, tc.take, tc.retryAt)
			}
		})
	}
}
