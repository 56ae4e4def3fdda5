package controller

// Integration tests of the loop against a real nginx: Docker is the unit
// layer's fake, but every `nginx -t` is the host nginx validating the files
// the controller wrote.

import (
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthproxy/berth/internal/testenv"
	"github.com/berthproxy/berth/nginxconf"
)

// realNginxEngine is a fakeEngine whose nginx -t is the host nginx on a
// prefix whose conf.d is the controller's conf dir.
func realNginxEngine(t *testing.T) (*fakeEngine, string) {
	bin := testenv.RequireNginx(t)
	prefix := testenv.NginxPrefix(t, testenv.NginxBuild(t, bin, "-V"))
	confDir := filepath.Join(prefix, "conf.d")
	eng := &fakeEngine{containers: []Container{testNginx}, confDir: confDir}
	eng.validate = func(string) (int, string) {
		out, err := testenv.NginxT(prefix, bin)
		if err != nil {
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				return exit.ExitCode(), out
			}
			return 1, out + err.Error()
		}
		return 0, out
	}
	return eng, confDir
}

// A certificate nginx cannot load makes `nginx -t` fail without naming a
// config file: berth must find the host at fault by itself and land the
// other hosts of the same change.
func TestACertificateNginxCannotLoadHoldsBackOnlyItsHost(t *testing.T) {
	eng, confDir := realNginxEngine(t)
	certDir := t.TempDir()
	chain, key, _ := testenv.SelfSigned(t, "good.test", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	for name, data := range map[string][]byte{"good.pem": chain, "good.key": key, "bad.pem": []byte("not a certificate\n")} {
		if err := os.WriteFile(filepath.Join(certDir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	certs := &fakeCerts{changed: make(chan struct{}), certs: map[string]CertFiles{
		"good.test": {Chain: filepath.Join(certDir, "good.pem"), Key: filepath.Join(certDir, "good.key")},
		"bad.test":  {Chain: filepath.Join(certDir, "bad.pem"), Key: filepath.Join(certDir, "bad.pem")},
	}}
	listen := func() string { return "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) }
	c := newController(eng, Options{ConfDir: confDir, Webroot: "/var/www/acme", Certs: certs, Listen: [2]string{listen(), listen()}})
	eng.set(svc("good", 2, map[string]string{"proxy.host": "good.test"}, 80),
		svc("bad", 3, map[string]string{"proxy.host": "bad.test"}, 80),
		svc("plain", 4, map[string]string{"proxy.host": "plain.test"}, 80))
	if again := passAt(c, 0); again == 0 {
		t.Fatal("the rejected pass should be retried")
	}
	passAt(c, 1)
	files, err := nginxconf.ReadOwned(confDir)
	if err != nil {
		t.Fatal(err)
	}
	if files["berth-good.test.conf"] == nil || files["berth-plain.test.conf"] == nil {
		t.Fatalf("good.test and plain.test were held back by bad.test's certificate; files: %v", slices.Sorted(maps.Keys(files)))
	}
	if files["berth-bad.test.conf"] != nil {
		t.Fatal("bad.test's file is on disk although nginx cannot load its certificate")
	}
	if code, out := eng.validate(confDir); code != 0 {
		t.Fatalf("the files on disk fail nginx -t:\n%s", out)
	}
	if eng.signals != 1 {
		t.Fatalf("%d reloads, want 1", eng.signals)
	}
	if !strings.Contains(string(files["berth-good.test.conf"]), "good.pem") {
		t.Fatal("good.test is served without its certificate")
	}
}
