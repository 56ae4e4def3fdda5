package acme

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestAnUnusableDNSProviderFailsEachDNS01OrderWithItsReason(t *testing.T) {
	t.Setenv("DNSUPDATE_NAMESERVER", "")
	t.Setenv("RFC2136_NAMESERVER", "")
	d := NewDNSSolver("rfc2136", nil)
	if err := d.Err(); err == nil || !strings.Contains(err.Error(), `"rfc2136"`) || !strings.Contains(err.Error(), "NAMESERVER") {
		t.Fatalf("Err() = %v, want one naming the provider and the missing variable", err)
	}
	l := &LegoIssuer{dnsErr: d.Err()} // no clients: a DNS-01 order must not reach one
	_, err := l.Obtain(context.Background(), []string{"*.w.test", "w.test"}, OrderOptions{})
	var oe *OrderError
	if !errors.As(err, &oe) || !slices.Equal(oe.Failed, []string{"*.w.test", "w.test"}) || !strings.Contains(oe.Error(), "NAMESERVER") {
		t.Fatalf("Obtain = %v, want an OrderError failing both names with the provider's reason", err)
	}
	if NewDNSSolver("", nil) != nil || (*DNSSolver)(nil).Err() == nil {
		t.Fatal("no provider must read as an error saying to set BERTH_ACME_DNS_PROVIDER")
	}
}

func TestFailedNamesIncludeWildcards(t *testing.T) {
	err := errors.New("error: one or more domains had a problem:\n[*.w.test] acme: error presenting token: refused\n[ok.test] x\n")
	if got := failedNames(err); !slices.Equal(got, []string{"*.w.test", "ok.test"}) {
		t.Fatalf("failedNames = %v", got)
	}
}
