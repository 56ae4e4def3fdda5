package testenv

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// logFunc receives build progress; it is the t.Logf of the test that asked
// for the image first.
type logFunc func(format string, args ...any)

// progressEvery bounds how often a long build logs a line that is not a
// milestone: a cold build prints thousands of lines, a test log wants a few.
const progressEvery = 15 * time.Second

// tailLines is how much of a failed command's output goes into its error.
const tailLines = 40

// progress is an io.Writer that logs milestone lines and, between them, at
// most one line per progressEvery, and keeps the last lines for errors.
type progress struct {
	mu        sync.Mutex
	logf      logFunc
	prefix    string
	milestone *regexp.Regexp
	last      time.Time
	partial   []byte
	tail      []string
}

func newProgress(logf logFunc, prefix string, milestone *regexp.Regexp) *progress {
	return &progress{logf: logf, prefix: prefix, milestone: milestone, last: time.Now()}
}

func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.line(strings.TrimRight(string(p.partial[:i]), "\r"))
		p.partial = p.partial[i+1:]
	}
	return len(b), nil
}

func (p *progress) line(s string) {
	if strings.TrimSpace(s) == "" {
		return
	}
	p.tail = append(p.tail, s)
	if len(p.tail) > tailLines {
		p.tail = p.tail[len(p.tail)-tailLines:]
	}
	if (p.milestone != nil && p.milestone.MatchString(s)) || time.Since(p.last) >= progressEvery {
		p.logf("%s: %s", p.prefix, s)
		p.last = time.Now()
	}
}

func (p *progress) lastLines() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// run runs a command whose output is progress, not data.
func run(logf logFunc, milestone *regexp.Regexp, dir string, env []string, name string, args ...string) error {
	p := newProgress(logf, filepath.Base(name), milestone)
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = p, p
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, p.lastLines())
	}
	return nil
}

// pipe runs `from | to` and reports the first failure of either. The
// parent closes its ends of the pipe at once, so that either side dying
// ends the other instead of blocking it forever.
func pipe(logf logFunc, from, to *exec.Cmd) error {
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	var fromErr bytes.Buffer
	p := newProgress(logf, filepath.Base(to.Path), nil)
	from.Stdout, from.Stderr = pw, &fromErr
	to.Stdin, to.Stdout, to.Stderr = pr, p, p
	errStart := from.Start()
	if errStart == nil {
		if errStart = to.Start(); errStart != nil {
			from.Process.Kill()
			from.Wait()
		}
	}
	pr.Close()
	pw.Close()
	if errStart != nil {
		return errStart
	}
	errFrom, errTo := from.Wait(), to.Wait()
	if errTo != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(to.Args, " "), errTo, p.lastLines())
	}
	if errFrom != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(from.Args, " "), errFrom, fromErr.String())
	}
	return nil
}

// hashOf returns a short, stable digest of parts, used in image tags and
// cache directory names so that any change of an input rebuilds.
func hashOf(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// hashFiles digests the names, executable bits and contents of files under root.
func hashFiles(root string, files []string, extra ...string) (string, error) {
	sorted := append([]string(nil), files...)
	sort.Strings(sorted)
	h := sha256.New()
	for _, e := range extra {
		fmt.Fprintf(h, "extra %d:%s\n", len(e), e)
	}
	for _, name := range sorted {
		path := filepath.Join(root, name)
		fi, err := os.Lstat(path)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "file %d:%s %o\n", len(name), name, fi.Mode()&(os.ModeSymlink|0o111))
		if fi.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(path)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "link %d:%s\n", len(target), target)
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "size %d\n", fi.Size())
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// withBuildLock runs fn while holding an exclusive flock shared by every test
// process on the machine, so that two test binaries never build (or
// debootstrap) the same thing at once. Callers check for the finished image
// inside fn. Never nest: a second lock in the same process would deadlock.
func withBuildLock(logf logFunc, fn func() error) error {
	path := filepath.Join(os.TempDir(), "berth-testenv-build.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		logf("waiting for another test process that is building images (%s)", path)
		for {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
			if !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("lock %s: %w", path, err)
		}
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

// imageExists reports whether the engine has an image with this reference.
func imageExists(ref string) bool {
	_, err := TryDocker("image", "inspect", "--format", "{{.Id}}", ref)
	return err == nil
}

// goTool returns the go command the tests were started with.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// goEnv returns `go env name`.
func goEnv(name string) (string, error) {
	out, err := exec.Command(goTool(), "env", name).Output()
	if err != nil {
		return "", fmt.Errorf("go env %s: %w", name, err)
	}
	v := strings.TrimSpace(string(out))
	if v == "" {
		return "", fmt.Errorf("go env %s is empty", name)
	}
	return v, nil
}

// copyFile copies one regular file or symlink, keeping the executable bits.
func copyFile(src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mounts = append(mounts, mp)
		}
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	return mounts, sc.Err()
}

// unescapeMount undoes the octal escapes of /proc/self/mountinfo.
func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// removeTree deletes a directory that an interrupted debootstrap may have
// left with /proc, /sys or a bind mount of the host's /dev inside: it
// unmounts them first and refuses to delete anything while a mount remains,
// because deleting through a bind mount would delete the host's files.
func removeTree(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", m, err)
		}
	}
	if mounts, err = mountsUnder(dir); err != nil || len(mounts) > 0 {
		return fmt.Errorf("refusing to delete %s: still mounted below it: %v (err %v)", dir, mounts, err)
	}
	return os.RemoveAll(dir)
}
