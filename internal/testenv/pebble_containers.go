package testenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PebbleInContainers is Pebble with its DNS server (pebble-challtestsrv),
// each in a container on a test's Docker network. Containers on that network
// reach the CA at DirectoryURL; the host reaches the published ports on
// 127.0.0.1.
type PebbleInContainers struct {
	// DirectoryURL is the ACME directory for containers on the network:
	// https://<Name>:14000/dir.
	DirectoryURL string
	// RootsPEM is the CA that signed Pebble's TLS certificate (valid for
	// Name, localhost and 127.0.0.1); RootsFile holds it on the host.
	RootsPEM  []byte
	RootsFile string
	// Name is the Pebble container's name (and host name on the network);
	// its DNS server is Name+"-dns".
	Name string
	// ManagementURL is Pebble's management interface, published on the
	// host: https://127.0.0.1:<port>.
	ManagementURL string
	// HostDirectoryURL is the ACME directory published on the host.
	HostDirectoryURL string

	dnsAddr    string // DNS (TCP) published on the host
	dnsMgmtURL string // pebble-challtestsrv's management interface on the host
	// pebbleAdmin gives IssuerRoots, Orders, Revoked and SetRenewalInfo*.
	pebbleAdmin
}

// SetAnswerIP makes the DNS server answer every A query with ip from now
// on, e.g. after the nginx container was recreated with a new address.
func (p *PebbleInContainers) SetAnswerIP(t testing.TB, ip string) {
	t.Helper()
	if p.dnsMgmtURL == "" {
		t.Fatal("SetAnswerIP: this Pebble asks PebbleOptions.DNSServer, not a pebble-challtestsrv")
	}
	body, _ := json.Marshal(map[string]string{"ip": ip})
	if _, err := p.pebbleAdmin.do("POST", p.dnsMgmtURL+"/set-default-ipv4", body, http.StatusOK); err != nil {
		t.Fatalf("set the DNS answer: %v", err)
	}
	if err := expectDNSAnswer(p.dnsAddr, ip); err != nil {
		t.Fatal(err)
	}
}

// PebbleContainers starts Pebble and pebble-challtestsrv as containers
// (from a FROM scratch image built locally from the static binaries) on the
// Docker network named network. The DNS server answers every A query with
// answerIP (e.g. the nginx container's address on network), so Pebble's VA
// connects there on port 80 (opts.HTTPPort if set) for HTTP-01. It waits
// until the CA and the DNS server answer, and removes both containers in
// t.Cleanup, logging their output first if the test failed.
//
// With opts.DNSServer set (e.g. a StartBIND server), Pebble asks that
// server instead, no pebble-challtestsrv is started and answerIP is unused.
func PebbleContainers(t testing.TB, network, answerIP string, opts PebbleOptions) *PebbleInContainers {
	t.Helper()
	RequireDocker(t)
	if opts.DNSServer != "" {
		if _, _, err := net.SplitHostPort(opts.DNSServer); err != nil {
			t.Fatalf("PebbleContainers: PebbleOptions.DNSServer %q is not ip:port: %v", opts.DNSServer, err)
		}
	} else if ip := net.ParseIP(answerIP); ip == nil || ip.To4() == nil {
		t.Fatalf("PebbleContainers: answerIP %q is not an IPv4 address", answerIP)
	}
	httpPort := opts.HTTPPort
	if httpPort == 0 {
		httpPort = 80
	}
	img := pebbleImage(t)
	name := fmt.Sprintf("berth-test-pebble-%x", time.Now().UnixNano())
	dnsName := name + "-dns"
	containers := []string{name}
	if opts.DNSServer == "" {
		containers = append(containers, dnsName)
	}
	dir := t.TempDir()
	tls, err := writeWFECert(dir, name, "localhost", "127.0.0.1")
	if err != nil {
		t.Fatalf("generate Pebble's TLS certificate: %v", err)
	}
	inContainer := func(file string) string { return pebbleConfigDir + "/" + filepath.Base(file) }
	cfg, err := pebbleConfigJSON(opts, fmt.Sprintf(":%d", pebbleWFEPort), fmt.Sprintf(":%d", pebbleMgmtPort),
		httpPort, 443, inContainer(tls.certFile), inContainer(tls.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pebble-config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			var tails []string
			for _, c := range slices.Backward(containers) { // the DNS server first
				tails = append(tails, containerTail(c))
			}
			t.Logf("Pebble containers:\n%s", strings.Join(tails, "\n"))
		}
		TryDocker(append([]string{"rm", "-f", "-v"}, containers...)...)
	})

	dnsServer := opts.DNSServer
	if dnsServer == "" {
		dnsServer = startChallDNS(t, img, network, dnsName, answerIP)
	}
	args := append([]string{"create", "--name", name, "--network", network}, LabelArgs()...)
	args = append(args, "-p", fmt.Sprintf("127.0.0.1::%d/tcp", pebbleWFEPort), "-p", fmt.Sprintf("127.0.0.1::%d/tcp", pebbleMgmtPort))
	for _, kv := range pebbleEnv(opts) {
		args = append(args, "-e", kv)
	}
	args = append(args, img, "/pebble", "-config", pebbleConfigDir+"/pebble-config.json",
		"-dnsserver", dnsServer)
	Docker(t, args...)
	Docker(t, "cp", dir+"/.", name+":"+pebbleConfigDir) // scratch has no shell to write files with
	Docker(t, "start", name)

	p := &PebbleInContainers{
		DirectoryURL:     fmt.Sprintf("https://%s:%d/dir", name, pebbleWFEPort),
		RootsPEM:         tls.rootsPEM,
		RootsFile:        tls.rootsFile,
		Name:             name,
		ManagementURL:    "https://" + publishedAddr(t, name, pebbleMgmtPort),
		HostDirectoryURL: "https://" + publishedAddr(t, name, pebbleWFEPort) + "/dir",
	}
	if opts.DNSServer == "" {
		p.dnsAddr = publishedAddr(t, dnsName, challDNSPort)
		p.dnsMgmtURL = "http://" + publishedAddr(t, dnsName, challMgmtPort)
	}
	p.pebbleAdmin = newPebbleAdmin(p.ManagementURL, tls.rootsPEM, func() (string, error) { return containerLogs(name) })
	alive := func() error { return containersRunning(containers...) }
	err = waitUntil(pebbleStartTimeout, alive, func() error {
		var dnsErr error
		if opts.DNSServer == "" { // DNSServer is on the network, out of the host's reach
			dnsErr = expectDNSAnswer(p.dnsAddr, answerIP)
		}
		return errors.Join(dnsErr, p.pebbleAdmin.ready(p.HostDirectoryURL))
	})
	if err != nil {
		t.Fatalf("start Pebble containers: %v", err)
	}
	return p
}

