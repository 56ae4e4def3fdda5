package controller

import (
	"fmt"
	"testing"

	"github.com/berthproxy/berth/nginxconf"
)

// scaleContainers is the scale of issue 8: 1,000 labelled containers.
const scaleContainers = 1000

// scaleFixture builds n running containers with one host each (h<i>.test,
// port 80) on nginx's network, as berth's Docker adapter would list them,
// plus the nginx container itself.
func scaleFixture(n int) ([]Container, Inputs) {
	nginx := Container{ID: "nginx", Name: "nginx", Running: true, State: "running",
		Labels: map[string]string{"proxy.nginx": "true"}, Networks: map[string]string{"front": "10.0.0.1"}}
	cs := make([]Container, 0, n+1)
	for i := range n {
		cs = append(cs, Container{
			ID: fmt.Sprintf("%064d", i), Name: fmt.Sprintf("svc%d", i), Running: true, State: "running",
			Labels:   map[string]string{"proxy.host": fmt.Sprintf("h%d.test", i), "proxy.port": "80"},
			Networks: map[string]string{"front": fmt.Sprintf("10.%d.%d.%d", 1+i>>16, (i>>8)&0xff, i&0xff)},
			Exposed:  []int{80},
		})
	}
	cs = append(cs, nginx)
	return cs, Inputs{Nginx: nginx, Webroot: "/var/www/acme", HTTP2: nginxconf.HTTP2Listen}
}

// BenchmarkDesiredRenderDiff1000 is the in-memory part of one pass with
// 1,000 labelled containers: the desired state (label parsing, address and
// port choice, sites) and the nginx files rendered from it, plus the diff
// against the files of the previous pass with one container changed, which
// is what a pass does after its one Docker list call. Issue 8's target is
// under 10 ms/op. (BenchmarkDesiredAndRender1000 in desired_test.go is
// the same without the diff, for 500 hosts of two replicas each.)
//
//	go test ./controller -run XXX -bench 1000 -benchmem
func BenchmarkDesiredRenderDiff1000(b *testing.B) {
	cs, in := scaleFixture(scaleContainers)
	cfg, _, problems := Desired(cs, in)
	if len(problems) > 0 || len(cfg.Sites) != scaleContainers {
		b.Fatalf("fixture: %d sites, problems %v", len(cfg.Sites), problems)
	}
	previous, errs := nginxconf.Render(cfg)
	if len(errs) > 0 {
		b.Fatal(errs)
	}
	// One changed container: the next pass moves one backend.
	cs[500].Networks = map[string]string{"front": "10.9.9.9"}
	b.ReportAllocs()
	var files int
	for b.Loop() {
		cfg, _, _ := Desired(cs, in)
		desired, _ := nginxconf.Render(cfg)
		plan := nginxconf.Diff(previous, desired)
		if len(plan.Write) != 1 {
			b.Fatalf("plan writes %v, want one file", plan.Write)
		}
		files = len(desired)
	}
	b.ReportMetric(float64(files), "files")
}
