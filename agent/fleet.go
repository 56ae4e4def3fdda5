package agent

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/controller"
	"github.com/berthproxy/berth/nginxconf"
)

// Swarm is what the Fleet needs of the Swarm API (controller.SwarmSource).
type Swarm interface {
	Agents(ctx context.Context, self []string) ([]controller.AgentTask, error)
	NginxService(ctx context.Context, name string) (controller.Container, error)
}

// FleetOptions configure the manager's side.
type FleetOptions struct {
	Secret    []byte
	Port      int      // the agents' port (BERTH_SWARM_AGENT_PORT)
	CertsDir  string   // the manager's certs dir: pushed files are relative to it
	NginxName string   // the nginx service's name; "" finds it by label
	Networks  []string // the manager's own networks: agents are reached on one of these when they share it
	// Refresh is how long an agent's acknowledgement of a file set stands
	// before the same set is pushed again (an agent whose disk was wiped
	// under it catches up); default 2 minutes.
	Refresh time.Duration
}

// Fleet is every node's nginx as a Swarm manager's loop sees it
// (controller.Fleet), and the HTTP-01 challenge writer of the manager's
// certificate orders: a token goes to every node, since the CA may reach
// any of them. It pushes; each agent validates and reloads its own nginx.
type Fleet struct {
	swarm Swarm
	opts  FleetOptions

	mu         sync.Mutex
	acked      map[string]ack    // agent task ID → what it last took
	builds     map[string]string // agent task ID → nginx -V of its node
	generation uint64            // the last generation pushed

	// baseURL is where an agent answers; tests point it at their servers.
	baseURL func(controller.AgentTask) string
}

// ack is an agent's acknowledgement of one file set.
type ack struct {
	sum string
	at  time.Time
}

// NewFleet returns the fleet that reaches agents through swarm.
func NewFleet(swarm Swarm, opts FleetOptions) *Fleet {
	if opts.Refresh <= 0 {
		opts.Refresh = 2 * time.Minute
	}
	if opts.Port == 0 {
		opts.Port = 9181
	}
	f := &Fleet{swarm: swarm, opts: opts, acked: map[string]ack{}, builds: map[string]string{}}
	f.baseURL = func(a controller.AgentTask) string {
		return "http://" + net.JoinHostPort(a.Addr, strconv.Itoa(f.opts.Port))
	}
	return f
}

func (f *Fleet) base(a controller.AgentTask) string { return f.baseURL(a) }

// errNoAgent: nothing to serve with. The loop backs off and looks again.
var errNoAgent = errors.New("no berth agent is running (a service labelled proxy.agent=true): nothing can be applied")

