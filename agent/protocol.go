// Package agent is berth's Swarm agent and its protocol: one berth on a
// manager decides (desired state, certificates) and pushes the rendered
// files over HTTP to a small agent beside each node's nginx, which applies
// them to its own nginx through controller.Node (atomic write, nginx -t,
// rollback of a rejected host file, SIGHUP). Every request but /healthz is
// signed with a secret shared as a Docker secret.
//
// It is a package of its own, not part of controller, because the manager
// side (Push, PutChallenge) will be used by whatever drives the Swarm loop
// while the agent side uses controller.Node: keeping the wire format and
// its authentication in one place, away from the loop, lets both halves
// import it without a cycle. It owns no file but those it is sent: berth's
// files in the conf dir, certificate files, challenge tokens.
package agent

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Payload is the body of PUT /v1/config: the full desired set of berth's
// conf files (level-triggered: the agent diffs it against its disk, so a
// lost or reordered push is harmless) and the certificate files they
// name, by path relative to the certs dir. Push seals the certificate
// files (seal.go) and the agent opens them.
type Payload struct {
	Generation uint64            `json:"generation"`
	Files      map[string]string `json:"files"`
	Certs      map[string]string `json:"certs,omitempty"`
}

// NodeInfo is the answer of GET /v1/info.
type NodeInfo struct {
	Nginx string `json:"nginx"` // nginx -V output of the node's nginx
}

// Result values of a Response.
const (
	ResultOK        = "ok"        // written, validated, reloaded
	ResultUnchanged = "unchanged" // the disk already held it and nginx runs it
	ResultRejected  = "rejected"  // nginx -t refused files: Held lists them, the rest landed
	ResultFailed    = "failed"    // nothing could be applied (no nginx, Docker, disk)
)

// Response is the agent's answer to a push.
type Response struct {
	Generation uint64   `json:"generation"`
	Result     string   `json:"result"`
	Error      string   `json:"error,omitempty"`
	Held       []string `json:"held,omitempty"`
}

// Header names of the request signature.
const (
	HeaderSignature = "X-Berth-Signature"
	HeaderTimestamp = "X-Berth-Timestamp"
)

// MaxSkew bounds the age of a signed request (and how far ahead of the
// agent's clock it may be): wide enough for unsynchronised node clocks,
// narrow enough that a captured request is soon worthless.
const MaxSkew = 5 * time.Minute

// Errors of Verify.
var (
	ErrBadSignature = errors.New("signature does not match")
	ErrStale        = errors.New("timestamp outside the allowed skew")
	ErrUnsigned     = errors.New("request not signed")
)

// Sign returns the X-Berth-Signature value for a request sent at ts (unix
// seconds) to target (method and path, "PUT /v1/config") with body. The
// timestamp is inside the MAC, so an old request cannot be made to look
// fresh; so is the target, so a signed request cannot be replayed to
// another path (a token's DELETE against another token, a push body as a
// challenge). Pure.
func Sign(secret []byte, ts int64, target string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	fmt.Fprintf(m, "%d\n%s\n", ts, target)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Target is what Sign covers of a request besides its body: "METHOD path".
func Target(method, path string) string { return method + " " + path }

// Verify checks a request's signature and timestamp headers against its
// target and body at now. The comparison is constant-time. Pure.
func Verify(secret []byte, sig, ts, target string, body []byte, now time.Time) error {
	if sig == "" || ts == "" {
		return fmt.Errorf("%w: %s and %s are required", ErrUnsigned, HeaderSignature, HeaderTimestamp)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q is not unix seconds", ErrStale, HeaderTimestamp, ts)
	}
	if !hmac.Equal([]byte(sig), []byte(Sign(secret, sec, target, body))) {
		return ErrBadSignature
	}
	if skew := now.Sub(time.Unix(sec, 0)).Abs(); skew > MaxSkew {
		return fmt.Errorf("%w: %s apart, at most %s", ErrStale, skew.Round(time.Second), MaxSkew)
	}
	return nil
}

// ReadSecret reads the shared secret from path (a Docker secret file),
// trimming a trailing newline. An empty or missing secret is an error: an
// agent without one would take configuration from anyone.
func ReadSecret(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the agent secret (BERTH_AGENT_SECRET_FILE): %w", err)
	}
	secret := strings.TrimRight(string(data), "\r\n")
	if strings.TrimSpace(secret) == "" {
		return nil, fmt.Errorf("the agent secret %s is empty; create it with `docker secret create berth-agent -`", path)
	}
	return []byte(secret), nil
}
