package controller

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/berthproxy/berth/nginxconf"
)

// replica is a running container of the "web" service: on "front" at
// 172.18.0.<n>, labelled for a.test, with the alias "web" and its short ID
// as Docker's DNS names there, and no health check.
func replica(name string, n int, alias string) Container {
	c := svc(name, n, map[string]string{"proxy.host": "a.test"}, 80)
	c.ID = fmt.Sprintf("%012d%s", n, name) // a 12-character short ID that is a prefix of the ID
	c.State = "running"
	c.DNSNames = map[string][]string{"front": {alias, c.ID[:12]}}
	return c
}

func stopped(c Container) Container {
	c.Running, c.State, c.Networks = false, "exited", map[string]string{"front": ""}
	return c
}

// resolvedDesired is desired for an nginx that re-resolves names (1.27.3+).
func resolvedDesired(cs ...Container) nginxconf.Config {
	cfg, _, _ := Desired(append(cs, testNginx), Inputs{Nginx: testNginx, Webroot: "/var/www/acme", Resolver: DockerDNS})
	return cfg
}

func rendered(t *testing.T, cfg nginxconf.Config) nginxconf.Files {
	t.Helper()
	files, errs := nginxconf.Render(cfg)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return files
}

func location(t *testing.T, cfg nginxconf.Config, host string) nginxconf.Location {
	t.Helper()
	return site(t, cfg, host).Locations[0]
}

func TestReplicasBehindOneAliasRenderTheSameBytesWhateverTheirNumberAndAddresses(t *testing.T) {
	one := resolvedDesired(replica("web-1", 2, "web"))
	if l := location(t, one, "a.test"); !l.Resolve || !slices.Equal(l.Backends, []string{"web:80"}) {
		t.Fatalf("location %+v, want web:80 resolved by nginx", l)
	}
	want := rendered(t, one)
	for name, cs := range map[string][]Container{
		"three replicas":                 {replica("web-1", 2, "web"), replica("web-2", 3, "web"), replica("web-3", 4, "web")},
		"the replica at another address": {replica("web-1", 9, "web")},
		"one of two replicas restarting": {stopped(replica("web-1", 2, "web")), replica("web-2", 3, "web")},
		"a replica created, not started": {replica("web-1", 2, "web"), stopped(replica("web-2", 3, "web"))},
	} {
		if got := rendered(t, resolvedDesired(cs...)); !maps.EqualFunc(got, want, bytes.Equal) {
			t.Errorf("%s: the files changed, so nginx would reload", name)
		}
	}
}

func TestOlderNginxGetsAddressesAsBefore(t *testing.T) {
	cs := []Container{replica("web-1", 2, "web"), replica("web-2", 3, "web"), testNginx}
	cfg, _, _ := Desired(cs, Inputs{Nginx: testNginx, Webroot: "/w"})
	if l := location(t, cfg, "a.test"); l.Resolve || !slices.Equal(l.Backends, []string{"172.18.0.2:80", "172.18.0.3:80"}) {
		t.Fatalf("location %+v, want the two addresses", l)
	}
}

func TestWithNoReplicaRunningTheLocationAnswers503(t *testing.T) {
	cfg := resolvedDesired(stopped(replica("web-1", 2, "web")), stopped(replica("web-2", 3, "web")))
	if l := location(t, cfg, "a.test"); len(l.Backends) != 0 {
		t.Fatalf("location %+v, want no backend (503)", l)
	}
}

