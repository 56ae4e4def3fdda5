package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// echoed are the request headers returned as Echo-<name> response headers.
var echoed = []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Real-IP"}

// maxSleep bounds /sleep/<duration>: a typo such as /sleep/10h must not
// hold a connection (and `docker stop`) for hours.
const maxSleep = 5 * time.Minute

// sleepSegment marks the slow path. It is matched anywhere in the path, so
// /api/sleep/3s is slow whether or not nginx strips the /api prefix.
const sleepSegment = "/sleep/"

// handler answers every request with the echo line. A request with a body
// (POST, PUT, PATCH) has the body read to the end first and its size added
// as bytes=N, so a test can tell an upload passed nginx whole. A path
// ending in /sleep/<duration> waits that long first, so a test can make
// nginx's proxy_read_timeout expire.
func handler(name, port string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Backend", name)
		h.Set("Content-Type", "text/plain; charset=utf-8")
		echoHeaders(h, r.Header)
		line := fmt.Sprintf("name=%s port=%s host=%s path=%s", name, port, r.Host, r.URL.Path)
		if hasBody(r.Method) {
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, fmt.Sprintf("read body after %d bytes: %v", n, err), http.StatusBadRequest)
				return
			}
			line += fmt.Sprintf(" bytes=%d", n)
		}
		if d, ok, err := sleepFor(r.URL.Path); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		} else if ok {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
			case <-r.Context().Done():
				return // nginx gave up (its read timeout) or the backend is stopping
			}
			line += " slept=" + d.String()
		}
		fmt.Fprintln(w, line)
	})
}

func echoHeaders(dst, src http.Header) {
	for _, k := range echoed {
		if v := src.Get(k); v != "" {
			dst.Set("Echo-"+k, v)
		}
	}
}

func hasBody(method string) bool {
	return method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch
}

// sleepFor reads the duration of a path ending in /sleep/<duration>. ok is
// false for every other path; a malformed or too long duration is an error
// naming it.
func sleepFor(path string) (d time.Duration, ok bool, err error) {
	i := strings.LastIndex(path, sleepSegment)
	if i < 0 {
		return 0, false, nil
	}
	v := path[i+len(sleepSegment):]
	d, err = time.ParseDuration(v)
	if err != nil {
		return 0, false, fmt.Errorf("sleep duration %q: %w", v, err)
	}
	if d < 0 || d > maxSleep {
		return 0, false, fmt.Errorf("sleep duration %q: want 0 to %v", v, maxSleep)
	}
	return d, true, nil
}
