package controller

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthproxy/berth/nginxconf"
)

func TestAFailedReloadSignalIsRetriedUntilItSucceeds(t *testing.T) {
	c, eng := newTestController(t, svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80))
	eng.signalErr = errors.New("connection reset")
	if again := passAt(c, 0); again == 0 {
		t.Fatal("a failed SIGHUP must be retried")
	}
	eng.signalErr = nil
	passAt(c, 1) // nothing changed on disk, but nginx never took the change
	if eng.signals != 1 {
		t.Fatalf("%d reloads after the signal recovered, want 1", eng.signals)
	}
	passAt(c, 2)
	if eng.signals != 1 {
		t.Fatalf("%d reloads once confirmed, want still 1", eng.signals)
	}
}

func TestFilesWrittenButNotConfirmedAreValidatedAndReloadedAtTheNextStart(t *testing.T) {
	c, eng := newTestController(t, svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80))
	passAt(c, 0)
	if markerExists(c.opts.ConfDir) {
		t.Fatal("marker left after a confirmed reload")
	}
	// berth killed between write and reload: the files and the marker are on disk.
	if err := setMarker(c.opts.ConfDir); err != nil {
		t.Fatal(err)
	}
	restarted := newController(eng, c.opts)
	passAt(restarted, 1)
	if eng.signals != 2 || eng.execs != 2 {
		t.Fatalf("restart with unconfirmed files: %d reloads, %d validations; want 2 and 2", eng.signals, eng.execs)
	}
	if markerExists(c.opts.ConfDir) {
		t.Fatal("marker not cleared after the reload")
	}
	// A restart with nothing pending reloads nothing.
	passAt(newController(eng, c.opts), 2)
	if eng.signals != 2 {
		t.Fatalf("%d reloads after a clean restart, want 2", eng.signals)
	}
}

// nginx's hash-table and certificate errors name no file; berth must still
// find the one host at fault and land the others.
func TestARejectionThatNamesNoFileHoldsBackOnlyTheHostAtFault(t *testing.T) {
	var hosts []Container
	for i, h := range []string{"a.test", "b.test", "c.test", "d.test", "e.test"} {
		hosts = append(hosts, svc(h[:1], 10+i, map[string]string{"proxy.host": h}, 80))
	}
	c, eng := newTestController(t, hosts...)
	passAt(c, 0)
	bad := strings.Repeat("x", 50) + ".test"
	eng.validate = func(dir string) (int, string) {
		if _, err := os.Stat(filepath.Join(dir, "berth-"+bad+".conf")); err == nil {
			return 1, "nginx: [emerg] could not build server_names_hash, you should increase server_names_hash_bucket_size: 64"
		}
		return 0, "ok"
	}
	eng.containers = append(eng.containers,
		svc("long", 30, map[string]string{"proxy.host": bad}, 80),
		svc("f", 31, map[string]string{"proxy.host": "f.test"}, 80),
		svc("g", 32, map[string]string{"proxy.host": "g.test"}, 80))
	if again := passAt(c, 1); again == 0 {
		t.Fatal("a rejected pass should be retried")
	}
	passAt(c, 2)
	files, _ := nginxconf.ReadOwned(c.opts.ConfDir)
	for _, h := range []string{"f.test", "g.test"} {
		if files["berth-"+h+".conf"] == nil {
			t.Errorf("%s was held back by another host's rejected file", h)
		}
	}
	if files["berth-"+bad+".conf"] != nil {
		t.Error("the rejected host's file is on disk")
	}
	if markerExists(c.opts.ConfDir) || eng.signals != 2 {
		t.Fatalf("%d reloads (marker left: %v), want 2 (initial, then f and g) and no marker", eng.signals, markerExists(c.opts.ConfDir))
	}
}

func TestRejectedFileNamesAreAnchored(t *testing.T) {
	out := "nginx: [emerg] unknown directive in /etc/nginx/conf.d/old-berth-a.test.conf:3\n" +
		"nginx: [emerg] host not found in /etc/nginx/conf.d/berth-b.test.conf:12"
	var got []string
	for _, m := range rejectedFile.FindAllStringSubmatch(out, -1) {
		got = append(got, m[1])
	}
	if len(got) != 1 || got[0] != "berth-b.test.conf" {
		t.Fatalf("matched %v, want only berth-b.test.conf", got)
	}
}

func TestBisectFindsTheFileAtFaultInLogarithmicValidations(t *testing.T) {
	desired := nginxconf.Files{}
	var cands []string
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"} {
		name := "berth-" + n + ".conf"
		desired[name] = []byte(n)
		cands = append(cands, name)
	}
	for _, bad := range cands {
		tests := 0
		got, err := bisect(nginxconf.Files{}, cands, desired, func(f nginxconf.Files) (bool, error) {
			tests++
			return f[bad] == nil, nil
		})
		if err != nil || got != bad {
			t.Fatalf("bisect = %q, %v; want %s", got, err, bad)
		}
		if tests > 5 {
			t.Fatalf("%d validations for 9 files, want at most 5", tests)
		}
	}
	if _, err := bisect(nginxconf.Files{}, cands, desired, func(nginxconf.Files) (bool, error) { return false, nil }); err == nil {
		t.Fatal("a base that fails must not blame a host file")
	}
}
