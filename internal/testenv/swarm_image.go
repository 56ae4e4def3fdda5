package testenv

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// swarmSuite is the Debian suite of the Swarm node image: bookworm ships
// docker.io 20.10, the engine version the project's own host runs.
const swarmSuite = "bookworm"

// swarmPackages: iptables for the inner engine's NAT rules and host-mode
// ports, procps and iproute2 for a human debugging a node with docker exec.
var swarmPackages = []string{"docker.io", "iptables", "ca-certificates", "procps", "iproute2"}

// swarmLegacyIPTables are the alternatives switched to their legacy
// backend: with the nft backend the inner engine's NAT rules do not work
// inside a container here.
var swarmLegacyIPTables = []string{"iptables", "ip6tables"}

// swarmNodeImageConfig runs the inner engine as PID 1, on its local socket
// only. The storage driver is dockerd's choice: overlay2 when
// /var/lib/docker is on a real file system (StartSwarm mounts a volume
// there), vfs otherwise. overlay2 cannot sit on the outer engine's
// fuse-overlayfs, and vfs copies a whole image for every container: a task
// of the nginx image took 3–9 s to start on vfs, under 1 s on overlay2.
const swarmNodeImageConfig = `CMD ["dockerd","--host=unix:///var/run/docker.sock","--tls=false"]
`

// SwarmNodeImage returns a local image of a Docker Swarm node: Debian's
// docker.io on legacy iptables, running dockerd in the foreground. It
// builds the image with debootstrap if it is missing.
func SwarmNodeImage(t testing.TB) string {
	t.Helper()
	return rootfsImage(t, "berth-test-swarmnode", "", swarmRootfs(), swarmNodeImageConfig)
}

func swarmRootfs() rootfsSpec {
	// The image configuration is an input too: rootfsImage tags by the
	// key alone, and a changed CMD must make a new tag.
	return packageRootfs("swarmnode", swarmSuite, swarmPackages, filepath.Join("usr", "sbin", "dockerd"),
		useLegacyIPTables, strings.Join(swarmLegacyIPTables, ","), swarmNodeImageConfig)
}

// useLegacyIPTables points iptables and ip6tables in the root file system
// dir at their legacy backends.
func useLegacyIPTables(dir string) error {
	for _, name := range swarmLegacyIPTables {
		cmd := exec.Command("chroot", dir, "update-alternatives", "--set", name, "/usr/sbin/"+name+"-legacy")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
		}
	}
	return nil
}
