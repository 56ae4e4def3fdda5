package testenv

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// backendDockerfile wraps the static e2e backend. The health check is in
// exec form because FROM scratch has no shell; containers that should not
// be health-checked run with --no-healthcheck.
const backendDockerfile = `FROM scratch
COPY backend /backend
HEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD ["/backend", "healthcheck"]
ENTRYPOINT ["/backend"]
`

// BerthImage builds the repository's ./Dockerfile, with GoImage (plus a
// build cache of the dependencies) as its GO_IMAGE and the modules vendored
// into the build context (build containers cannot download), and returns
// the image reference. The tag is a hash of the files that go into the
// image: test files, e2e/, internal/testenv/ and .ci/ are left out of the
// context, so that editing tests does not rebuild berth. A test process
// builds berth once and uses that image throughout, even if the sources
// change while it runs.
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
// the Dockerfile there, on a builder whose Go build cache already holds
// the dependencies when that can be arranged.
func buildBerth(logf logFunc, ctx, builder, ref string) error {
	err := run(logf, nil, ctx, []string{"GOFLAGS=-mod=mod", "GOWORK=off"}, goTool(), "mod", "vendor")
	if err != nil {
		return err
	}
	goImage := builder
	if warm, err := warmBuilder(logf, ctx, builder); err != nil {
		logf("building without a warm Go build cache: %v", err)
	} else {
		goImage = warm
	}
	return run(logf, dockerBuildMilestone, ctx, []string{"DOCKER_BUILDKIT=0"}, "docker", "build",
		"--force-rm", "--build-arg", "GO_IMAGE="+goImage, "--label", imageLabel, "-t", ref, ".")
}

// warmDeps compiles, in the vendored build context mounted at /src (the
// Dockerfile's WORKDIR), every non-standard package ./cmd/berth and
// ./cmd/berth-dns import,
// with the flags the Dockerfile uses, so that their compiled forms (and the
// standard library's) are in root's Go build cache.
const warmDeps = `set -e
cd /src
pkgs=$(CGO_ENABLED=0 go list -e -deps -f '{{if and .Module (not .Module.Main)}}{{.ImportPath}}{{end}}' ./cmd/berth ./cmd/berth-dns)
if [ -n "$pkgs" ]; then CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath $pkgs; fi
`

// warmBuilder returns builder plus a Go build cache of the module's
// dependencies, committed once per go.mod and go.sum: compiling them is
// about half of every berth image build, and they rarely change. The
// Dockerfile stays the repository's; only its GO_IMAGE differs.
func warmBuilder(logf logFunc, ctx, builder string) (string, error) {
	var sums []string
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(ctx, f))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		sums = append(sums, string(b))
	}
	ref := "berth-test-gowarm:" + hashOf(imageVersion, builder, warmDeps, sums[0], sums[1])
	if imageExists(ref) {
		return ref, nil
	}
	start := time.Now()
	name := "berth-test-gowarm-" + hashOf(ref, time.Now().String())
	defer TryDocker("rm", "-f", name)
	args := []string{"run", "--name", name, "-v", ctx + ":/src:ro"}
	args = append(args, LabelArgs()...)
	// Not TryDocker: its timeout is for ordinary calls, and compiling the
	// dependencies (lego's DNS providers above all) takes minutes on two cores.
	if err := run(logf, nil, "", nil, "docker", append(args, builder, "sh", "-c", warmDeps)...); err != nil {
		return "", err
	}
	if _, err := TryDocker("commit", name, ref); err != nil {
		return "", err
	}
	logf("compiled the dependencies into %s in %v", ref, time.Since(start).Round(100*time.Millisecond))
	pruneReplaced(logf, "berth-test-gowarm", ref)
	return ref, nil
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
