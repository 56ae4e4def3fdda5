package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// imageVersion is part of every image hash: bump it after changing how an
// image is built, so that machines with a cached image rebuild it.
const imageVersion = "1"

// imageLabel marks images built here, so that the dangling stages of
// replaced builds can be pruned without touching anyone else's images.
const imageLabel = "berth.test.image=1"

// nginxConfTemplate mirrors the official nginx image's nginx.conf, so that
// tests see the layout users of nginx:alpine have: everything berth writes
// is included from conf.d inside http{}, logs go to the container's streams.
const nginxConfTemplate = `user  %s;
worker_processes  auto;

error_log  /dev/stderr notice;
pid        /run/nginx.pid;

events {
    worker_connections  1024;
}

http {
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;

    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      '"$http_user_agent" "$http_x_forwarded_for"';

    access_log  /dev/stdout  main;

    sendfile        on;
    keepalive_timeout  65;

    include /etc/nginx/conf.d/*.conf;
}
`

// builderSuite is the Debian suite of the Go builder image's root file system.
const builderSuite = "bookworm"

var (
	debootstrapMilestone = regexp.MustCompile(`^(I: Retrieving (In)?Release|I: Base system installed|E: |W: )`)
	dockerBuildMilestone = regexp.MustCompile(`^(Step \d+/\d+ :|Successfully tagged)`)
)

// imageResult memoises one image per process: the first test that asks
// builds it, later tests (and tests after a failed build) get the result
// at once instead of repeating a minute-long build. Images are keyed by
// kind, not by content: a test binary tests one version of berth even if
// its sources are edited while it runs.
type imageResult struct {
	once sync.Once
	ref  string
	err  error
}

var images struct {
	mu   sync.Mutex
	byID map[string]*imageResult
}

func memoImage(t testing.TB, id string, build func(logf logFunc) (string, error)) string {
	t.Helper()
	images.mu.Lock()
	if images.byID == nil {
		images.byID = map[string]*imageResult{}
	}
	r, ok := images.byID[id]
	if !ok {
		r = &imageResult{}
		images.byID[id] = r
	}
	images.mu.Unlock()
	r.once.Do(func() { r.ref, r.err = build(t.Logf) })
	if r.err != nil {
		t.Fatalf("build image %s: %v", id, r.err)
	}
	return r.ref
}

// buildIfMissing takes the build lock, and builds ref with build unless the
// engine already has it. An image that exists already skips the lock, which
// another test process may hold for minutes while it builds another image.
func buildIfMissing(logf logFunc, ref string, build func() error) (string, error) {
	if imageExists(ref) {
		return ref, nil
	}
	err := withBuildLock(logf, func() error {
		if imageExists(ref) {
			return nil
		}
		start := time.Now()
		logf("building image %s", ref)
		if err := build(); err != nil {
			return err
		}
		logf("built image %s in %v", ref, time.Since(start).Round(100*time.Millisecond))
		return nil
	})
	return ref, err
}

// nginxPackages is what debootstrap installs for a suite: nginx-light is the
// small build in bookworm; later suites ship a modular "nginx".
func nginxPackages(suite string) []string {
	pkg := "nginx"
	if suite == "bookworm" || suite == "bullseye" {
		pkg = "nginx-light"
	}
	return []string{pkg, "ca-certificates", "curl"}
}

// nginxRootfs is the root file system of NginxImage and GoImage: Debian's
// nginx of suite, configured like the official image.
func nginxRootfs(suite string) rootfsSpec {
	pkgs := nginxPackages(suite)
	return rootfsSpec{
		name:      "rootfs-" + suite,
		suite:     suite,
		packages:  pkgs,
		key:       hashOf(imageVersion, "rootfs", suite, strings.Join(pkgs, ","), nginxConfTemplate),
		marker:    filepath.Join("etc", "nginx", "nginx.conf"),
		configure: configureNginx,
	}
}

// NginxImage returns a local image with nginx from the Debian suite
// ("bookworm": nginx 1.22 from nginx-light; "sid": the newest nginx),
// configured like the official nginx image, with an empty
// /etc/nginx/conf.d. It builds the image with debootstrap if it is missing.
func NginxImage(t testing.TB, suite string) string {
	t.Helper()
	return rootfsImage(t, "berth-test-nginx", suite+"-", nginxRootfs(suite), nginxImageConfig)
}

// rootfsImage returns the local image repo:tagPrefix<spec.key>: the root
// file system spec with the Dockerfile instructions config on top. It
// debootstraps and imports it if the engine lacks it, and then removes the
// replaced tags of repo that start with tagPrefix.
func rootfsImage(t testing.TB, repo, tagPrefix string, spec rootfsSpec, config string) string {
	t.Helper()
	RequireDocker(t)
	ref := repo + ":" + tagPrefix + spec.key
	return memoImage(t, ref, func(logf logFunc) (string, error) {
		return buildIfMissing(logf, ref, func() error {
			dir, err := rootfs(logf, spec)
			if err != nil {
				return err
			}
			if err := importImage(logf, ref, dir, config); err != nil {
				return err
			}
			pruneReplacedPrefix(logf, repo, tagPrefix, ref)
			return nil
		})
	})
}

