package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// clientTimeout bounds one request: a push waits for the agent's nginx -t
// (under a second, a few more to find a rejected file), so this only cuts
// off an agent that hangs.
const clientTimeout = 60 * time.Second

// dialTimeout cuts off an agent whose node is gone sooner: Swarm marks a
// dead node down only after some seconds, and until then its agent is
// still listed; a pass must not wait a minute on it.
const dialTimeout = 5 * time.Second

var httpClient = &http.Client{Timeout: clientTimeout, Transport: &http.Transport{
	DialContext:         (&net.Dialer{Timeout: dialTimeout}).DialContext,
	MaxIdleConnsPerHost: 2,
	IdleConnTimeout:     90 * time.Second,
}}

// maxResponse bounds what the manager reads of an agent's answer.
const maxResponse = 1 << 20

// ErrOldGeneration is Push's error when the agent has taken a later
// generation: the Response then carries that generation, so a manager that
// took over with a clock behind its predecessor's can push above it.
var ErrOldGeneration = errors.New("the agent has taken a later generation")

// Push sends the desired files to the agent at base (e.g.
// "http://10.0.1.5:9181") and returns its answer. An error means the agent
// did not take the push (unreachable, refused, or an answer that is not a
// Response); a rejected or failed apply is a Response, not an error.
func Push(ctx context.Context, base string, secret []byte, p Payload) (Response, error) {
	sealed, err := sealCerts(secret, p.Certs)
	if err != nil {
		return Response{}, fmt.Errorf("seal certificates: %w", err)
	}
	p.Certs = sealed
	body, err := json.Marshal(p)
	if err != nil {
		return Response{}, fmt.Errorf("encode push: %w", err)
	}
	resp, err := send(ctx, http.MethodPut, base+"/v1/config", secret, body)
	var r Response
	if jerr := json.Unmarshal(resp, &r); jerr != nil || r.Result == "" {
		if err != nil {
			return Response{}, err
		}
		return Response{}, fmt.Errorf("push to %s: answer is not a response: %q", base, truncate(resp))
	}
	var se statusError
	if errors.As(err, &se) && se.code == http.StatusConflict {
		return r, fmt.Errorf("%w (%d, pushed %d): %s", ErrOldGeneration, r.Generation, p.Generation, r.Error)
	}
	return r, err
}

// PutChallenge asks the agent at base to serve keyAuth at
// /.well-known/acme-challenge/<token> from its node's webroot.
func PutChallenge(ctx context.Context, base string, secret []byte, token, keyAuth string) error {
	_, err := send(ctx, http.MethodPut, base+"/v1/challenge/"+token, secret, []byte(keyAuth))
	return err
}

// Info asks the agent at base for its node's nginx build (nginx -V), which
// decides the directives the manager renders.
func Info(ctx context.Context, base string, secret []byte) (NodeInfo, error) {
	data, err := send(ctx, http.MethodGet, base+"/v1/info", secret, nil)
	if err != nil {
		return NodeInfo{}, err
	}
	var info NodeInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return NodeInfo{}, fmt.Errorf("GET %s/v1/info: answer is not node info: %q", base, truncate(data))
	}
	return info, nil
}

// DeleteChallenge asks the agent at base to remove a token.
func DeleteChallenge(ctx context.Context, base string, secret []byte, token string) error {
	_, err := send(ctx, http.MethodDelete, base+"/v1/challenge/"+token, secret, nil)
	return err
}

// send signs and sends one request and returns the answer's body. Any
// status but 200 is an error naming it and the agent's message; a push's
// rejected or failed apply still answers 200.
func send(ctx context.Context, method, url string, secret []byte, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	ts := time.Now().Unix()
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(secret, ts, Target(method, req.URL.Path), body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return data, statusError{fmt.Sprintf("%s %s", method, url), resp.StatusCode, truncate(data)}
	}
	return data, nil
}

// statusError is an answer other than 200.
type statusError struct {
	request string
	code    int
	body    string
}

func (e statusError) Error() string {
	return fmt.Sprintf("%s: HTTP %d: %s", e.request, e.code, e.body)
}

func truncate(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
