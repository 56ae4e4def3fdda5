package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/controller"
	"github.com/berthproxy/berth/nginxconf"
)

// fakeEngine is the node's Docker engine: one labelled nginx container, an
// nginx -t verdict on the conf dir, and a count of reload signals.
type fakeEngine struct {
	mu       sync.Mutex
	noNginx  bool
	confDir  string
	validate func(confDir string) (int, string) // nginx -t; nil passes
	reload   func() error                       // what SIGHUP does; nil does nothing
	signals  int
}

var testNginx = controller.Container{ID: "nginx1", Name: "nginx", Running: true, Labels: map[string]string{controller.LabelNginx: "true"}}

func (f *fakeEngine) List(context.Context) ([]controller.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noNginx {
		return nil, nil
	}
	return []controller.Container{testNginx}, nil
}

func (f *fakeEngine) Events(context.Context) (<-chan string, <-chan error) {
	return make(chan string), make(chan error)
}

func (f *fakeEngine) Exec(_ context.Context, _ string, cmd []string) (int, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if slices.Contains(cmd, "-V") {
		return 0, "nginx version: nginx/1.22.1", nil
	}
	if f.validate != nil {
		code, out := f.validate(f.confDir)
		return code, out, nil
	}
	return 0, "syntax is ok", nil
}

