package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/controller"
	"github.com/berthproxy/berth/internal/atomicfile"
	"github.com/berthproxy/berth/nginxconf"
)

// DefaultAddr is where the agent listens (BERTH_AGENT_ADDR).
const DefaultAddr = ":9181"

// maxBody bounds a request: a push carries every conf file and the
// certificates they name, a few MB at thousands of sites.
const maxBody = 64 << 20

// Options are the agent's settings.
type Options struct {
	Secret   []byte
	CertsDir string // BERTH_CERTS_DIR, where pushed certificates go
	Webroot  string // BERTH_WEBROOT, where challenge tokens go
	// GenerationFile keeps the last generation taken across restarts, so a
	// restarted agent still refuses a replayed older push; "" keeps it in
	// memory only.
	GenerationFile string
}

// Server answers the manager. It serialises every request that writes, so
// the node's files have one writer, and remembers the last generation it
// took, so a replayed older push is refused.
type Server struct {
	node *controller.Node
	opts Options
	log  *logrus.Entry
	now  func() time.Time

	mu         sync.Mutex // one request writes at a time
	generation uint64     // last generation taken
}

// New returns the agent for node. An empty secret is an error: the agent
// would take configuration from anyone who reaches its port.
func New(node *controller.Node, opts Options, log *logrus.Entry) (*Server, error) {
	if len(opts.Secret) == 0 {
		return nil, errors.New("the agent needs a non-empty shared secret (BERTH_AGENT_SECRET_FILE)")
	}
	gen, err := readGeneration(opts.GenerationFile)
	if err != nil {
		return nil, err
	}
	return &Server{node: node, opts: opts, log: log, now: time.Now, generation: gen}, nil
}

// Handler routes the agent's endpoints.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/config", s.authed(s.config))
	mux.HandleFunc("PUT /v1/challenge/{token}", s.authed(s.putChallenge))
	mux.HandleFunc("DELETE /v1/challenge/{token}", s.authed(s.deleteChallenge))
	mux.HandleFunc("GET /v1/info", s.authed(s.info))
	mux.HandleFunc("GET /healthz", s.healthz)
	return mux
}

// Drain waits for the request that is writing, if any: a stop must not
// cut an apply between its write and its reload (the marker would repair
// it, but only at the next push).
func (s *Server) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
}

// authed reads the body, verifies its signature and hands it on; an
// unauthenticated request is answered 401 and changes nothing.
func (s *Server) authed(next func(http.ResponseWriter, *http.Request, []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := Verify(s.opts.Secret, r.Header.Get(HeaderSignature), r.Header.Get(HeaderTimestamp), Target(r.Method, r.URL.Path), body, s.now()); err != nil {
			s.log.WithField("remote", r.RemoteAddr).WithError(err).Warn("refused an unauthenticated request")
			http.Error(w, "unauthenticated: "+err.Error(), http.StatusUnauthorized)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		next(w, r, body)
	}
}

// config applies a push: certificates first (the config names them), then
// the conf files through the node's applier.
func (s *Server) config(w http.ResponseWriter, r *http.Request, body []byte) {
	var p Payload
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, "decode push: "+err.Error(), http.StatusBadRequest)
		return
	}
	if p.Generation < s.generation {
		writeJSON(w, http.StatusConflict, Response{Generation: s.generation, Result: ResultFailed,
			Error: fmt.Sprintf("generation %d is older than %d, already taken: refused as a replay", p.Generation, s.generation)})
		return
	}
	if err := checkPayload(p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.take(p.Generation)
	writeJSON(w, http.StatusOK, s.apply(r.Context(), p))
}

func writeJSON(w http.ResponseWriter, code int, resp Response) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(resp)
}

// apply writes the push and says what happened.
func (s *Server) apply(ctx context.Context, p Payload) Response {
	log := s.log.WithField("generation", p.Generation)
	resp := Response{Generation: p.Generation}
	certs, err := openCerts(s.opts.Secret, p.Certs)
	if err == nil {
		err = writeCerts(s.opts.CertsDir, certs)
	}
	if err != nil {
		resp.Result, resp.Error = ResultFailed, err.Error()
		log.WithError(err).Error("push not applied")
		return resp
	}
	files := nginxconf.Files{}
	for name, data := range p.Files {
		files[name] = []byte(data)
	}
	out, err := s.node.Converge(ctx, files, log)
	resp.Result, resp.Held = result(out, err), out.Held
	switch {
	case err != nil:
		resp.Error = err.Error()
	case out.Rejection != "":
		resp.Error = out.Rejection
	}
	if resp.Result != ResultOK && resp.Result != ResultUnchanged {
		log.WithFields(logrus.Fields{"result": resp.Result, "held": resp.Held}).WithError(err).Error("push not fully applied")
	} else if out.Changed {
		log.Info("nginx reloaded")
	}
	return resp
}

// result names what Converge did. Pure.
func result(out controller.Outcome, err error) string {
	switch {
	case errors.Is(err, controller.ErrRejected) || len(out.Held) > 0:
		return ResultRejected
	case err != nil:
		return ResultFailed
	case out.Changed:
		return ResultOK
	}
	return ResultUnchanged
}

func (s *Server) putChallenge(w http.ResponseWriter, r *http.Request, body []byte) {
	answer(w, putChallenge(s.opts.Webroot, r.PathValue("token"), body))
}

func (s *Server) deleteChallenge(w http.ResponseWriter, r *http.Request, _ []byte) {
	answer(w, deleteChallenge(s.opts.Webroot, r.PathValue("token")))
}

func answer(w http.ResponseWriter, err error) {
	if err == nil {
		_, _ = io.WriteString(w, "ok\n")
		return
	}
	code := http.StatusInternalServerError
	if errors.Is(err, errBadToken) {
		code = http.StatusBadRequest
	}
	http.Error(w, err.Error(), code)
}

// info tells the manager which nginx runs on this node.
func (s *Server) info(w http.ResponseWriter, r *http.Request, _ []byte) {
	build, err := s.node.Build(r.Context(), s.log)
	if err != nil {
		http.Error(w, "no confirmed nginx: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(NodeInfo{Nginx: build})
}

// healthz answers 200 when the node's nginx is found and confirmed, so a
// Swarm health check restarts an agent that cannot apply anything.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	_, err := s.node.Find(r.Context(), s.log)
	s.mu.Unlock()
	if err != nil {
		http.Error(w, "no confirmed nginx: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// take records gen as the last generation taken. A file that cannot be
// written is logged: the push still applies, and only a replay across a
// restart of this agent would then go unnoticed.
func (s *Server) take(gen uint64) {
	if gen == s.generation {
		return
	}
	s.generation = gen
	if s.opts.GenerationFile == "" {
		return
	}
	if err := atomicfile.Write(s.opts.GenerationFile, []byte(strconv.FormatUint(gen, 10)+"\n"), 0o600); err != nil {
		s.log.WithError(err).Warn("cannot record the generation; a restart forgets it")
	}
}

// readGeneration reads the generation file; a missing file is generation 0.
func readGeneration(path string) (uint64, error) {
	if path == "" {
		return 0, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the last generation: %w", err)
	}
	gen, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s holds %q, not a generation: %w", path, data, err)
	}
	return gen, nil
}