// nginxImageConfig is the image configuration of the official nginx image
// that matters here. docker import cannot set STOPSIGNAL, so importImage
// applies it with a one-step build.
const nginxImageConfig = `CMD ["nginx", "-g", "daemon off;"]
STOPSIGNAL SIGQUIT
`

// importImage imports the root file system dir as ref, with the
// Dockerfile instructions config (no RUN, COPY or ADD) applied on top.
func importImage(logf logFunc, ref, dir, config string, extra ...string) error {
	base := ref + "-rootfs"
	args := []string{"--numeric-owner", "-c", "-C", dir, "."}
	err := pipe(logf,
		exec.Command("tar", append(args, extra...)...),
		exec.Command("docker", "import", "-", base))
	if err != nil {
		return err
	}
	defer TryDocker("rmi", base) // only untags: ref keeps the layer
	build := exec.Command("docker", "build", "--label", imageLabel, "-t", ref, "-")
	build.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	build.Stdin = strings.NewReader("FROM " + base + "\n" + config)
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("docker build of %s: %w\n%s", ref, err, out)
	}
	return nil
}

// GoImage returns a local Go build image: the Debian bookworm root file
// system of NginxImage plus this machine's Go at /usr/local/go (on PATH,
// GOTOOLCHAIN=local). It stands in for golang:1.26-alpine as the GO_IMAGE
// build argument of the repository's Dockerfile.
func GoImage(t testing.TB) string {
	t.Helper()
	RequireDocker(t)
	goroot, err := goEnv("GOROOT")
	if err != nil {
		t.Fatal(err)
	}
	version, err := goEnv("GOVERSION")
	if err != nil {
		t.Fatal(err)
	}
	ref := "berth-test-go:" + hashOf(imageVersion, "go", version, goroot, nginxRootfs(builderSuite).key,
		strings.Join(goRootUnneeded, ","))
	return memoImage(t, "go", func(logf logFunc) (string, error) {
		return buildIfMissing(logf, ref, func() error {
			dir, err := rootfs(logf, nginxRootfs(builderSuite))
			if err != nil {
				return err
			}
			// GOROOT's members are renamed to usr/local/go; symlink targets
			// inside it are relative and stay as they are.
			base := filepath.Base(goroot)
			args := []string{"-C", filepath.Dir(goroot),
				"--transform", "s,^" + regexp.QuoteMeta(base) + ",./usr/local/go,S"}
			for _, x := range goRootUnneeded {
				args = append(args, "--exclude="+strings.ReplaceAll(x, "GOROOT", base))
			}
			err = importImage(logf, ref, dir, goImageConfig, append(args, base)...)
			if err != nil {
				return err
			}
			pruneReplaced(logf, "berth-test-go", ref)
			return nil
		})
	})
}

// goRootUnneeded are the parts of GOROOT that building needs not: tests,
// test data and docs are more than half of its files, and every build step
// on an image pays for each file (fuse-overlayfs here: about 6 s a step
// with the whole GOROOT, under 4 s without these).
var goRootUnneeded = []string{"GOROOT/test", "GOROOT/api", "GOROOT/doc", "GOROOT/misc", "testdata", "*_test.go"}

// goImageConfig puts Go on PATH and keeps it from trying to download
// another toolchain: build containers have no network here.
const goImageConfig = `ENV PATH=/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV GOTOOLCHAIN=local
`

// pruneReplaced removes the tags of repo other than keep that no container
// uses, and the dangling build stages of earlier builds, so that a machine
// that rebuilds after every edit does not fill its disk.
func pruneReplaced(logf logFunc, repo, keep string) { pruneReplacedPrefix(logf, repo, "", keep) }

// pruneReplacedPrefix is pruneReplaced for the tags that start with prefix.
// BERTH_TESTENV_KEEP_IMAGES=1 turns pruning off: checkouts of different
// revisions testing side by side on one engine would otherwise remove each
// other's images between a build and its first docker run.
func pruneReplacedPrefix(logf logFunc, repo, prefix, keep string) {
	if os.Getenv("BERTH_TESTENV_KEEP_IMAGES") == "1" {
		return
	}
	out, err := TryDocker("images", "--format", "{{.Repository}}:{{.Tag}}", repo)
	if err != nil {
		logf("list old images: %v", err)
		return
	}
	for _, ref := range strings.Fields(out) {
		if ref != keep && strings.HasPrefix(ref, repo+":"+prefix) {
			TryDocker("rmi", ref) // fails while a container uses it; fine
		}
	}
	TryDocker("image", "prune", "-f", "--filter", "label="+imageLabel)
}