// Each case is a location that must keep its addresses, because Docker's
// DNS would answer the name with a container berth does not route there.
func TestALocationKeepsItsAddressesUnlessTheNameIsItsAlone(t *testing.T) {
	other := func(c Container, host string) Container {
		c.Labels = map[string]string{"proxy.host": host}
		return c
	}
	unlabelled := func(c Container) Container { c.Labels = nil; return c }
	withHealth := func(c Container, health string, declared bool) Container {
		c.Health, c.Healthcheck = health, declared
		return c
	}
	paused := func(c Container) Container { c.Running, c.State = false, "paused"; return c }
	onBoth := func(c Container) Container {
		c.Networks["other"] = "172.19.0.9"
		c.DNSNames["other"] = []string{"web"}
		return c
	}
	onlyBack := func(c Container) Container {
		c.Networks["back"] = "10.0.0.2"
		c.DNSNames = map[string][]string{"back": {"web"}}
		return c
	}
	port := func(c Container, p string) Container { c.Labels["proxy.port"] = p; return c }
	swarm := func(c Container) Container { c.Labels[swarmTaskLabel] = "t1"; return c }
	ipv6Only := func(c Container) Container {
		c.Networks["front"], c.IPv6 = "", map[string]string{"front": "fd00::2"}
		return c
	}
	dualStack := func(n Container) Container { n.IPv6 = map[string]string{"front": "fd00::1"}; return n }
	for _, tc := range []struct {
		name  string
		cs    []Container
		nginx func(Container) Container
	}{
		{"the alias is shared with another host's container", []Container{replica("web-1", 2, "web"), other(replica("b-1", 3, "web"), "b.test")}, nil},
		{"the alias is shared with an unlabelled container", []Container{replica("web-1", 2, "web"), unlabelled(replica("db-1", 3, "web"))}, nil},
		{"a stopped foreign holder would be answered once it starts", []Container{replica("web-1", 2, "web"), stopped(unlabelled(replica("db-1", 3, "web")))}, nil},
		{"an unlabelled container is named like the alias", []Container{replica("web-1", 2, "web"), unlabelled(svc("web", 3, nil))}, nil},
		{"nginx itself carries the alias", []Container{replica("web-1", 2, "web")}, func(n Container) Container {
			n.DNSNames = map[string][]string{"front": {"web"}}
			return n
		}},
		{"a replica declares a health check", []Container{replica("web-1", 2, "web"), withHealth(replica("web-2", 3, "web"), HealthHealthy, true)}, nil},
		{"a stopped replica declares a health check", []Container{replica("web-1", 2, "web"), stopped(withHealth(replica("web-2", 3, "web"), "", true))}, nil},
		{"a replica reports a health status", []Container{replica("web-1", 2, "web"), withHealth(replica("web-2", 3, "web"), HealthStarting, false)}, nil},
		{"a replica is paused", []Container{replica("web-1", 2, "web"), paused(replica("web-2", 3, "web"))}, nil},
		{"the replicas listen on different ports", []Container{replica("web-1", 2, "web"), port(replica("web-2", 3, "web"), "8080")}, nil},
		{"the alias lives on two of nginx's networks", []Container{replica("web-1", 2, "web"), onBoth(replica("web-2", 3, "web"))}, nil},
		{"the alias lives only on a network nginx is not on", []Container{onlyBack(replica("web-1", 2, "web"))}, nil},
		{"a replica lacks the alias", []Container{replica("web-1", 2, "web"), replica("web-2", 3, "api")}, nil},
		{"the only name is the container's own short ID", []Container{func() Container {
			c := replica("web-1", 2, "web")
			c.DNSNames["front"] = c.DNSNames["front"][1:]
			return c
		}()}, nil},
		{"the only name is the container's own name", []Container{replica("web-1", 2, "web-1")}, nil},
		{"a Swarm task, whose service name is a virtual IP", []Container{swarm(replica("web-1", 2, "web"))}, nil},
		{"a replica has IPv4 only on another network than the alias", []Container{replica("web-1", 2, "web"), func() Container {
			c := ipv6Only(replica("web-2", 3, "web"))
			c.Networks["other"] = "172.19.0.3"
			return c
		}()}, func(n Container) Container { return dualStack(n) }},
		{"a replica has only an IPv6 address", []Container{replica("web-1", 2, "web"), ipv6Only(replica("web-2", 3, "web"))}, dualStack},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nginx := testNginx
			if tc.nginx != nil {
				nginx = tc.nginx(nginx)
			}
			cfg, _, _ := Desired(append(slices.Clone(tc.cs), nginx), Inputs{Nginx: nginx, Webroot: "/w", Resolver: DockerDNS})
			if l := location(t, cfg, "a.test"); l.Resolve {
				t.Fatalf("location %+v resolved by name; want addresses", l)
			}
		})
	}
}