// startChallDNS runs pebble-challtestsrv as the container dnsName on
// network, answering every A query with answerIP, and returns its DNS
// address on the network.
func startChallDNS(t testing.TB, img, network, dnsName, answerIP string) string {
	t.Helper()
	args := append([]string{"run", "-d", "--name", dnsName, "--network", network}, LabelArgs()...)
	args = append(args, "-p", fmt.Sprintf("127.0.0.1::%d/tcp", challDNSPort), "-p", fmt.Sprintf("127.0.0.1::%d/tcp", challMgmtPort),
		img, "/pebble-challtestsrv")
	Docker(t, append(args, challtestsrvArgs(answerIP, fmt.Sprintf(":%d", challDNSPort), fmt.Sprintf(":%d", challMgmtPort))...)...)
	dnsIP := Docker(t, "inspect", "--format", `{{(index .NetworkSettings.Networks "`+network+`").IPAddress}}`, dnsName)
	if net.ParseIP(dnsIP) == nil {
		t.Fatalf("address of %s on network %s: %q", dnsName, network, dnsIP)
	}
	return net.JoinHostPort(dnsIP, strconv.Itoa(challDNSPort))
}

// pebbleImage returns a FROM scratch image holding /pebble and
// /pebble-challtestsrv, tagged by a hash of the binaries.
func pebbleImage(t testing.TB) string {
	t.Helper()
	RequireDocker(t)
	bins := pebbleBinaries(t)
	return memoImage(t, "pebble-image-"+bins, func(logf logFunc) (string, error) {
		key, err := hashFiles(bins, pebbleCommands, imageVersion, pebbleDockerfile)
		if err != nil {
			return "", err
		}
		ref := "berth-test-pebble:" + key
		return buildIfMissing(logf, ref, func() error {
			if err := buildPebbleImage(logf, bins, ref); err != nil {
				return err
			}
			pruneReplaced(logf, "berth-test-pebble", ref)
			return nil
		})
	})
}

func buildPebbleImage(logf logFunc, bins, ref string) error {
	ctx, err := os.MkdirTemp("", "berth-pebble-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ctx)
	for _, c := range pebbleCommands {
		if err := copyFile(filepath.Join(bins, c), filepath.Join(ctx, c)); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(pebbleDockerfile), 0o644); err != nil {
		return err
	}
	return run(logf, nil, ctx, []string{"DOCKER_BUILDKIT=0"}, "docker", "build",
		"--force-rm", "--label", imageLabel, "-t", ref, ".")
}

// publishedAddr returns the 127.0.0.1:port that the container's TCP port is
// published on.
func publishedAddr(t testing.TB, container string, port int) string {
	t.Helper()
	out := Docker(t, "port", container, fmt.Sprintf("%d/tcp", port))
	addr := strings.TrimSpace(strings.Split(out, "\n")[0])
	if host, _, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" {
		t.Fatalf("port %d of %s is published on %q, want 127.0.0.1", port, container, out)
	}
	return addr
}

func containersRunning(names ...string) error {
	for _, name := range names {
		state, err := TryDocker("inspect", "--format", "{{.State.Status}} (exit code {{.State.ExitCode}})", name)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(state, "running ") {
			return fmt.Errorf("container %s is %s", name, state)
		}
	}
	return nil
}

// containerLogs returns what the container wrote to stdout and stderr.
func containerLogs(name string) (string, error) {
	out, err := exec.Command("docker", "logs", name).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("docker logs %s: %w: %s", name, err, out)
	}
	return string(out), nil
}

func containerTail(name string) string {
	out, err := containerLogs(name)
	if err != nil {
		return err.Error()
	}
	return name + " output (last lines):\n" + lastLines(out, tailLines)
}
