package testenv

import (
	"strings"
	"testing"
)

func TestSwarmNodeImageHasDockerOnLegacyIPTables(t *testing.T) {
	RequireDocker(t)
	img := SwarmNodeImage(t)
	out := Docker(t, "run", "--rm", "--label", Label, "--entrypoint", "sh", img, "-c",
		"dockerd --version && iptables --version && ip6tables --version")
	if !strings.Contains(out, "Docker version 20.10") || strings.Count(out, "(legacy)") != 2 {
		t.Errorf("node image %s:\n%s", img, out)
	}
}
