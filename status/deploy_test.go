package status

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

// berthMetric finds the berth_* names an expression uses.
var berthMetric = regexp.MustCompile(`\bberth_[a-z_]+`)

// exported is every berth_* series name the collector exposes, histogram
// suffixes included.
func exported(t *testing.T) map[string]bool {
	ch := make(chan *prometheus.Desc, 32)
	Collector{}.Describe(ch)
	close(ch)
	names := map[string]bool{}
	for d := range ch {
		m := regexp.MustCompile(`fqName: "([a-z_]+)"`).FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("desc %s", d)
		}
		names[m[1]] = true
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			names[m[1]+suffix] = true
		}
	}
	return names
}

// The shipped alert rules and dashboard may only use metrics berth has: a
// renamed metric would otherwise silence an alert without a sound.
func TestAlertRulesAndDashboardUseExportedMetrics(t *testing.T) {
	names := exported(t)
	data, err := os.ReadFile("../deploy/prometheus/berth-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string }
		}
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			checkNames(t, "alert "+r.Alert, r.Expr, names)
		}
	}
	for _, want := range []string{"BerthCertificateExpiresSoon", "BerthRenewalFailing", "BerthReloadsRejected"} {
		if !strings.Contains(strings.Join(alerts, " "), want) {
			t.Errorf("no alert %s", want)
		}
	}
	data, err = os.ReadFile("../deploy/grafana/berth-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			checkNames(t, "panel "+p.Title, target.Expr, names)
		}
	}
}

func checkNames(t *testing.T, where, expr string, names map[string]bool) {
	t.Helper()
	used := berthMetric.FindAllString(expr, -1)
	if len(used) == 0 && !strings.Contains(expr, "up{") && !strings.Contains(expr, "process_") && !strings.Contains(expr, "go_") {
		t.Errorf("%s uses no berth metric: %s", where, expr)
	}
	for _, n := range used {
		if !names[n] {
			t.Errorf("%s uses %s, which berth does not export", where, n)
		}
	}
}