func TestABackendFromTheRoutesFileKeepsTheLocationOnAddresses(t *testing.T) {
	cs := []Container{replica("web-1", 2, "web"), testNginx}
	in := Inputs{Nginx: testNginx, Webroot: "/w", Resolver: DockerDNS,
		FileRoutes: []FileRoute{{Name: "legacy", Labels: map[string]string{"proxy.host": "a.test"}, Backends: []string{"10.1.2.3:80"}}}}
	cfg, _, _ := Desired(cs, in)
	if l := location(t, cfg, "a.test"); l.Resolve {
		t.Fatalf("location %+v resolved by name; the routes file's backend would be lost", l)
	}
}

func TestTheFirstQualifyingNameIsChosen(t *testing.T) {
	a, b := replica("web-1", 2, "web"), replica("web-2", 3, "web")
	a.DNSNames["front"] = append(a.DNSNames["front"], "app")
	b.DNSNames["front"] = append(b.DNSNames["front"], "app")
	foreign := replica("x-1", 4, "app") // "app" comes first but is not theirs alone
	foreign.Labels = map[string]string{"proxy.host": "x.test"}
	cfg := resolvedDesired(a, b, foreign)
	if l := location(t, cfg, "a.test"); !slices.Equal(l.Backends, []string{"web:80"}) {
		t.Fatalf("location %+v, want web:80", l)
	}
	if l := location(t, cfg, "x.test"); l.Resolve {
		t.Fatalf("x.test %+v: its alias app is also carried by a.test's replicas", l)
	}
}

// One container serving two hosts on two ports holds its alias for both.
func TestAContainerWithTwoRoutesResolvesBoth(t *testing.T) {
	c := replica("web-1", 2, "web")
	c.Labels = map[string]string{"proxy.host": "a.test", "proxy.port": "80", "proxy.admin.host": "admin.test", "proxy.admin.port": "9000"}
	cfg := resolvedDesired(c)
	if l := location(t, cfg, "a.test"); !slices.Equal(l.Backends, []string{"web:80"}) || !l.Resolve {
		t.Fatalf("a.test %+v", l)
	}
	if l := location(t, cfg, "admin.test"); !slices.Equal(l.Backends, []string{"web:9000"}) || !l.Resolve {
		t.Fatalf("admin.test %+v", l)
	}
}

func TestResolverForFollowsTheNginxBuild(t *testing.T) {
	for out, want := range map[string]string{
		"nginx version: nginx/1.22.1\nconfigure arguments: --with-http_v2_module":               "",
		"nginx version: nginx/1.27.2\n":                                                         "",
		"nginx version: nginx/1.27.3\n":                                                         DockerDNS,
		"nginx version: nginx/1.30.6\n":                                                         DockerDNS,
		"nginx version: nginx/2.0.0\n":                                                          DockerDNS,
		"nginx version: freenginx/1.29.0\n":                                                     "",
		"nginx version: nginx/1.30.6\nconfigure arguments: --without-http_upstream_zone_module": "",
		"sh: nginx: not found":                                                                  "",
	} {
		if got := ResolverFor(out); got != want {
			t.Errorf("ResolverFor(%q) = %q, want %q", out, got, want)
		}
	}
}

// A gone replica stays in nginx's list until the next DNS answer, and a
// connect to its address hangs: a resolved location gives up on it fast,
// unless the labels say otherwise.
func TestAResolvedLocationConnectsWithAShortTimeoutUnlessTold(t *testing.T) {
	if l := location(t, resolvedDesired(replica("web-1", 2, "web")), "a.test"); l.ConnectTimeout != resolvedConnectTimeout {
		t.Errorf("connect timeout %q, want %q", l.ConnectTimeout, resolvedConnectTimeout)
	}
	c := replica("web-1", 2, "web")
	c.Labels["proxy.connect-timeout"] = "3s"
	if l := location(t, resolvedDesired(c), "a.test"); l.ConnectTimeout != "3s" {
		t.Errorf("connect timeout %q, want the label's 3s", l.ConnectTimeout)
	}
	if l := location(t, resolvedDesired(svc("x", 2, map[string]string{"proxy.host": "a.test"}, 80)), "a.test"); l.ConnectTimeout != "" {
		t.Errorf("a location of addresses got connect timeout %q, want none as before", l.ConnectTimeout)
	}
}
