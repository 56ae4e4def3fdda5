package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/status"
)

// socketName is berth's CLI socket in the state directory: "berth status",
// "berth why" and "berth health" ask the daemon through it, so they work
// with "docker compose exec berth /berth status".
const socketName = "berth.sock"

func socketPath(stateDir string) string { return filepath.Join(stateDir, socketName) }

// shutdownGrace bounds how long a status request in progress may delay
// berth's exit.
const shutdownGrace = 2 * time.Second

// serveStatus answers status requests on the state directory's socket and,
// with BERTH_HTTP_ADDR, over HTTP (which adds nothing but reach: the same
// handler, read-only). It returns once both listen; they stop with ctx. A
// socket that cannot be created is logged, not fatal: nginx keeps being
// configured, and "berth health" then reports the problem.
func serveStatus(ctx context.Context, s settings, board *status.Board, log *logrus.Entry) error {
	handler := status.Handler(board)
	if l, err := listenSocket(s.StateDir); err != nil {
		log.WithError(err).Warn("no status socket: berth status, why and health will not work")
	} else {
		serveHTTP(ctx, l, handler, log)
	}
	if s.HTTPAddr == "" {
		return nil
	}
	l, err := net.Listen("tcp", s.HTTPAddr)
	if err != nil {
		return fmt.Errorf("BERTH_HTTP_ADDR: %w", err)
	}
	log.WithField("addr", l.Addr().String()).Info("serving /metrics, /status, /healthz and the status page")
	serveHTTP(ctx, l, handler, log)
	return nil
}

// listenSocket replaces a socket left by an earlier run; only berth's own
// user may connect.
func listenSocket(stateDir string) (net.Listener, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	path := socketPath(stateDir)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	// Never unlink the path on close: the state dir can be a volume that
	// a successor shares (a Swarm agent updated start-first), whose socket
	// is at this path by then; the next start removes a stale one above.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func serveHTTP(ctx context.Context, l net.Listener, h http.Handler, log *logrus.Entry) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error("status server stopped")
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
}

// certSource is the manager's CertStatus, or nil without ACME (never a
// typed nil inside the interface).
func certSource(m interface {
	CertStatus(time.Time) status.CertPart
}, enabled bool) status.CertSource {
	if !enabled {
		return nil
	}
	return m
}
