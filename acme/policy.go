package acme

import (
	"net/netip"
	"strings"
	"time"
)

// Window is a renewal window suggested by the CA (ACME Renewal Information).
type Window struct {
	Start, End time.Time
}

// shortLived is the lifetime under which a certificate renews at half its
// life rather than with a third left: a 6-day certificate must not wait
// until 2 days remain, since one failed attempt would then risk expiry.
const shortLived = 10 * 24 * time.Hour

// RenewAt returns when a certificate valid from notBefore to notAfter should
// be renewed. jitter in [0,1) spreads renewals so that many certificates
// issued together are not renewed in one burst. A CA window (ARI) wins when
// it is sane: non-empty, not inverted, and starting before the certificate
// expires. A window wholly in the past is how a CA says "renew now" (e.g.
// after revoking it) and is honoured; an empty or inverted one is ignored,
// since it would also read as "renew now". Pure.
func RenewAt(notBefore, notAfter time.Time, ari *Window, jitter float64) time.Time {
	if ari != nil && sane(*ari, notBefore, notAfter) {
		span := ari.End.Sub(ari.Start)
		return ari.Start.Add(time.Duration(jitter * float64(span)))
	}
	life := notAfter.Sub(notBefore)
	left := life / 3
	if life < shortLived {
		left = life / 2
	}
	// Jitter moves renewal earlier by up to a tenth of the margin, never later.
	return notAfter.Add(-left - time.Duration(jitter*float64(left/10)))
}

func sane(w Window, notBefore, notAfter time.Time) bool {
	return !w.Start.IsZero() && w.End.After(w.Start) && w.Start.Before(notAfter)
}

// Backoff after failures. The first retry comes after 5 minutes (Let's
// Encrypt allows 5 failed validations per name per hour), doubling to a day.
const (
	backoffBase = 5 * time.Minute
	backoffMax  = 24 * time.Hour
)

// RetryAfter returns when a name that failed for the n-th time in a row
// may be tried again; caRetry is the CA's Retry-After (0 when none), which
// is honoured when it is longer. Pure.
func RetryAfter(now time.Time, n int, caRetry time.Duration) time.Time {
	d := backoffBase
	for i := 1; i < n && d < backoffMax; i++ {
		d *= 2
	}
	d = min(d, backoffMax)
	return now.Add(max(d, caRetry))
}

// Unissuable says why no public CA can issue a certificate for name, or ""
// when it can: localhost names, IP literals, single-label names, and
// wildcards unless a DNS provider answers DNS-01 (the manager checks the
// rest of a wildcard when one does).
func Unissuable(name string) string {
	switch {
	case strings.HasSuffix(name, ".*"):
		return "names ending in a wildcard (example.*) route like nginx server names but no CA issues a certificate for them (proxy.acme=off silences this)"
	case strings.Contains(name, "*"):
		return "wildcard names need a DNS-01 challenge: set BERTH_ACME_DNS_PROVIDER (or proxy.acme=off to silence this)"
	case name == "localhost" || strings.HasSuffix(name, ".localhost"):
		return "localhost names cannot get a public certificate"
	case isIP(name):
		return "IP addresses are not issued by HTTP-01 here"
	case !strings.Contains(name, "."):
		return "single-label names cannot get a public certificate"
	}
	return ""
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(strings.Trim(s, "[]"))
	return err == nil
}
