package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// A steady keep-alive HTTP load against nginx, counted the way wrk counts,
// so that a test or benchmark can say "no failed requests" while berth
// reloads nginx under it. Real clients keep connections open; every reload
// ends the old workers' keep-alive connections, and a request that was
// written into a connection the server then closed without answering is
// a failure a user sees (a browser may retry it, wrk and most API clients
// do not).
//
// Each connection is one goroutine with one TCP connection that sends
// `GET / HTTP/1.1` for the host, reads the whole response and sends the
// next one on the same connection. The pace is fixed: a connection starts
// a request at most every loadInterval (sooner is not possible while one
// is in flight), so the load stays a small, constant share of this 2-core
// machine and does not itself slow down what the benchmarks measure.
// Between requests a connection is idle, as a real client's is, so nginx
// closing idle keep-alive connections at a reload is exercised too.
//
// Counting, as wrk does:
//   - a response read whole is a request (Requests), with its status in
//     Statuses; a status outside 2xx/3xx is also BadStatus;
//   - a response that says "Connection: close" (nginx's clean close of a
//     keep-alive connection, e.g. by an old worker at a reload) is fine:
//     the connection reconnects before the next request, as wrk does;
//   - a failed connect, a failed write, a request written that got no
//     (or a truncated) response because the connection was closed or
//     reset, and a request without a whole response within loadTimeout
//     are Errors; the connection is closed and dialled again.

// loadInterval is the pace of one load connection: one request started at
// most every loadInterval, i.e. at most 200 requests/s per connection.
const loadInterval = 5 * time.Millisecond

// loadTimeout bounds one request of the load, wrk's default timeout (2 s).
const loadTimeout = 2 * time.Second

// loadResult is what a load counted; see the package comment above.
type loadResult struct {
	Requests, Errors, BadStatus int
	Statuses                    map[int]int
}

func (r loadResult) String() string {
	codes := slices.Sorted(maps.Keys(r.Statuses))
	s := fmt.Sprintf("%d requests, %d errors, %d bad status", r.Requests, r.Errors, r.BadStatus)
	for _, c := range codes {
		s += fmt.Sprintf(", %d×%d", r.Statuses[c], c)
	}
	return s
}

// load is a running steady load; Stop ends it.
type load struct {
	s    *stack
	host string
	stop chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	res    loadResult
	kinds  map[string]int // errors by kind: connect, write, read, timeout
	first  map[string]string
	stopMu sync.Once
}

// startLoad runs conns keep-alive connections sending GET / for host to
// s's nginx HTTP port (127.0.0.1:s.port, re-read on every connect so a
// restarted nginx is followed), each at the fixed pace of loadInterval.
// The caller makes sure host is served before; Stop returns the counts.
func (s *stack) startLoad(host string, conns int) *load {
	l := &load{
		s: s, host: host, stop: make(chan struct{}),
		res:   loadResult{Statuses: map[int]int{}},
		kinds: map[string]int{}, first: map[string]string{},
	}
	for range conns {
		l.wg.Add(1)
		go l.run()
	}
	return l
}

// Stop ends the load and returns what it counted. A request in flight is
// finished (or times out) first. It logs the errors by kind.
func (l *load) Stop() loadResult {
	l.stopMu.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	res := l.res
	res.Statuses = maps.Clone(l.res.Statuses)
	if res.Errors > 0 {
		l.s.t.Logf("load on %s: %v; errors by kind %v; first of each: %v", l.host, res, l.kinds, l.first)
	}
	return res
}

