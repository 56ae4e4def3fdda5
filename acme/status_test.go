package acme

import (
	"encoding/json"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/berthproxy/berth/status"
)

func TestCertStatusReportsCertificatesFailingNamesAndOrderCounts(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		e.ca.fail["bad.test"] = true
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"bad.test", "good.test"}}), nil)
		changed(t, m, time.Minute, "the order")
		// Changed fires when the certificate is adopted, just before the
		// order's goroutine ends; wait until it has.
		synctest.Wait()
		p := m.CertStatus(time.Now())
		if len(p.Certificates) != 1 || strings.Join(p.Certificates[0].Names, ",") != "good.test" || p.Certificates[0].NextRenewal.IsZero() ||
			!p.Certificates[0].NotAfter.After(time.Now()) || p.Certificates[0].Issuer == "" {
			t.Fatalf("certificates = %+v", p.Certificates)
		}
		if len(p.Failing) != 1 || p.Failing[0].Name != "bad.test" || p.Failing[0].Failures != 1 || !strings.Contains(p.Failing[0].LastError, "validation failed") {
			t.Fatalf("failing = %+v", p.Failing)
		}
		// The first order fails for bad.test, the retry without it succeeds.
		if p.OrderCounts[status.OrderFailed] != 1 || p.OrderCounts[status.OrderOK] != 1 || p.OrderDuration.Count != 2 {
			t.Fatalf("order counts %v, durations %d", p.OrderCounts, p.OrderDuration.Count)
		}
		if len(p.Orders) != 0 {
			t.Fatalf("orders in flight after the order: %+v", p.Orders)
		}
		data, _ := json.Marshal(p)
		if strings.Contains(string(data), "PRIVATE KEY") {
			t.Fatal("the status shows a key")
		}
	})
}

func TestRateLimitedOrdersAreCountedApart(t *testing.T) {
	bubble(t, func(t *testing.T, e *env) {
		e.ca.limit = time.Hour
		m := e.manager(t, nil)
		run(t, m)
		m.Want(Requests([][]string{{"a.test"}}), nil)
		time.Sleep(time.Minute)
		p := m.CertStatus(time.Now())
		if p.OrderCounts[status.OrderRateLimited] != 1 || p.OrderCounts[status.OrderFailed] != 0 {
			t.Fatalf("order counts %v", p.OrderCounts)
		}
		if len(p.Failing) != 1 || !p.Failing[0].NextAttempt.After(time.Now().Add(50*time.Minute)) {
			t.Fatalf("failing = %+v", p.Failing)
		}
	})
}
