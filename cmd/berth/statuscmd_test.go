package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berthproxy/berth/status"
)

// The CLI commands against a daemon's socket, with a board fed by hand.
func TestStatusWhyAndHealthAskTheDaemonThroughItsSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "bs") // short: a socket path has a length limit
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	board := status.NewBoard("test", nil)
	if err := serveStatus(ctx, settings{StateDir: dir}, board, cliLog(io.Discard)); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(append([]string{args[0], "--state-dir", dir}, args[1:]...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	if code, _, stderr := cli("health"); code != 1 || !strings.Contains(stderr, "no reconcile pass") {
		t.Errorf("health before a pass: exit %d, %q", code, stderr)
	}
	board.Stream(true, false)
	board.Publish(status.ControllerPart{Pass: status.Pass{ListedOK: true, Time: time.Now()},
		Nginx:      status.Nginx{Container: "nginx-1", ID: "n", Confirmed: true},
		Containers: []status.Container{{Name: "web-1", State: "running", Labels: map[string]string{"proxy.host": "a.test"}}},
		Skipped:    []status.Problem{{Container: "web-1", Reason: "shares no network with nginx; container not routed"}}})
	if code, stdout, stderr := cli("health"); code != 0 || stdout != "ok\n" {
		t.Errorf("health: exit %d, %q %q", code, stdout, stderr)
	}
	code, stdout, _ := cli("status")
	if code != 0 || !strings.Contains(stdout, "web-1") || !strings.Contains(stdout, "shares no network") {
		t.Errorf("status: exit %d:\n%s", code, stdout)
	}
	code, stdout, _ = cli("status", "--json")
	var snap status.Snapshot
	if code != 0 || json.Unmarshal([]byte(stdout), &snap) != nil || len(snap.Skipped) != 1 {
		t.Errorf("status --json: exit %d:\n%s", code, stdout)
	}
	if code, stdout, _ := cli("why", "web-1"); code != 0 || !strings.Contains(stdout, "Skipped: shares no network with nginx") {
		t.Errorf("why: exit %d:\n%s", code, stdout)
	}
	if code, _, stderr := cli("why", "nobody"); code != 1 || !strings.Contains(stderr, "no labelled container") {
		t.Errorf("why nobody: exit %d, %q", code, stderr)
	}
	cancel() // the server shuts down in the background: poll
	for deadline := time.Now().Add(5 * time.Second); ; {
		code, _, stderr := cli("health")
		if code == 1 && strings.Contains(stderr, "cannot reach the daemon") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health with no daemon: exit %d, %q", code, stderr)
		}
	}
}

// A successor sharing the state dir (a Swarm agent updated start-first)
// binds the socket path while its predecessor still runs; the
// predecessor's exit must not take the successor's socket with it.
func TestAPredecessorsExitLeavesTheSuccessorsSocket(t *testing.T) {
	dir := t.TempDir()
	old, err := listenSocket(dir)
	if err != nil {
		t.Fatal(err)
	}
	successor, err := listenSocket(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer successor.Close()
	go func() {
		for {
			c, err := successor.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	old.Close()
	c, err := net.Dial("unix", socketPath(dir))
	if err != nil {
		t.Fatalf("the successor's socket is gone after its predecessor closed: %v", err)
	}
	c.Close()
}
