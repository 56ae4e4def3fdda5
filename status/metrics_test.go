package status

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type boardAt struct {
	b   *Board
	now time.Time
}

func (s boardAt) Snapshot(time.Time) Snapshot { return s.b.Snapshot(s.now) }

func metricsBoard(t *testing.T) *Board {
	t.Helper()
	p, c := fixture()
	c.OrderCounts = map[string]uint64{OrderOK: 2, OrderRateLimited: 1}
	c.OrderDuration = NewHistogram(OrderBounds)
	c.OrderDuration.Observe(3)
	p.Hosts[0].CertificateMismatch = true
	p.Mismatch = []string{"app.example.com"}
	b := NewBoard("test", fixedCerts(c))
	b.Stream(true, false)
	b.Stream(true, true)
	b.Event()
	b.Publish(p)
	p.Reload = &Reload{Time: now.Add(time.Minute), Result: ReloadRejected}
	b.Publish(p)
	return b
}

func TestMetricsHaveTheIssueNamesAndValues(t *testing.T) {
	c := Collector{boardAt{metricsBoard(t), now}}
	want := `
# HELP berth_reloads_total nginx reload attempts by result: ok, rejected (nginx -t refused the config), failed.
# TYPE berth_reloads_total counter
berth_reloads_total{result="failed"} 0
berth_reloads_total{result="ok"} 1
berth_reloads_total{result="rejected"} 1
# HELP berth_sites Hosts served.
# TYPE berth_sites gauge
berth_sites 1
# HELP berth_backends Backends over all hosts and paths.
# TYPE berth_backends gauge
berth_backends 1
# HELP berth_containers_skipped Labelled containers left out of the config.
# TYPE berth_containers_skipped gauge
berth_containers_skipped 1
# HELP berth_last_reload_timestamp_seconds Time of the last successful reload (0: none since start).
# TYPE berth_last_reload_timestamp_seconds gauge
berth_last_reload_timestamp_seconds 1.7962128e+09
# HELP berth_certificate_not_after_timestamp_seconds Expiry of each stored certificate, named by its first host.
# TYPE berth_certificate_not_after_timestamp_seconds gauge
berth_certificate_not_after_timestamp_seconds{name="app.example.com"} 1.7988048e+09
# HELP berth_served_certificate_mismatch 1 while nginx serves a different certificate than the stored one.
# TYPE berth_served_certificate_mismatch gauge
berth_served_certificate_mismatch{name="app.example.com"} 1
# HELP berth_acme_orders_total Certificate orders by result: ok, failed, rate_limited.
# TYPE berth_acme_orders_total counter
berth_acme_orders_total{result="failed"} 0
berth_acme_orders_total{result="ok"} 2
berth_acme_orders_total{result="rate_limited"} 1
# HELP berth_docker_events_total Docker events received.
# TYPE berth_docker_events_total counter
berth_docker_events_total 1
# HELP berth_docker_reconnects_total Re-subscriptions to the Docker event stream after it broke.
# TYPE berth_docker_reconnects_total counter
berth_docker_reconnects_total 1
`
	names := []string{"berth_reloads_total", "berth_sites", "berth_backends", "berth_containers_skipped", "berth_last_reload_timestamp_seconds",
		"berth_certificate_not_after_timestamp_seconds", "berth_served_certificate_mismatch", "berth_acme_orders_total",
		"berth_docker_events_total", "berth_docker_reconnects_total"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "berth_pass_duration_seconds", "berth_acme_order_duration_seconds", "berth_certificate_renewal_timestamp_seconds"); n != 3 {
		t.Errorf("%d histogram/renewal series, want 3", n)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

func TestHTTPEndpoints(t *testing.T) {
	srv := httptest.NewServer(Handler(boardAt{metricsBoard(t), now}))
	defer srv.Close()
	get := func(path string) (int, string, http.Header) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.Header
	}
	for path, want := range map[string]string{
		"/status":            `"host": "app.example.com"`,
		"/healthz":           "ok",
		"/why?name=broken-1": "Skipped: label proxy.port",
		"/metrics":           "go_goroutines",
		"/":                  `<table id="certificates">`,
	} {
		code, body, _ := get(path)
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d, lacks %q:\n%.400s", path, code, want, body)
		}
	}
	if code, body, _ := get("/metrics"); code != 200 || !strings.Contains(body, "process_") && !strings.Contains(body, "go_memstats") {
		t.Errorf("metrics lack the process/Go collectors: %.300s", body)
	}
	if code, _, _ := get("/why?name=nobody"); code != 404 {
		t.Errorf("why of an unknown name: %d, want 404", code)
	}
	_, page, h := get("/")
	if strings.Contains(page, "<script") || strings.Contains(page, "http://") || strings.Contains(page, "https://") || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Error("the status page loads something from elsewhere")
	}
}

func TestTwoVersionsOfACertificateAreOneSeries(t *testing.T) {
	p, c := fixture()
	c.Certificates = append(c.Certificates, c.Certificates[0])
	b := NewBoard("test", fixedCerts(c))
	b.Publish(p)
	if n := testutil.CollectAndCount(Collector{boardAt{b, now}}, "berth_certificate_not_after_timestamp_seconds"); n != 1 {
		t.Errorf("%d series, want 1", n)
	}
}

func TestTheUsersOwnCertificateHasAnExpiryButNoRenewalSeries(t *testing.T) {
	p, c := fixture()
	c.Certificates = append(c.Certificates, Certificate{Name: "own.crt", Names: []string{"own.example.com"}, NotAfter: now.Add(time.Hour), Source: "user"})
	b := NewBoard("test", fixedCerts(c))
	b.Publish(p)
	col := Collector{boardAt{b, now}}
	if n := testutil.CollectAndCount(col, "berth_certificate_not_after_timestamp_seconds"); n != 2 {
		t.Errorf("%d expiry series, want 2 (berth's and the user's)", n)
	}
	if n := testutil.CollectAndCount(col, "berth_certificate_renewal_timestamp_seconds"); n != 1 {
		t.Errorf("%d renewal series, want 1: berth never renews the user's own", n)
	}
}
