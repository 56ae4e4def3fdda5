package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/berthproxy/berth/status"
)

// clientTimeout bounds a status request: the daemon answers from memory,
// so anything slower means it is stuck, which "berth health" must report.
const clientTimeout = 5 * time.Second

// statusCmd implements "berth status [--json]", "berth why NAME" and
// "berth health": they ask the running daemon through its socket.
func statusCmd(cmd string, args []string, stdout, stderr io.Writer) int {
	var asJSON bool
	extra := func(fs *flag.FlagSet) {
		if cmd == "status" {
			fs.BoolVar(&asJSON, "json", false, "print the snapshot as JSON (stable field names, see README)")
		}
	}
	s, err := parseSettingsWith(cmd, args, stderr, extra)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "berth:", err)
		return 2
	}
	wantArgs := map[string]int{"status": 0, "why": 1, "health": 0}[cmd]
	if len(s.args) != wantArgs {
		fmt.Fprintf(stderr, "berth: %s takes %s\n", cmd, map[int]string{0: "no arguments", 1: "exactly one NAME (a container or a host)"}[wantArgs])
		return 2
	}
	c := socketClient(socketPath(s.StateDir))
	if cmd == "health" || cmd == "why" {
		// The daemon's answer is the text to print; a non-200 says why
		// it is unhealthy or names nothing it knows.
		path := "/healthz"
		if cmd == "why" {
			path = "/why?name=" + url.QueryEscape(s.args[0])
		}
		code, body, err := c.get(path)
		switch {
		case err != nil && cmd == "health":
			fmt.Fprintln(stderr, "berth: unhealthy: cannot reach the daemon:", err)
			return 1
		case err != nil:
			fmt.Fprintln(stderr, "berth:", err)
			return 1
		case code != http.StatusOK:
			fmt.Fprint(stderr, "berth: ", body)
			return 1
		}
		fmt.Fprint(stdout, body)
		return 0
	}
	code, body, err := c.get("/status")
	if err != nil || code != http.StatusOK {
		fmt.Fprintln(stderr, "berth:", orStatus(err, code))
		return 1
	}
	if asJSON {
		fmt.Fprint(stdout, body)
		return 0
	}
	var snap status.Snapshot
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		fmt.Fprintln(stderr, "berth: the daemon's answer is not a snapshot:", err)
		return 1
	}
	if err := status.WriteTable(stdout, snap); err != nil {
		return 1
	}
	return 0
}

func orStatus(err error, code int) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("daemon answered %d", code)
}

// client talks HTTP to the daemon over its unix socket.
type client struct{ http *http.Client }

func socketClient(path string) client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return client{&http.Client{Transport: tr, Timeout: clientTimeout}}
}

func (c client) get(path string) (int, string, error) {
	resp, err := c.http.Get("http://berth" + path)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			return 0, "", fmt.Errorf("is berth running? %w", op)
		}
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimRight(string(body), "\n") + "\n", err
}
