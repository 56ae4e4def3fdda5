package controller

import (
	"slices"
	"strings"
	"testing"
)

func TestAnNginxProxyStyleContainerIsServedWithNoBerthLabelsOnlyWhenAskedTo(t *testing.T) {
	c := svc("legacy", 5, map[string]string{}, 80)
	c.Env = map[string]string{"VIRTUAL_HOST": "legacy.test", "VIRTUAL_PORT": "80"}
	cfg, _, _ := Desired([]Container{c, testNginx}, Inputs{Nginx: testNginx, Webroot: "/w"})
	if len(cfg.Sites) != 0 {
		t.Fatalf("without BERTH_NGINX_PROXY_ENV the environment was read: %v", hosts(cfg))
	}
	cfg, _, _ = Desired([]Container{c, testNginx}, Inputs{Nginx: testNginx, Webroot: "/w", NginxProxyEnv: true})
	if got := hosts(cfg); !slices.Equal(got, []string{"legacy.test"}) {
		t.Fatalf("sites %v, want legacy.test from VIRTUAL_HOST", got)
	}
	// Labels win, with one warning.
	c.Labels = map[string]string{"proxy.host": "labelled.test"}
	cfg, _, ps := Desired([]Container{c, testNginx}, Inputs{Nginx: testNginx, Webroot: "/w", NginxProxyEnv: true})
	if got := hosts(cfg); !slices.Equal(got, []string{"labelled.test"}) || len(ps) != 1 || !ps[0].Warning {
		t.Fatalf("sites %v, problems %v; want labelled.test and one warning", got, ps)
	}
}

func TestRoutesFileEntriesAreServedAndABadOneIsSkippedAlone(t *testing.T) {
	entries, problems, err := ParseRoutesFile([]byte(`
routes:
  nas:
    host: nas.test
    backend: 192.168.1.10:5000
    max-body-size: 1g
  broken:
    host: broken.test
    backend: 192.168.1.11:80
    https: sometimes
`))
	if err != nil || len(problems) != 0 {
		t.Fatalf("parse: %v %v", problems, err)
	}
	cfg, _, ps := Desired([]Container{testNginx}, Inputs{Nginx: testNginx, Webroot: "/w", FileRoutes: entries})
	if got := hosts(cfg); !slices.Equal(got, []string{"nas.test"}) {
		t.Fatalf("sites %v, want only nas.test", got)
	}
	loc := site(t, cfg, "nas.test").Locations[0]
	if !slices.Equal(loc.Backends, []string{"192.168.1.10:5000"}) || loc.MaxBodySize != "1g" {
		t.Fatalf("nas.test location %+v", loc)
	}
	if len(ps) != 1 || !strings.Contains(ps[0].String(), "routes-file:broken") || ps[0].Label != "proxy.https" {
		t.Fatalf("problems %v, want one naming the entry and its option", ps)
	}
}
