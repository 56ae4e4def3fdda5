package controller

// Tests of the Docker adapter's alias projection (docker.go), which feeds
// the choice of upstreams nginx resolves itself (resolved.go).

import (
	"maps"
	"slices"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
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