// Nginx returns the nginx service and the nginx -V of the least capable
// node's nginx, so every node accepts the directives rendered.
func (f *Fleet) Nginx(ctx context.Context) (controller.Container, string, error) {
	svc, err := f.swarm.NginxService(ctx, f.opts.NginxName)
	if err != nil {
		return controller.Container{}, "", err
	}
	agents, err := f.swarm.Agents(ctx, f.opts.Networks)
	if err != nil {
		return controller.Container{}, "", err
	}
	f.mu.Lock()
	var missing []controller.AgentTask
	for _, a := range agents {
		if _, ok := f.builds[a.ID]; !ok {
			missing = append(missing, a)
		}
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range missing {
		wg.Go(func() {
			ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if info, err := Info(ictx, f.base(a), f.opts.Secret); err == nil && info.Nginx != "" {
				f.mu.Lock()
				f.builds[a.ID] = info.Nginx
				f.mu.Unlock()
			}
		})
	}
	wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	var builds []string
	for _, a := range agents {
		if b, ok := f.builds[a.ID]; ok {
			builds = append(builds, b)
		}
	}
	if len(builds) == 0 {
		if len(agents) == 0 {
			return controller.Container{}, "", errNoAgent
		}
		return controller.Container{}, "", fmt.Errorf("no agent could say which nginx its node runs (%d agents listed)", len(agents))
	}
	return svc, LeastBuild(builds), nil
}

// LeastBuild picks, of several nginx -V outputs, the one with the fewest
// features berth renders for (HTTP/2 style, resolve in upstreams), so a
// config rendered for it is accepted by every node. Pure.
func LeastBuild(builds []string) string {
	rank := func(b string) int {
		r := map[string]int{nginxconf.HTTP2Off: 0, nginxconf.HTTP2Listen: 1, nginxconf.HTTP2Directive: 2}[controller.HTTP2Mode(b)] * 2
		if controller.ResolverFor(b) != "" {
			r++
		}
		return r
	}
	return slices.MinFunc(builds, func(a, b string) int { return cmp.Or(cmp.Compare(rank(a), rank(b)), strings.Compare(a, b)) })
}

// Apply pushes files, and the certificate files they name, to every agent
// that has not acknowledged these bytes within Refresh, all at once. A
// node whose nginx rejects a host file keeps that host's previous file
// (the agent says so) and counts as up to date: it holds its last good
// config without holding the others back. An agent that cannot be reached
// or fails makes Apply fail, naming it; the others have taken the files.
func (f *Fleet) Apply(ctx context.Context, files nginxconf.Files, log *logrus.Entry) error {
	agents, err := f.swarm.Agents(ctx, f.opts.Networks)
	if err != nil {
		return err
	}
	if len(agents) == 0 {
		return errNoAgent
	}
	p, err := f.payload(files)
	if err != nil {
		return err
	}
	sum := payloadSum(p)
	now := time.Now()
	f.mu.Lock()
	f.forget(agents)
	var due []controller.AgentTask
	for _, a := range agents {
		if k, ok := f.acked[a.ID]; !ok || k.sum != sum || now.Sub(k.at) >= f.opts.Refresh {
			due = append(due, a)
		}
	}
	f.mu.Unlock()
	errs := make([]error, len(due))
	var wg sync.WaitGroup
	for i, a := range due {
		wg.Go(func() { errs[i] = f.pushTo(ctx, a, p, sum, log) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// pushTo pushes to one agent; an agent that has taken a later generation
// (a manager before this one pushed with a clock ahead) is pushed again
// above it.
func (f *Fleet) pushTo(ctx context.Context, a controller.AgentTask, p Payload, sum string, log *logrus.Entry) error {
	log = log.WithFields(logrus.Fields{"agent": a.Addr, "node": a.Node})
	for attempt := 0; ; attempt++ {
		p.Generation = f.nextGeneration()
		resp, err := Push(ctx, f.base(a), f.opts.Secret, p)
		if errors.Is(err, ErrOldGeneration) && attempt == 0 {
			f.raiseGeneration(resp.Generation)
			continue
		}
		if err != nil {
			return fmt.Errorf("agent %s on node %s: %w", a.Addr, a.Node, err)
		}
		switch resp.Result {
		case ResultRejected:
			log.WithFields(logrus.Fields{"held": resp.Held}).Warn("the node's nginx rejected files; it keeps their previous version: " + resp.Error)
		case ResultFailed:
			return fmt.Errorf("agent %s on node %s could not apply: %s", a.Addr, a.Node, resp.Error)
		case ResultOK:
			log.WithField("generation", p.Generation).Debug("node reloaded")
		}
		f.mu.Lock()
		f.acked[a.ID] = ack{sum: sum, at: time.Now()}
		f.mu.Unlock()
		return nil
	}
}

// forget drops what is known of agents no longer listed. Callers hold mu.
func (f *Fleet) forget(agents []controller.AgentTask) {
	live := map[string]bool{}
	for _, a := range agents {
		live[a.ID] = true
	}
	maps.DeleteFunc(f.acked, func(id string, _ ack) bool { return !live[id] })
	maps.DeleteFunc(f.builds, func(id string, _ string) bool { return !live[id] })
}

// nextGeneration is the wall clock in nanoseconds, or one more than the
// last if the clock has not moved past it: a manager that takes over from
// another with a clock not far behind still pushes above it.
func (f *Fleet) nextGeneration() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.generation = max(uint64(time.Now().UnixNano()), f.generation+1)
	return f.generation
}

func (f *Fleet) raiseGeneration(g uint64) {
	f.mu.Lock()
	f.generation = max(f.generation, g)
	f.mu.Unlock()
}

// payload reads the certificate files that files name from the certs dir.
func (f *Fleet) payload(files nginxconf.Files) (Payload, error) {
	p := Payload{Files: make(map[string]string, len(files))}
	for name, data := range files {
		p.Files[name] = string(data)
	}
	root := filepath.Clean(f.opts.CertsDir) + string(filepath.Separator)
	for _, path := range controller.ReferencedCertFiles(files) {
		rel, ok := strings.CutPrefix(filepath.Clean(path), root)
		if !ok {
			continue // a file berth does not manage (not under the certs dir) must exist on every node already
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return Payload{}, fmt.Errorf("read certificate file for the agents: %w", err)
		}
		if p.Certs == nil {
			p.Certs = map[string]string{}
		}
		p.Certs[filepath.ToSlash(rel)] = string(data)
	}
	return p, nil
}

// payloadSum identifies a file set and its certificates. Pure.
func payloadSum(p Payload) string {
	h := sha256.New()
	for _, m := range []map[string]string{p.Files, p.Certs} {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(m[k]), m[k])
		}
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Present serves an HTTP-01 token from every node's webroot (lego's
// challenge.Provider): the CA may reach any node. It fails unless every
// agent took it, so an order is not spent on a validation that would land
// on a node without the token.
func (f *Fleet) Present(domain, token, keyAuth string) error {
	return f.challenge(func(ctx context.Context, base string) error {
		return PutChallenge(ctx, base, f.opts.Secret, token, keyAuth)
	})
}

// CleanUp removes the token from every node.
func (f *Fleet) CleanUp(domain, token, keyAuth string) error {
	return f.challenge(func(ctx context.Context, base string) error {
		return DeleteChallenge(ctx, base, f.opts.Secret, token)
	})
}

func (f *Fleet) challenge(call func(ctx context.Context, base string) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agents, err := f.swarm.Agents(ctx, f.opts.Networks)
	if err != nil {
		return err
	}
	if len(agents) == 0 {
		return errNoAgent
	}
	errs := make([]error, len(agents))
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Go(func() {
			if err := call(ctx, f.base(a)); err != nil {
				errs[i] = fmt.Errorf("agent %s on node %s: %w", a.Addr, a.Node, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
