package testenv

import (
	"errors"
	"fmt"
	"io/fs"
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

// backendDockerfile wraps the static e2e backend. The health check is in
// exec form because FROM scratch has no shell; containers that should not
// be health-checked run with --no-healthcheck.
const backendDockerfile = `FROM scratch
COPY backend /backend
HEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD ["/backend", "healthcheck"]
ENTRYPOINT ["/backend"]
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
// engine already has it.
func buildIfMissing(logf logFunc, ref string, build func() error) (string, error) {
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

// rootfsKey identifies the cached root file system of a suite.
func rootfsKey(suite string) string {
	return hashOf(imageVersion, "rootfs", suite, strings.Join(nginxPackages(suite), ","), nginxConfTemplate)
}

// NginxImage returns a local image with nginx from the Debian suite
// ("bookworm": nginx 1.22 from nginx-light; "sid": the newest nginx),
// configured like the official nginx image, with an empty
// /etc/nginx/conf.d. It builds the image with debootstrap if it is missing.
func NginxImage(t testing.TB, suite string) string {
	t.Helper()
	RequireDocker(t)
	ref := "berth-test-nginx:" + suite + "-" + rootfsKey(suite)
	return memoImage(t, "nginx-"+suite, func(logf logFunc) (string, error) {
		return buildIfMissing(logf, ref, func() error {
			dir, err := rootfs(logf, suite)
			if err != nil {
				return err
			}
			return importImage(logf, ref, dir, nginxImageConfig)
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
	ref := "berth-test-go:" + hashOf(imageVersion, "go", version, goroot, rootfsKey(builderSuite))
	return memoImage(t, "go", func(logf logFunc) (string, error) {
		return buildIfMissing(logf, ref, func() error {
			dir, err := rootfs(logf, builderSuite)
			if err != nil {
				return err
			}
			// GOROOT's members are renamed to usr/local/go; symlink targets
			// inside it are relative and stay as they are.
			base := filepath.Base(goroot)
			return importImage(logf, ref, dir, goImageConfig,
				"-C", filepath.Dir(goroot),
				"--transform", "s,^"+regexp.QuoteMeta(base)+",./usr/local/go,S",
				base)
		})
	})
}

// goImageConfig puts Go on PATH and keeps it from trying to download
// another toolchain: build containers have no network here.
const goImageConfig = `ENV PATH=/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV GOTOOLCHAIN=local
`

// BerthImage builds the repository's ./Dockerfile, with GoImage as its
// GO_IMAGE and the modules vendored into the build context (build
// containers cannot download), and returns the image reference. The tag is
// a hash of the files that go into the image: test files, e2e/,
// internal/testenv/ and .ci/ are left out of the context, so that editing
// tests does not rebuild berth.
func BerthImage(t testing.TB) string {
	t.Helper()
	builder := GoImage(t)
	return memoImage(t, "berth", func(logf logFunc) (string, error) {
		root, err := repoRoot()
		if err != nil {
			return "", err
		}
		files, err := contextFiles(root)
		if err != nil {
			return "", err
		}
		// Hash the copy, not the working tree, so that the tag always
		// names what was built even while someone edits the sources.
		ctx, err := os.MkdirTemp("", "berth-image-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(ctx)
		for _, name := range files {
			if err := copyFile(filepath.Join(root, name), filepath.Join(ctx, name)); err != nil {
				return "", err
			}
		}
		key, err := hashFiles(ctx, files, imageVersion, builder)
		if err != nil {
			return "", err
		}
		ref := "berth-test-berth:" + key
		return buildIfMissing(logf, ref, func() error {
			if err := buildBerth(logf, ctx, builder, ref); err != nil {
				return err
			}
			pruneReplaced(logf, "berth-test-berth", ref)
			return nil
		})
	})
}

// buildBerth vendors the modules into the build context ctx and builds
// the Dockerfile there.
func buildBerth(logf logFunc, ctx, builder, ref string) error {
	err := run(logf, nil, ctx, []string{"GOFLAGS=-mod=mod", "GOWORK=off"}, goTool(), "mod", "vendor")
	if err != nil {
		return err
	}
	return run(logf, dockerBuildMilestone, ctx, []string{"DOCKER_BUILDKIT=0"}, "docker", "build",
		"--force-rm", "--build-arg", "GO_IMAGE="+builder, "--label", imageLabel, "-t", ref, ".")
}

// contextFiles lists the repository files that go into the berth image's
// build context: what git tracks or would track, without test-only files.
func contextFiles(root string) ([]string, error) {
	var names []string
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "-c", "-o", "--exclude-standard").Output()
	if err == nil {
		names = strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	} else {
		err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (d.Name() == ".git" || d.Name() == "vendor") {
				return filepath.SkipDir
			}
			if !d.IsDir() {
				rel, _ := filepath.Rel(root, path)
				names = append(names, filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	var files []string
	for _, name := range names {
		if name == "" || seen[name] || testOnly(name) {
			continue
		}
		seen[name] = true
		fi, err := os.Lstat(filepath.Join(root, name))
		if errors.Is(err, os.ErrNotExist) {
			continue // tracked but deleted in the working tree
		}
		if err != nil {
			return nil, err
		}
		if fi.Mode().IsRegular() || fi.Mode()&os.ModeSymlink != 0 {
			files = append(files, name)
		}
	}
	return files, nil
}

func testOnly(name string) bool {
	if strings.HasSuffix(name, "_test.go") {
		return true
	}
	for _, dir := range []string{"e2e", "internal/testenv", ".ci", "vendor", ".git"} {
		if name == dir || strings.HasPrefix(name, dir+"/") {
			return true
		}
	}
	return false
}

// pruneReplaced removes the other tags of repo that no container uses and
// the dangling build stages of earlier builds, so that a machine that
// rebuilds berth after every edit does not fill its disk.
func pruneReplaced(logf logFunc, repo, keep string) {
	out, err := TryDocker("images", "--format", "{{.Repository}}:{{.Tag}}", repo)
	if err != nil {
		logf("list old images: %v", err)
		return
	}
	for _, ref := range strings.Fields(out) {
		if ref != keep {
			TryDocker("rmi", ref) // fails while a container uses it; fine
		}
	}
	TryDocker("image", "prune", "-f", "--filter", "label="+imageLabel)
}

// BackendImage returns the image of the e2e test backend (e2e/backend), a
// static binary in FROM scratch with an exec-form HEALTHCHECK that fails
// when the container's HEALTHY is 0.
func BackendImage(t testing.TB) string {
	t.Helper()
	RequireDocker(t)
	return memoImage(t, "backend", func(logf logFunc) (string, error) {
		root, err := repoRoot()
		if err != nil {
			return "", err
		}
		entries, err := os.ReadDir(filepath.Join(root, "e2e", "backend"))
		if err != nil {
			return "", err
		}
		var files []string
		for _, e := range entries {
			if !e.IsDir() {
				files = append(files, filepath.ToSlash(filepath.Join("e2e", "backend", e.Name())))
			}
		}
		version, err := goEnv("GOVERSION")
		if err != nil {
			return "", err
		}
		key, err := hashFiles(root, files, imageVersion, version, backendDockerfile)
		if err != nil {
			return "", err
		}
		ref := "berth-test-backend:" + key
		return buildIfMissing(logf, ref, func() error {
			if err := buildBackend(logf, root, ref); err != nil {
				return err
			}
			pruneReplaced(logf, "berth-test-backend", ref)
			return nil
		})
	})
}

func buildBackend(logf logFunc, root, ref string) error {
	ctx, err := os.MkdirTemp("", "berth-backend-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ctx)
	err = run(logf, nil, root, []string{"CGO_ENABLED=0", "GOOS=linux"}, goTool(),
		"build", "-trimpath", "-buildvcs=false", "-o", filepath.Join(ctx, "backend"), "./e2e/backend")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(backendDockerfile), 0o644); err != nil {
		return err
	}
	return run(logf, nil, ctx, []string{"DOCKER_BUILDKIT=0"}, "docker", "build",
		"--force-rm", "--label", imageLabel, "-t", ref, ".")
}

// cacheDir holds debootstrapped root file systems between runs (about
// 150 MB per suite); BERTH_TESTENV_CACHE overrides it.
func cacheDir() string {
	if d := os.Getenv("BERTH_TESTENV_CACHE"); d != "" {
		return d
	}
	return "/var/cache/berth-testenv"
}

// rootfs returns a Debian root file system of suite with nginx configured
// like the official image, debootstrapping it once per machine. Call it
// only under the build lock.
func rootfs(logf logFunc, suite string) (string, error) {
	dir := filepath.Join(cacheDir(), "rootfs-"+suite+"-"+rootfsKey(suite))
	complete := dir + ".complete"
	if _, err := os.Stat(complete); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "etc", "nginx", "nginx.conf")); err == nil {
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
		return "", fmt.Errorf("debootstrap of %s needs root; run the tests as root once to build the images", suite)
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
	pkgs := nginxPackages(suite)
	start := time.Now()
	logf("debootstrap %s with %s (about a minute, once per machine)", suite, strings.Join(pkgs, ","))
	err = run(logf, debootstrapMilestone, "", []string{"PATH=" + os.Getenv("PATH") + ":/usr/sbin:/sbin"},
		debootstrap, "--variant=minbase", "--include="+strings.Join(pkgs, ","), suite, partial)
	if err != nil {
		return "", err
	}
	if err := configureNginx(partial); err != nil {
		return "", err
	}
	if err := os.Rename(partial, dir); err != nil {
		return "", err
	}
	if err := os.WriteFile(complete, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return "", err
	}
	logf("debootstrap %s took %v", suite, time.Since(start).Round(time.Second))
	return dir, nil
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
