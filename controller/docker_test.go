package controller

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/docker/client"
)

// A Docker daemon (or socket proxy) that accepts and never answers must
// not stall the loop: every call gives up after its timeout.
func TestDockerCallsGiveUpOnAHungEngine(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release })}
	go srv.Serve(ln)
	t.Cleanup(func() { close(release); srv.Close() })
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	d := newDockerEngine(cli)
	d.callTimeout, d.execTimeout = 50*time.Millisecond, 50*time.Millisecond
	calls := map[string]func() error{
		"list":   func() error { _, err := d.List(context.Background()); return err },
		"exec":   func() error { _, _, err := d.Exec(context.Background(), "nginx", []string{"nginx", "-t"}); return err },
		"signal": func() error { return d.Signal(context.Background(), "nginx", "HUP") },
	}
	for name, call := range calls {
		done := make(chan error, 1)
		go func() { done <- call() }()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s on a hung engine: %v, want a deadline error", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s on a hung engine did not return", name)
		}
	}
}
