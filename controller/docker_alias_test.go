package controller

// Tests of the Docker adapter's alias projection (docker.go), which feeds
// the choice of upstreams nginx resolves itself (resolved.go).

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
)

func TestDNSNamesJoinAliasesAndDNSNamesPerNetwork(t *testing.T) {
	got := dnsNames(map[string]*network.EndpointSettings{
		"old":  {Aliases: []string{"web", "0123456789ab"}},                                  // API < 1.44
		"new":  {Aliases: []string{"web"}, DNSNames: []string{"c1", "web", "0123456789ab"}}, // API >= 1.44
		"none": {},
	})
	want := map[string][]string{"old": {"0123456789ab", "web"}, "new": {"0123456789ab", "c1", "web"}}
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("dnsNames = %v, want %v", got, want)
	}
}

// Aliases change only with an endpoint, so the key that decides whether
// a cached inspect is read again must change with connect and start.
func TestEndpointKeyChangesWithTheEndpoints(t *testing.T) {
	summary := func(eps map[string]string) container.Summary {
		nets := map[string]*network.EndpointSettings{}
		for n, id := range eps {
			nets[n] = &network.EndpointSettings{EndpointID: id}
		}
		return container.Summary{NetworkSettings: &container.NetworkSettingsSummary{Networks: nets}}
	}
	a := endpointKey(summary(map[string]string{"front": "e1", "back": "e2"}))
	if b := endpointKey(summary(map[string]string{"back": "e2", "front": "e1"})); a != b {
		t.Errorf("same endpoints, different keys %q %q", a, b)
	}
	for name, eps := range map[string]map[string]string{
		"restarted (new endpoint)": {"front": "e3", "back": "e2"},
		"disconnected":             {"front": "e1"},
		"stopped":                  {"front": "", "back": ""},
	} {
		if b := endpointKey(summary(eps)); a == b {
			t.Errorf("%s: key unchanged", name)
		}
	}
	if onUserNetwork(summary(map[string]string{"bridge": "e"})) || !onUserNetwork(summary(map[string]string{"bridge": "e", "front": "f"})) {
		t.Error("onUserNetwork: only the default bridge has no aliases")
	}
}

// A container being (re)started can keep inspect waiting. When its
// endpoints changed, the adapter reads it again, but a failed read keeps
// what was known (exposed ports and health check never change; names only
// with a reconnect) instead of failing the whole pass.
func TestAFailedReinspectKeepsWhatWasKnown(t *testing.T) {
	var endpoint atomic.Value
	endpoint.Store("e1")
	var inspectFails atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/_ping", func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("Api-Version", "1.41") })
	mux.HandleFunc("/v1.41/containers/json", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `[{"Id":"c1","Names":["/web-1"],"State":"running","Labels":{"proxy.host":"a.test"},
			"NetworkSettings":{"Networks":{"front":{"EndpointID":%q,"IPAddress":"172.18.0.2"}}}}]`, endpoint.Load())
	})
	mux.HandleFunc("/v1.41/containers/c1/json", func(w http.ResponseWriter, _ *http.Request) {
		if inspectFails.Load() {
			http.Error(w, `{"message":"busy"}`, http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, `{"Id":"c1","Config":{"ExposedPorts":{"80/tcp":{}}},
			"NetworkSettings":{"Networks":{"front":{"Aliases":["web"]}}}}`)
	})
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	d := newDockerEngine(cli)
	list := func() Container {
		t.Helper()
		cs, err := d.List(context.Background())
		if err != nil || len(cs) != 1 {
			t.Fatalf("list: %v %v", cs, err)
		}
		return cs[0]
	}
	if c := list(); !slices.Equal(c.DNSNames["front"], []string{"web"}) || !slices.Equal(c.Exposed, []int{80}) {
		t.Fatalf("first list: %+v", c)
	}
	endpoint.Store("e2") // restarted
	inspectFails.Store(true)
	if c := list(); !slices.Equal(c.DNSNames["front"], []string{"web"}) || !slices.Equal(c.Exposed, []int{80}) {
		t.Fatalf("list while inspect fails: %+v", c)
	}
}