func (l *load) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// run is one connection's loop.
func (l *load) run() {
	defer l.wg.Done()
	req := []byte("GET / HTTP/1.1\r\nHost: " + l.host + "\r\nUser-Agent: berth-e2e-load\r\nAccept: */*\r\n\r\n")
	var c net.Conn
	var br *bufio.Reader
	drop := func() {
		if c != nil {
			c.Close()
			c, br = nil, nil
		}
	}
	defer drop()
	next := time.Now()
	for !l.stopped() {
		if d := time.Until(next); d > 0 {
			select {
			case <-l.stop:
				return
			case <-time.After(d):
			}
		}
		next = time.Now().Add(loadInterval)
		if c == nil {
			l.s.mu.Lock()
			port := l.s.port
			l.s.mu.Unlock()
			var err error
			c, err = net.DialTimeout("tcp", "127.0.0.1:"+port, loadTimeout)
			if err != nil {
				c = nil
				l.fail("connect", err)
				continue
			}
			br = bufio.NewReader(c)
		}
		status, closing, kind, err := exchange(c, br, req)
		if err != nil {
			l.fail(kind, err)
			drop()
			continue
		}
		l.ok(status)
		if closing {
			drop()
		}
	}
}

// exchange writes one request on c and reads its whole response. kind
// names the failure: write, read or timeout.
func exchange(c net.Conn, br *bufio.Reader, req []byte) (status int, closing bool, kind string, err error) {
	if err := c.SetDeadline(time.Now().Add(loadTimeout)); err != nil {
		return 0, false, "write", err
	}
	if _, err := c.Write(req); err != nil {
		return 0, false, errKind("write", err), err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, false, errKind("read", err), err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, false, errKind("read", err), err
	}
	return resp.StatusCode, resp.Close, "", nil
}

func errKind(op string, err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return op
}

func (l *load) ok(status int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.res.Requests++
	l.res.Statuses[status]++
	if status < 200 || status >= 400 {
		l.res.BadStatus++
	}
}

func (l *load) fail(kind string, err error) {
	if l.stopped() && kind == "connect" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.res.Errors++
	l.kinds[kind]++
	if _, ok := l.first[kind]; !ok {
		l.first[kind] = err.Error()
	}
}

// TestLoadCountsLikeWrk runs the load against small servers on loopback
// that answer in the ways nginx does around a reload, and checks what is
// counted as a failure. It needs no Docker.
func TestLoadCountsLikeWrk(t *testing.T) {
	for _, tc := range []struct {
		name string
		// answer handles the n-th request (from 0) on one connection; it
		// returns false to close the connection instead of answering.
		answer              func(n int) (resp string, ok bool)
		wantErrors, wantBad bool
	}{
		{"keep-alive 200", func(int) (string, bool) { return ok200, true }, false, false},
		{"Connection: close after each answer", func(int) (string, bool) { return close200, true }, false, false},
		{"closed with a request unanswered", func(n int) (string, bool) { return ok200, n < 2 }, true, false},
		{"502", func(int) (string, bool) { return bad502, true }, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go serveLoadTest(ln, tc.answer)
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			s := &stack{t: t, port: port}
			l := s.startLoad("x.test", 2)
			time.Sleep(200 * time.Millisecond)
			res := l.Stop()
			t.Logf("%v", res)
			if res.Requests == 0 {
				t.Fatalf("no request answered: %v", res)
			}
			if (res.Errors > 0) != tc.wantErrors {
				t.Errorf("errors = %d, want errors: %v", res.Errors, tc.wantErrors)
			}
			if (res.BadStatus > 0) != tc.wantBad || (tc.wantBad && res.BadStatus != res.Requests) {
				t.Errorf("bad status = %d of %d, want bad: %v", res.BadStatus, res.Requests, tc.wantBad)
			}
		})
	}
}

const (
	ok200    = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
	close200 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
	bad502   = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 2\r\n\r\nno"
)

func serveLoadTest(ln net.Listener, answer func(int) (string, bool)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			for n := 0; ; n++ {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				req.Body.Close()
				resp, ok := answer(n)
				if !ok {
					return
				}
				if _, err := io.WriteString(c, resp); err != nil || strings.Contains(resp, "Connection: close") {
					return
				}
			}
		}()
	}
}
