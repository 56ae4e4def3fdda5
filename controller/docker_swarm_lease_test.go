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
		{"no labels is a free lease", nil, leaseView{}},
		{"other labels are a free lease", map[string]string{"other": "a"}, leaseView{}},
		{"a holder and an expiry are a held lease",
			map[string]string{LeaseHolderLabel: "A", LeaseExpiresLabel: exp.Format(time.RFC3339Nano)},
			leaseView{Holder: "A", Expires: exp}},
		{"an expiry without a holder is a released lease",
			map[string]string{LeaseExpiresLabel: exp.Format(time.RFC3339Nano)},
			leaseView{Expires: exp}},
		{"an unreadable expiry reads as long expired",
			map[string]string{LeaseHolderLabel: "A", LeaseExpiresLabel: "tomorrow"},
			leaseView{Holder: "A"}},
		{"a holder without an expiry is expired",
			map[string]string{LeaseHolderLabel: "A"},
			leaseView{Holder: "A"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := leaseFromLabels(tc.labels)
			if got.Holder != tc.want.Holder || !got.Expires.Equal(tc.want.Expires) {
				t.Errorf("leaseFromLabels(%v) = %+v, want %+v", tc.labels, got, tc.want)
			}
		})
	}
}

func TestLeaseDecide(t *testing.T) {
	const grace = 2 * time.Second
	now := time.Date(2026, 12, 5, 23, 0, 0, 0, time.UTC)
	held := func(holder string, expires time.Time) leaseView {
		return leaseView{Holder: holder, Expires: expires}
	}
	for _, tc := range []struct {
		name    string
		v       leaseView
		take    bool
		retryAt time.Time
	}{
		{"B may not take A's lease before it expires", held("A", now.Add(10*time.Second)), false, now.Add(12 * time.Second)},
		{"B may not take A's lease just after it expires, within the skew grace", held("A", now.Add(-time.Second)), false, now.Add(time.Second)},
		{"B may not take A's lease at exactly expiry plus grace", held("A", now.Add(-grace)), false, now},
		{"B takes A's lease once expiry plus grace has passed by B's clock", held("A", now.Add(-grace-time.Millisecond)), true, now},
		{"B takes its own lease back at any time", held("B", now.Add(10*time.Second)), true, now},
		{"B takes its own expired lease", held("B", now.Add(-time.Hour)), true, now},
		{"B takes a released lease at once, however recent the release", held("", now.Add(time.Hour)), true, now},
		{"B takes a lease never taken (a config without lease labels)", leaseView{}, true, now},
		{"B takes a lease with an unreadable expiry", held("A", time.Time{}), true, now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			take, at := leaseDecide(tc.v, "B", now, grace)
			if take != tc.take || !at.Equal(tc.retryAt) {
				t.Errorf("leaseDecide(%+v) = %v, retry at %v; want %v, %v", tc.v, take, at, tc.take, tc.retryAt)
			}
		})
	}
}
