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
// only. vfs is the storage driver that works on any backing file system
// (overlay on overlay does not); StartSwarm puts /var/lib/docker on a
// volume so that vfs copies land on the host's disk, not on the outer
// engine's fuse-overlayfs.
const swarmNodeImageConfig = `CMD ["dockerd","--host=unix:///var/run/docker.sock","--tls=false","--storage-driver=vfs"]
`

// SwarmNodeImage returns a local image of a Docker Swarm node: Debian's
// docker.io on legacy iptables, running dockerd in the foreground. It
// builds the image with debootstrap if it is missing.
func SwarmNodeImage(t testing.TB) string {
	t.Helper()
	return rootfsImage(t, "berth-test-swarmnode", "", swarmRootfs(), swarmNodeImageConfig)
}

func swarmRootfs() rootfsSpec {
	return rootfsSpec{
		name:     "rootfs-docker-" + swarmSuite,
		suite:    swarmSuite,
		packages: swarmPackages,
		// The image configuration is in the key too: rootfsImage tags by
		// the key alone, and a changed CMD must make a new tag.
		key: hashOf(imageVersion, "swarmnode", swarmSuite, strings.Join(swarmPackages, ","),
			strings.Join(swarmLegacyIPTables, ","), swarmNodeImageConfig),
		marker:    filepath.Join("usr", "sbin", "dockerd"),
		configure: useLegacyIPTables,
	}
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
