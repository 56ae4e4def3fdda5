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
	"strings"
	"syscall"
	"time"
)

// echoed are the request headers returned as Echo-<name> response headers.
var echoed = []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Real-IP"}

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
	if err := serve(os.Getenv("NAME"), os.Getenv("PORTS")); err != nil {
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

func serve(name, ports string) error {
	if ports == "" {
		ports = "80"
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var servers []*http.Server
	errs := make(chan error, 1)
	for _, port := range strings.Split(ports, ",") {
		port = strings.TrimSpace(port)
		ln, err := net.Listen("tcp", ":"+port)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: handler(name, port), ReadHeaderTimeout: 5 * time.Second}
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
	log.Printf("backend %q listening on %s", name, ports)
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

func handler(name, port string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Backend", name)
		h.Set("Content-Type", "text/plain; charset=utf-8")
		for _, k := range echoed {
			if v := r.Header.Get(k); v != "" {
				h.Set("Echo-"+k, v)
			}
		}
		fmt.Fprintf(w, "name=%s port=%s host=%s path=%s\n", name, port, r.Host, r.URL.Path)
	})
}
