// Command backend is the HTTP server berth's e2e tests put behind nginx.
//
// It listens on every port in PORTS (comma-separated, default "80") and
// answers every request with 200, the header X-Backend: $NAME and the body
//
//	name=$NAME port=<port> host=<Host header> path=<URL path>
//
// so that a test can tell which container and port nginx picked. The
// forwarding headers nginx adds (X-Forwarded-For, -Proto, -Host, -Port and
// X-Real-IP) come back as response headers prefixed with "Echo-".
//
// A POST, PUT or PATCH body is read to the end and its size added to the
// line as bytes=N (an upload test). A path ending in /sleep/<duration>
// (e.g. /sleep/3s) waits that long before answering and adds slept=<d>
// (a proxy timeout test).
//
// gRPC mode: with GRPC=1 every port, and every port in GRPC_PORTS (also
// listened on when PORTS lacks it), speaks cleartext HTTP/2 as well and
// answers any POST with content type application/grpc with one gRPC
// message, the raw bytes "name=$NAME port=<port> path=<path>", and the
// trailer grpc-status: 0.
//
// `backend healthcheck` exits 1 when HEALTHY is "0" or after `backend
// sicken` has run in the container (docker exec), and 0 otherwise: it is the
// exec-form HEALTHCHECK of the image, which has no shell.
//
// It uses only the standard library, so it builds as a static binary for a
// FROM scratch image.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// shutdownGrace bounds how long in-flight requests may finish after
// SIGTERM: tests stop and remove backends constantly, and `docker stop`
// should not wait for its 10 s kill timeout.
const shutdownGrace = 500 * time.Millisecond

// sickMarker is the file `backend sicken` creates to fail later health
// checks; the root of a FROM scratch container is writable by its root user.
const sickMarker = "/unhealthy"

func main() {
	if len(os.Args) > 1 {
		os.Exit(subcommand(os.Args[1]))
	}
	if err := serve(os.Getenv("NAME"), plan(os.Getenv("PORTS"), os.Getenv("GRPC"), os.Getenv("GRPC_PORTS"))); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func subcommand(name string) int {
	switch name {
	case "healthcheck":
		if os.Getenv("HEALTHY") == "0" {
			fmt.Fprintln(os.Stderr, "unhealthy: HEALTHY=0")
			return 1
		}
		if _, err := os.Stat(sickMarker); err == nil {
			fmt.Fprintln(os.Stderr, "unhealthy: sickened")
			return 1
		}
		return 0
	case "sicken":
		if err := os.WriteFile(sickMarker, nil, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "usage: backend [healthcheck|sicken]; unknown %q\n", name)
	return 2
}

// serve listens on every port of plan and serves until SIGTERM. Each
// listener is ":port", which on Linux takes IPv4 and IPv6 connections both.
func serve(name string, plan []listener) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var servers []*http.Server
	errs := make(chan error, 1)
	for _, l := range plan {
		ln, err := net.Listen("tcp", ":"+l.port)
		if err != nil {
			return err
		}
		h := handler(name, l.port)
		if l.grpc {
			h = grpcHandler(name, l.port, h)
		}
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			// A request waiting in /sleep/ ends at SIGTERM instead of
			// holding the shutdown grace.
			BaseContext: func(net.Listener) context.Context { return ctx },
		}
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				select {
				case errs <- err:
				default:
				}
			}
		}()
	}
	log.Printf("backend %q listening on %v", name, plan)
	select {
	case <-ctx.Done():
	case err := <-errs:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}
	return nil
}
