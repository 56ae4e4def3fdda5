package status

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Source gives snapshots; Board is one.
type Source interface {
	Snapshot(now time.Time) Snapshot
}

// The metrics are a view of a snapshot taken at scrape time, so they can
// never disagree with "berth status": one Collect, one Snapshot.
var (
	descReloads    = prometheus.NewDesc("berth_reloads_total", "nginx reload attempts by result: ok, rejected (nginx -t refused the config), failed.", []string{"result"}, nil)
	descPass       = prometheus.NewDesc("berth_pass_duration_seconds", "Duration of reconcile passes.", nil, nil)
	descSites      = prometheus.NewDesc("berth_sites", "Hosts served.", nil, nil)
	descBackends   = prometheus.NewDesc("berth_backends", "Backends over all hosts and paths.", nil, nil)
	descSkipped    = prometheus.NewDesc("berth_containers_skipped", "Labelled containers left out of the config.", nil, nil)
	descLastReload = prometheus.NewDesc("berth_last_reload_timestamp_seconds", "Time of the last successful reload (0: none since start).", nil, nil)
	descNotAfter   = prometheus.NewDesc("berth_certificate_not_after_timestamp_seconds", "Expiry of each stored certificate, named by its first host.", []string{"name"}, nil)
	descRenewal    = prometheus.NewDesc("berth_certificate_renewal_timestamp_seconds", "When berth next renews each stored certificate.", []string{"name"}, nil)
	descOrders     = prometheus.NewDesc("berth_acme_orders_total", "Certificate orders by result: ok, failed, rate_limited.", []string{"result"}, nil)
	descOrderTime  = prometheus.NewDesc("berth_acme_order_duration_seconds", "Duration of certificate orders at the CA.", nil, nil)
	descEvents     = prometheus.NewDesc("berth_docker_events_total", "Docker events received.", nil, nil)
	descReconnects = prometheus.NewDesc("berth_docker_reconnects_total", "Re-subscriptions to the Docker event stream after it broke.", nil, nil)
	descMismatch   = prometheus.NewDesc("berth_served_certificate_mismatch", "1 while nginx serves a different certificate than the stored one.", []string{"name"}, nil)
	reloadResults  = []string{ReloadOK, ReloadRejected, ReloadFailed}
	orderResults   = []string{OrderOK, OrderFailed, OrderRateLimited}
)

// Collector exposes a Source's snapshots as berth_* metrics.
type Collector struct{ Source Source }

// Describe implements prometheus.Collector.
func (c Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReloads, descPass, descSites, descBackends, descSkipped, descLastReload,
		descNotAfter, descRenewal, descOrders, descOrderTime, descEvents, descReconnects, descMismatch} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.Source.Snapshot(time.Now())
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	hist := func(d *prometheus.Desc, h Histogram) {
		ch <- prometheus.MustNewConstHistogram(d, h.Count, h.Sum, h.Cumulative())
	}
	for _, r := range reloadResults {
		counter(descReloads, s.Counters.Reloads[r], r)
	}
	hist(descPass, s.Counters.Passes)
	gauge(descSites, float64(len(s.Hosts)))
	gauge(descBackends, float64(countBackends(s.Hosts)))
	gauge(descSkipped, float64(countContainers(s.Skipped)))
	gauge(descLastReload, unix(s.Counters.LastReloadOK))
	mismatch := map[string]bool{}
	for _, h := range s.Hosts {
		if h.CertificateMismatch && h.Certificate != "" {
			mismatch[h.Certificate] = true
		}
	}
	seen := map[string]bool{} // a duplicate series would fail the whole scrape
	for _, cert := range s.Certificates {
		if seen[cert.Name] {
			continue
		}
		seen[cert.Name] = true
		gauge(descNotAfter, unix(cert.NotAfter), cert.Name)
		if cert.Source != "user" { // berth never renews the user's own: no series to alert on
			gauge(descRenewal, unix(cert.NextRenewal), cert.Name)
		}
		gauge(descMismatch, boolFloat(mismatch[cert.Name]), cert.Name)
	}
	for _, r := range orderResults {
		counter(descOrders, s.Counters.Orders[r], r)
	}
	hist(descOrderTime, s.Counters.OrderDuration)
	counter(descEvents, s.Counters.Events)
	counter(descReconnects, s.Counters.Reconnects)
}

// NewRegistry registers berth's metrics and the Go and process collectors.
func NewRegistry(src Source) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector{src}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// MetricsHandler serves /metrics for src.
func MetricsHandler(src Source) http.Handler {
	return promhttp.HandlerFor(NewRegistry(src), promhttp.HandlerOpts{})
}

func countBackends(hosts []Host) int {
	n := 0
	for _, h := range hosts {
		for _, p := range h.Paths {
			n += len(p.Backends)
		}
	}
	return n
}

// countContainers counts distinct containers: one container with two bad
// labels is one skipped container.
func countContainers(ps []Problem) int {
	seen := map[string]bool{}
	for _, p := range ps {
		seen[p.Container] = true
	}
	return len(seen)
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
