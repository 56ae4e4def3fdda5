package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Handler serves the read-only endpoints, the same on berth's unix socket
// and on BERTH_HTTP_ADDR:
//
//	/status         the Snapshot as JSON ("berth status --json")
//	/why?name=NAME  Why's sentences, one a line ("berth why")
//	/healthz        200 "ok" or 503 and the reason ("berth health")
//	/metrics        Prometheus metrics
//	/               the HTML status page
//
// Every endpoint is GET-only and shows nothing secret.
func Handler(src Source) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(src.Snapshot(time.Now()))
	})
	mux.HandleFunc("GET /why", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		lines, err := Why(src.Snapshot(time.Now()), r.URL.Query().Get("name"))
		if errors.Is(err, ErrUnknown) {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		fmt.Fprintln(w, strings.Join(lines, "\n"))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		s := src.Snapshot(time.Now())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !s.Healthy {
			http.Error(w, "unhealthy: "+s.HealthReason, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", MetricsHandler(src))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		body, err := RenderPage(src.Snapshot(time.Now()))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		// The page loads nothing from anywhere: say so to the browser too.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		_, _ = w.Write(body)
	})
	return mux
}