// cacheDir holds debootstrapped root file systems between runs (about
// 150 MB per suite); BERTH_TESTENV_CACHE overrides it.
func cacheDir() string {
	if d := os.Getenv("BERTH_TESTENV_CACHE"); d != "" {
		return d
	}
	return "/var/cache/berth-testenv"
}

// rootfsSpec describes one debootstrapped root file system, cached in
// cacheDir under name-key, so that every image built on the same tree
// (nginx and Go share one) pays for debootstrap once per machine.
type rootfsSpec struct {
	name     string // the cache directory's prefix: "rootfs-bookworm"
	suite    string
	packages []string
	// key digests everything that shapes the tree (suite, packages,
	// configure's files): a change makes a new directory and image tag.
	key string
	// marker is a path relative to the tree that a finished build has: a
	// cache directory without it is rebuilt.
	marker    string
	configure func(dir string) error
}

// packageRootfs is the rootfsSpec of Debian's packages in suite, for the
// image kind, cached as rootfs-<kind>-<suite>. configure (nil: nothing) runs
// on the finished tree; extra are its inputs, so that a change rebuilds.
func packageRootfs(kind, suite string, packages []string, marker string, configure func(dir string) error, extra ...string) rootfsSpec {
	if configure == nil {
		configure = func(string) error { return nil }
	}
	return rootfsSpec{
		name:      "rootfs-" + kind + "-" + suite,
		suite:     suite,
		packages:  packages,
		key:       hashOf(append([]string{imageVersion, kind, suite, strings.Join(packages, ",")}, extra...)...),
		marker:    marker,
		configure: configure,
	}
}

// rootfs returns the root file system of spec, debootstrapping it once per
// machine. Call it only under the build lock.
func rootfs(logf logFunc, spec rootfsSpec) (string, error) {
	dir := filepath.Join(cacheDir(), spec.name+"-"+spec.key)
	complete := dir + ".complete"
	if _, err := os.Stat(complete); err == nil {
		if _, err := os.Stat(filepath.Join(dir, spec.marker)); err == nil {
			return dir, nil
		}
	}
	debootstrap, err := exec.LookPath("debootstrap")
	if err != nil {
		debootstrap = "/usr/sbin/debootstrap"
		if _, err := os.Stat(debootstrap); err != nil {
			return "", errors.New("debootstrap is missing: apt-get install debootstrap")
		}
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("debootstrap of %s needs root; run the tests as root once to build the images", spec.name)
	}
	partial := dir + ".partial"
	for _, d := range []string{complete, dir, partial} {
		if err := removeTree(d); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(cacheDir(), 0o755); err != nil {
		return "", err
	}
	start := time.Now()
	logf("debootstrap %s with %s (about a minute, once per machine)", spec.suite, strings.Join(spec.packages, ","))
	err = run(logf, debootstrapMilestone, "", []string{"PATH=" + os.Getenv("PATH") + ":/usr/sbin:/sbin"},
		debootstrap, "--variant=minbase", "--include="+strings.Join(spec.packages, ","), spec.suite, partial)
	if err != nil {
		return "", err
	}
	if err := spec.configure(partial); err != nil {
		return "", err
	}
	if err := os.Rename(partial, dir); err != nil {
		return "", err
	}
	if err := os.WriteFile(complete, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return "", err
	}
	logf("debootstrap %s took %v", spec.name, time.Since(start).Round(time.Second))
	removeOtherRootfs(logf, spec.name, dir)
	return dir, nil
}

// removeOtherRootfs deletes the cached root file systems named name that
// earlier versions of these helpers made.
func removeOtherRootfs(logf logFunc, name, keep string) {
	entries, err := os.ReadDir(cacheDir())
	if err != nil {
		return
	}
	old := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `-[0-9a-f]{12}(\.complete|\.partial)?$`)
	for _, e := range entries {
		path := filepath.Join(cacheDir(), e.Name())
		if !old.MatchString(e.Name()) || strings.HasPrefix(path, keep) {
			continue
		}
		if err := removeTree(path); err != nil {
			logf("remove old root file system: %v", err)
		}
	}
}

// configureNginx replaces Debian's nginx layout with the official image's.
func configureNginx(dir string) error {
	user := "www-data"
	if passwd, err := os.ReadFile(filepath.Join(dir, "etc", "passwd")); err == nil &&
		regexp.MustCompile(`(?m)^nginx:`).Match(passwd) {
		user = "nginx"
	}
	etc := filepath.Join(dir, "etc", "nginx")
	if err := os.WriteFile(filepath.Join(etc, "nginx.conf"), []byte(fmt.Sprintf(nginxConfTemplate, user)), 0o644); err != nil {
		return err
	}
	for _, sub := range []string{"sites-enabled", "conf.d"} {
		if err := os.RemoveAll(filepath.Join(etc, sub)); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(etc, sub), 0o755); err != nil {
			return err
		}
	}
	return nil
}