func (f *fakeEngine) Signal(context.Context, string, string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.signals++
	if f.reload != nil {
		return f.reload()
	}
	return nil
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

var testSecret = []byte("test-secret")

// testAgent is an agent on an httptest server with its own directories.
type testAgent struct {
	url, confDir, certsDir, webroot string
	eng                             *fakeEngine
}

func newTestAgent(t *testing.T, eng *fakeEngine) testAgent {
	t.Helper()
	return serveAgent(t, testAgent{confDir: t.TempDir(), certsDir: t.TempDir(), webroot: t.TempDir(), eng: eng})
}

// serveAgent starts an agent on a's directories and returns it with its URL.
func serveAgent(t *testing.T, a testAgent) testAgent {
	t.Helper()
	eng := a.eng
	eng.confDir = a.confDir
	node := controller.NewNode(eng, controller.NewNginx(eng, "", "", ""), a.confDir)
	srv, err := New(node, Options{Secret: testSecret, CertsDir: a.certsDir, Webroot: a.webroot}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	a.url = hs.URL
	return a
}

func (a testAgent) files(t *testing.T) nginxconf.Files {
	t.Helper()
	files, err := nginxconf.ReadOwned(a.confDir)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// sites is a push of the default server plus one file per host.
func sites(gen uint64, hosts ...string) Payload {
	p := Payload{Generation: gen, Files: map[string]string{nginxconf.DefaultFile: "# default\n"}}
	for _, h := range hosts {
		p.Files["berth-"+h+".conf"] = "# " + h + "\n"
	}
	return p
}

func TestAPushLandsOnceAndAnIdenticalPushChangesNothing(t *testing.T) {
	a := newTestAgent(t, &fakeEngine{})
	resp, err := Push(context.Background(), a.url, testSecret, sites(1, "a.test"))
	if err != nil || resp.Result != ResultOK || resp.Generation != 1 {
		t.Fatalf("first push: %+v, %v; want ok", resp, err)
	}
	if got := a.files(t); string(got["berth-a.test.conf"]) != "# a.test\n" {
		t.Fatalf("a.test's file not written: %v", got)
	}
	resp, err = Push(context.Background(), a.url, testSecret, sites(1, "a.test"))
	if err != nil || resp.Result != ResultUnchanged {
		t.Fatalf("same push again: %+v, %v; want unchanged", resp, err)
	}
	if a.eng.signals != 1 {
		t.Fatalf("%d reloads, want 1", a.eng.signals)
	}
	resp, err = Push(context.Background(), a.url, testSecret, sites(2))
	if err != nil || resp.Result != ResultOK || a.files(t)["berth-a.test.conf"] != nil {
		t.Fatalf("push without a.test: %+v, %v; its file should be gone", resp, err)
	}
}

func TestARejectedHostIsHeldAndTheOthersLand(t *testing.T) {
	eng := &fakeEngine{validate: func(dir string) (int, string) {
		if _, err := os.Stat(filepath.Join(dir, "berth-bad.test.conf")); err == nil {
			return 1, fmt.Sprintf("nginx: [emerg] unknown directive \"bogus\" in %s/berth-bad.test.conf:1\nnginx: configuration file test failed", dir)
		}
		return 0, "syntax is ok"
	}}
	a := newTestAgent(t, eng)
	if resp, err := Push(context.Background(), a.url, testSecret, sites(1, "old.test")); err != nil || resp.Result != ResultOK {
		t.Fatalf("first push: %+v, %v", resp, err)
	}
	resp, err := Push(context.Background(), a.url, testSecret, sites(2, "old.test", "bad.test", "new.test"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Result != ResultRejected || !slices.Equal(resp.Held, []string{"berth-bad.test.conf"}) || !strings.Contains(resp.Error, "bogus") {
		t.Fatalf("push with a bad host: %+v; want rejected, held bad.test, nginx's message", resp)
	}
	files := a.files(t)
	if files["berth-new.test.conf"] == nil || files["berth-old.test.conf"] == nil || files["berth-bad.test.conf"] != nil {
		t.Fatalf("files on disk: %v; want old.test and new.test without bad.test", slices.Sorted(maps.Keys(files)))
	}
	if eng.signals != 2 {
		t.Fatalf("%d reloads, want 2 (one per push that landed)", eng.signals)
	}
	resp, _ = Push(context.Background(), a.url, testSecret, sites(3, "old.test", "bad.test", "new.test"))
	if resp.Result != ResultRejected || !slices.Equal(resp.Held, []string{"berth-bad.test.conf"}) || eng.signals != 2 {
		t.Fatalf("the same bad push again: %+v, %d reloads; want rejected, held, no reload", resp, eng.signals)
	}
}

func TestForgedAndReplayedPushesChangeNothing(t *testing.T) {
	a := newTestAgent(t, &fakeEngine{})
	if _, err := Push(context.Background(), a.url, testSecret, sites(5, "a.test")); err != nil {
		t.Fatal(err)
	}
	before := a.files(t)
	_, err := Push(context.Background(), a.url, []byte("guessed"), sites(6, "evil.test"))
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("forged push: %v; want HTTP 401", err)
	}
	resp, err := Push(context.Background(), a.url, testSecret, sites(4, "old.test"))
	if !errors.Is(err, ErrOldGeneration) || resp.Generation != 5 {
		t.Fatalf("older generation: %+v, %v; want ErrOldGeneration naming generation 5", resp, err)
	}
	if err := PutChallenge(context.Background(), a.url, []byte("guessed"), "tok", "x"); err == nil {
		t.Fatal("forged challenge accepted")
	}
	if got := a.files(t); !maps.EqualFunc(got, before, bytes.Equal) || a.eng.signals != 1 {
		t.Fatalf("files changed or nginx reloaded by a refused push: %v", slices.Sorted(maps.Keys(got)))
	}
	if _, err := os.Stat(filepath.Join(a.webroot, ".well-known/acme-challenge/tok")); err == nil {
		t.Fatal("a forged challenge was written")
	}
}

func TestAPushOfFilesThatAreNotBerthsIsRefused(t *testing.T) {
	a := newTestAgent(t, &fakeEngine{})
	for name, p := range map[string]Payload{
		"a user's file":       {Generation: 1, Files: map[string]string{nginxconf.DefaultFile: "", "default.conf": "x"}},
		"no default server":   {Generation: 1, Files: map[string]string{"berth-a.test.conf": "x"}},
		"a cert outside":      {Generation: 1, Files: map[string]string{nginxconf.DefaultFile: ""}, Certs: map[string]string{"../x": "y"}},
		"a path in the files": {Generation: 1, Files: map[string]string{nginxconf.DefaultFile: "", "berth-../x.conf": ""}},
	} {
		if resp, err := Push(context.Background(), a.url, testSecret, p); err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("%s: %+v, %v; want HTTP 400", name, resp, err)
		}
	}
	if got := a.files(t); len(got) != 0 {
		t.Fatalf("refused pushes wrote %v", slices.Sorted(maps.Keys(got)))
	}
}

func TestCertificatesAreWrittenOnceWithPrivateKeysPrivate(t *testing.T) {
	a := newTestAgent(t, &fakeEngine{})
	p := sites(1, "a.test")
	p.Certs = map[string]string{"a.test/v1/fullchain.pem": "-----BEGIN CERTIFICATE-----\n", "a.test/v1/privkey.pem": "-----BEGIN EC PRIVATE KEY-----\n"}
	if resp, err := Push(context.Background(), a.url, testSecret, p); err != nil || resp.Result != ResultOK {
		t.Fatalf("push: %+v, %v", resp, err)
	}
	for name, mode := range map[string]os.FileMode{"fullchain.pem": 0o644, "privkey.pem": 0o600} {
		fi, err := os.Stat(filepath.Join(a.certsDir, "a.test/v1", name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: %v, mode %v; want %v", name, err, fi.Mode().Perm(), mode)
		}
	}
	p.Generation, p.Certs["a.test/v1/fullchain.pem"] = 2, "changed"
	if _, err := Push(context.Background(), a.url, testSecret, p); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(a.certsDir, "a.test/v1/fullchain.pem")); string(got) == "changed" {
		t.Fatal("an existing certificate version was rewritten")
	}
}

func TestChallengeTokensAreWorldReadableAndRemovable(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	a := newTestAgent(t, &fakeEngine{})
	if err := PutChallenge(context.Background(), a.url, testSecret, "tok-1_A", "tok-1_A.thumb"); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(a.webroot, ".well-known", "acme-challenge", "tok-1_A")
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("token: %v; want mode 0644 under umask 077", err)
	}
	if di, _ := os.Stat(filepath.Dir(p)); di.Mode().Perm() != 0o755 {
		t.Fatalf("challenge dir mode %v, want 0755", di.Mode().Perm())
	}
	if got, _ := os.ReadFile(p); string(got) != "tok-1_A.thumb" {
		t.Fatalf("token holds %q", got)
	}
	if err := PutChallenge(context.Background(), a.url, testSecret, "..", "x"); err == nil {
		t.Fatal("a token outside base64url was accepted")
	}
	if err := DeleteChallenge(context.Background(), a.url, testSecret, "tok-1_A"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("token still there after DELETE: %v", err)
	}
}

func TestHealthzSaysWhetherNginxIsConfirmed(t *testing.T) {
	eng := &fakeEngine{}
	a := newTestAgent(t, eng)
	get := func() int {
		resp, err := http.Get(a.url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("with nginx: %d, want 200", code)
	}
	eng.mu.Lock()
	eng.noNginx = true
	eng.mu.Unlock()
	if code := get(); code != http.StatusServiceUnavailable {
		t.Fatalf("without nginx: %d, want 503", code)
	}
	resp, err := Push(context.Background(), a.url, testSecret, sites(1, "a.test"))
	if err != nil || resp.Result != ResultFailed || !strings.Contains(resp.Error, "nginx") {
		t.Fatalf("push without nginx: %+v, %v; want failed naming nginx", resp, err)
	}
}

func TestResultNamesWhatConvergeDid(t *testing.T) {
	for _, tc := range []struct {
		out  controller.Outcome
		err  error
		want string
	}{
		{controller.Outcome{}, nil, ResultUnchanged},
		{controller.Outcome{Changed: true}, nil, ResultOK},
		{controller.Outcome{Changed: true, Held: []string{"berth-x.conf"}}, nil, ResultRejected},
		{controller.Outcome{}, fmt.Errorf("x: %w", controller.ErrRejected), ResultRejected},
		{controller.Outcome{}, io.ErrUnexpectedEOF, ResultFailed},
	} {
		if got := result(tc.out, tc.err); got != tc.want {
			t.Errorf("result(%+v, %v) = %s, want %s", tc.out, tc.err, got, tc.want)
		}
	}
}

func TestARestartedAgentStillRefusesAnOlderGeneration(t *testing.T) {
	file := filepath.Join(t.TempDir(), "generation")
	eng := &fakeEngine{}
	dir := t.TempDir()
	eng.confDir = dir
	start := func() *httptest.Server {
		node := controller.NewNode(eng, controller.NewNginx(eng, "", "", ""), dir)
		srv, err := New(node, Options{Secret: testSecret, CertsDir: t.TempDir(), Webroot: t.TempDir(), GenerationFile: file}, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv.Handler())
		t.Cleanup(hs.Close)
		return hs
	}
	if _, err := Push(context.Background(), start().URL, testSecret, sites(7, "a.test")); err != nil {
		t.Fatal(err)
	}
	if _, err := Push(context.Background(), start().URL, testSecret, sites(6)); !errors.Is(err, ErrOldGeneration) {
		t.Fatalf("generation 6 after a restart that took 7: %v; want ErrOldGeneration", err)
	}
	if err := os.WriteFile(file, []byte("seven"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(nil, Options{Secret: testSecret, GenerationFile: file}, quietLog()); err == nil {
		t.Fatal("an unreadable generation file was ignored")
	}
}
