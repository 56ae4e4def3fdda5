package controller

// This is the only file that imports the Docker client, so the engine can be
// swapped (or faked in unit tests) behind the Engine interface.

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
)

// Timeouts of Docker calls. The engine answers a list or an inspect in
// milliseconds; a call that takes longer than this is hung (a wedged daemon,
// a socket proxy that accepted and went silent), and a hung call would stall
// every later pass. nginx -t parses every certificate, which takes seconds
// with thousands of hosts, so exec gets longer.
const (
	dockerCallTimeout = 15 * time.Second
	dockerExecTimeout = 60 * time.Second
)

// Engine is the narrow view of Docker that berth needs.
type Engine interface {
	// List returns every container, running or not, projected.
	List(ctx context.Context) ([]Container, error)
	// Events streams relevant changes. The message channel carries a short
	// description for logs; the error channel yields one error and closes.
	Events(ctx context.Context) (<-chan string, <-chan error)
	// Exec runs cmd in a container and returns its exit code and output.
	Exec(ctx context.Context, id string, cmd []string) (int, string, error)
	// Signal sends a signal (e.g. "HUP") to a container's main process.
	Signal(ctx context.Context, id, sig string) error
}

// DockerEngine implements Engine with the Docker Engine API.
type DockerEngine struct {
	cli                      *client.Client
	callTimeout, execTimeout time.Duration

	// ReadEnv: also read each container's environment (for nginx-proxy's
	// VIRTUAL_HOST etc., BERTH_NGINX_PROXY_ENV=on), so every container is
	// inspected, not only those with proxy.host.
	ReadEnv bool

	mu        sync.Mutex
	inspected map[string]inspected // container ID → what inspect told (immutable per container)

	// The container snapshot kept between passes (see List): complete
	// once a full list has been read since the event stream was last
	// (re)subscribed; dirty holds the IDs events named since.
	snap       map[string]container.Summary
	complete   bool
	subscribed bool // an event stream is open
	lastFull   time.Time
	dirty      map[string]bool
}

// inspected is the part of an inspect result that never changes for a
// container ID: its image's exposed ports, its environment, whether it
// declares a health check; and the names Docker's DNS answers for it, which
// change only with a network endpoint (connect, disconnect, start), so the
// entry holds the endpoints it was read with and is read again when they
// differ: one inspect per container start, not per pass.
type inspected struct {
	exposed     []int
	env         map[string]string
	healthcheck bool
	dnsNames    map[string][]string // network → aliases and DNS names
	endpoints   string              // endpointKey of the list entry when inspected
}

// NewDockerEngine connects using the standard DOCKER_* environment. API
// version negotiation is required: without it every call fails against
// older engines, and pinning a version would fail against newer ones.
func NewDockerEngine() (*DockerEngine, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return newDockerEngine(cli), nil
}

func newDockerEngine(cli *client.Client) *DockerEngine {
	return &DockerEngine{cli: cli, callTimeout: dockerCallTimeout, execTimeout: dockerExecTimeout,
		inspected: map[string]inspected{}, dirty: map[string]bool{}}
}

// Close releases the client's connections.
func (d *DockerEngine) Close() error { return d.cli.Close() }

// fullListEvery bounds how long the snapshot goes without a full list: a
// cheap guard against an event the engine never sent (the resync pass of
// the controller comes at the same period).
const fullListEvery = 25 * time.Second

// List returns every container. One change costs O(changed) Docker calls:
// the adapter keeps the list between passes and, when events have named
// the only containers that can have changed, inspects just those (a
// thousand-container list takes the engine over half a second; an inspect
// a few milliseconds). It lists everything when it has no complete
// snapshot (the first pass, a (re)subscribed event stream, which may have
// missed changes), every fullListEvery, and whenever an inspect of a named
// container fails, so a missed or failed update lasts one pass at most.
func (d *DockerEngine) List(ctx context.Context) ([]Container, error) {
	d.mu.Lock()
	dirty := d.dirty
	d.dirty = map[string]bool{}
	incremental := d.complete && time.Since(d.lastFull) < fullListEvery
	d.mu.Unlock()
	if incremental {
		if list, ok := d.update(ctx, dirty); ok {
			return d.project(ctx, list)
		}
	}
	return d.listAll(ctx)
}

// listAll makes one list call, which carries the state that changes
// (labels, networks with addresses, the health suffix of the status), and
// keeps it as the snapshot. Exposed ports come from inspect, once per
// container: they never change, and the list's ports vanish when the
// container has no network.
func (d *DockerEngine) listAll(ctx context.Context) ([]Container, error) {
	started := time.Now()
	lctx, cancel := context.WithTimeout(ctx, d.callTimeout)
	defer cancel()
	// All: a labelled container that exists but is not running keeps its
	// host (answering 503) until it is removed.
	list, err := d.cli.ContainerList(lctx, container.ListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	d.mu.Lock()
	d.snap = make(map[string]container.Summary, len(list))
	for _, s := range list {
		d.snap[s.ID] = s
	}
	d.complete, d.lastFull = d.subscribed, started
	d.mu.Unlock()
	return d.project(ctx, list)
}

// update applies inspects of the containers events named to the snapshot
// and returns it, or false when one of them could not be read.
func (d *DockerEngine) update(ctx context.Context, dirty map[string]bool) ([]container.Summary, bool) {
	ids := slices.Sorted(maps.Keys(dirty))
	results := make([]container.InspectResponse, len(ids))
	errs := make([]error, len(ids))
	parallel(len(ids), func(i int) {
		ictx, cancel := context.WithTimeout(ctx, d.callTimeout)
		defer cancel()
		results[i], errs[i] = d.cli.ContainerInspect(ictx, ids[i])
	})
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, id := range ids {
		switch {
		case client.IsErrNotFound(errs[i]):
			delete(d.snap, id)
		case errs[i] != nil:
			d.complete = false // list everything instead
			return nil, false
		case results[i].ContainerJSONBase == nil:
			d.complete = false
			return nil, false
		default:
			s := summaryFromInspect(results[i])
			d.snap[id] = s
			d.inspected[id] = digest(results[i], endpointKey(s))
		}
	}
	list := make([]container.Summary, 0, len(d.snap))
	for _, s := range d.snap {
		list = append(list, s)
	}
	// The engine lists newest first; Desired does not depend on order,
	// but a stable one keeps logs and ties reproducible.
	slices.SortFunc(list, func(a, b container.Summary) int {
		if a.Created != b.Created {
			return int(b.Created - a.Created)
		}
		return strings.Compare(a.ID, b.ID)
	})
	return list, true
}

// summaryFromInspect is the list entry the engine would give for an
// inspected container: the fields projectSummary and needsInspect read.
// The health goes into Status the way the list writes it.
func summaryFromInspect(r container.InspectResponse) container.Summary {
	if r.ContainerJSONBase == nil {
		return container.Summary{}
	}
	s := container.Summary{ID: r.ID, Names: []string{r.Name}}
	if r.State != nil {
		s.State = container.ContainerState(r.State.Status)
		if r.State.Health != nil && r.State.Health.Status != "" && r.State.Health.Status != "none" {
			switch r.State.Health.Status {
			case "starting":
				s.Status = "(health: starting)"
			default:
				s.Status = "(" + r.State.Health.Status + ")"
			}
		}
	}
	if created, err := time.Parse(time.RFC3339Nano, r.Created); err == nil {
		s.Created = created.Unix()
	}
	if r.Config != nil {
		s.Labels = r.Config.Labels
	}
	if r.NetworkSettings != nil {
		s.NetworkSettings = &container.NetworkSettingsSummary{Networks: r.NetworkSettings.Networks}
	}
	return s
}

// project turns list entries into Containers, reading (cached) inspects
// where berth needs them.
func (d *DockerEngine) project(ctx context.Context, list []container.Summary) ([]Container, error) {
	ctx, cancel := context.WithTimeout(ctx, d.callTimeout)
	defer cancel()
	out := make([]Container, 0, len(list))
	seen := make(map[string]bool, len(list))
	d.prefetch(ctx, list)
	for _, s := range list {
		c := projectSummary(s)
		seen[c.ID] = true
		if d.needsInspect(s) {
			insp, err := d.inspect(ctx, c.ID, endpointKey(s))
			if client.IsErrNotFound(err) {
				continue // removed since the list: it is gone, not unknown
			}
			if err != nil {
				return nil, err
			}
			c.Exposed, c.DNSNames, c.Healthcheck = insp.exposed, insp.dnsNames, insp.healthcheck
			if d.ReadEnv {
				c.Env = insp.env
			}
		}
		out = append(out, c)
	}
	d.forget(seen)
	return out, nil
}

// inspect returns the cached inspect result of a container, asking the
// engine once per container ID and network endpoints.
func (d *DockerEngine) inspect(ctx context.Context, id, endpoints string) (inspected, error) {
	d.mu.Lock()
	r, ok := d.inspected[id]
	d.mu.Unlock()
	if ok && r.endpoints == endpoints {
		return r, nil
	}
	cached := r
	ctx, cancel := context.WithTimeout(ctx, d.callTimeout)
	defer cancel()
	insp, err := d.cli.ContainerInspect(ctx, id)
	if err != nil && ok && !client.IsErrNotFound(err) {
		// A container being started can keep inspect waiting; what was
		// read before still holds (only names change, and only with a
		// reconnect), and the new endpoints are read on a later pass.
		return cached, nil
	}
	if err != nil {
		return inspected{}, fmt.Errorf("inspect container %s: %w", shortID(id), err)
	}
	r = digest(insp, endpoints)
	d.mu.Lock()
	d.inspected[id] = r
	d.mu.Unlock()
	return r, nil
}

// digest keeps what berth reads of an inspect result.
func digest(insp container.InspectResponse, endpoints string) inspected {
	r := inspected{endpoints: endpoints}
	if insp.Config != nil {
		for p := range insp.Config.ExposedPorts {
			if p.Proto() == "tcp" {
				r.exposed = append(r.exposed, p.Int())
			}
		}
		slices.Sort(r.exposed)
		r.env = envMap(insp.Config.Env)
		hc := insp.Config.Healthcheck
		r.healthcheck = hc != nil && len(hc.Test) > 0 && hc.Test[0] != "NONE"
	}
	if insp.NetworkSettings != nil {
		r.dnsNames = dnsNames(insp.NetworkSettings.Networks)
	}
	return r
}

// inspectParallel bounds the inspects in flight: enough to take a
// thousand containers at start (or a burst of new ones) in a fraction of
// the time one by one would, without queueing a storm of calls on the
// engine.
const inspectParallel = 8

// prefetch inspects, inspectParallel at a time, the listed containers that
// need an inspect and have none cached. Errors are left for List's own
// call of inspect, which reports them.
func (d *DockerEngine) prefetch(ctx context.Context, list []container.Summary) {
	var ids, keys []string
	d.mu.Lock()
	for _, s := range list {
		key := endpointKey(s)
		if r, ok := d.inspected[s.ID]; (!ok || r.endpoints != key) && d.needsInspect(s) {
			ids, keys = append(ids, s.ID), append(keys, key)
		}
	}
	d.mu.Unlock()
	if len(ids) < 2 {
		return // List's own call is as quick
	}
	parallel(len(ids), func(i int) { d.inspect(ctx, ids[i], keys[i]) })
}

// parallel runs f(0) … f(n-1), inspectParallel at a time.
func parallel(n int, f func(i int)) {
	sem := make(chan struct{}, inspectParallel)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			f(i)
		}()
	}
	wg.Wait()
}

// needsInspect: the containers whose inspect berth reads. Every container on
// a user-defined network is inspected for its aliases, labelled or not: a
// name nginx resolves must not also be carried by a container of someone
// else (see resolved.go).
//
// A container created and not yet started is never inspected: it is not
// routed (project), and on some engines (20.10) an inspect waits for a
// start in progress to finish.
func (d *DockerEngine) needsInspect(s container.Summary) bool {
	return s.State != container.StateCreated && (d.ReadEnv || OptedIn(s.Labels) || onUserNetwork(s))
}

// envMap keeps the nginx-proxy variables of Docker's "KEY=value" list: the
// rest of an environment often holds secrets, which berth has no use for
// and so does not keep. A later duplicate wins, as in the process.
func envMap(env []string) map[string]string {
	var m map[string]string
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); IsNginxProxyEnv(k) {
			if m == nil {
				m = map[string]string{}
			}
			m[k] = v
		}
	}
	return m
}

// builtinNetworks are Docker's built-in networks, where no alias exists and
// Docker's DNS answers nothing.
var builtinNetworks = []string{"bridge", "host", "none"}

// onUserNetwork: the container is attached to a network where it can
// carry aliases.
func onUserNetwork(s container.Summary) bool {
	if s.NetworkSettings == nil {
		return false
	}
	for name := range s.NetworkSettings.Networks {
		if !slices.Contains(builtinNetworks, name) {
			return true
		}
	}
	return false
}

// endpointKey identifies a list entry's network endpoints; it changes
// when the container is connected, disconnected or started.
func endpointKey(s container.Summary) string {
	if s.NetworkSettings == nil {
		return ""
	}
	var eps []string
	for name, ep := range s.NetworkSettings.Networks {
		if ep != nil {
			eps = append(eps, name+"="+ep.EndpointID)
		}
	}
	slices.Sort(eps)
	return strings.Join(eps, ",")
}

// dnsNames lists per network the names Docker's DNS gives the container
// there: Aliases (engines before API 1.44 include the short ID there) and
// DNSNames (later engines), sorted, once each.
func dnsNames(nets map[string]*network.EndpointSettings) map[string][]string {
	var m map[string][]string
	for name, ep := range nets {
		if ep == nil || len(ep.Aliases)+len(ep.DNSNames) == 0 {
			continue
		}
		if m == nil {
			m = map[string][]string{}
		}
		names := slices.Concat(ep.Aliases, ep.DNSNames)
		slices.Sort(names)
		m[name] = slices.Compact(names)
	}
	return m
}

// forget drops cached inspect results of containers that are gone.
func (d *DockerEngine) forget(seen map[string]bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id := range d.inspected {
		if !seen[id] {
			delete(d.inspected, id)
		}
	}
}

func projectSummary(s container.Summary) Container {
	c := Container{
		ID:       s.ID,
		Name:     strings.TrimPrefix(firstOr(s.Names, s.ID), "/"),
		Labels:   s.Labels,
		Running:  s.State == container.StateRunning,
		State:    string(s.State),
		Health:   healthFromStatus(s.Status),
		Networks: map[string]string{},
		IPv6:     map[string]string{},
	}
	if s.NetworkSettings != nil {
		for name, ep := range s.NetworkSettings.Networks {
			if ep != nil {
				c.Networks[name] = ep.IPAddress
				if ep.GlobalIPv6Address != "" {
					c.IPv6[name] = ep.GlobalIPv6Address
				}
			}
		}
	}
	for _, p := range s.Ports {
		if p.Type == "tcp" && p.PrivatePort != 0 {
			c.Exposed = append(c.Exposed, int(p.PrivatePort))
		}
	}
	slices.Sort(c.Exposed)
	c.Exposed = slices.Compact(c.Exposed)
	return c
}

// healthFromStatus reads the health suffix Docker appends to the status
// ("Up 3 seconds (health: starting)", "(healthy)", "(unhealthy)").
func healthFromStatus(status string) string {
	switch {
	case strings.HasSuffix(status, "(health: starting)"):
		return HealthStarting
	case strings.HasSuffix(status, "(unhealthy)"):
		return HealthUnhealthy
	case strings.HasSuffix(status, "(healthy)"):
		return HealthHealthy
	}
	return ""
}

func firstOr(xs []string, def string) string {
	if len(xs) == 0 {
		return def
	}
	return xs[0]
}

// Events subscribes to the changes that can alter routing. Network events
// carry no container labels, so no label filter is used; kill and exec_*
// are left out so berth's own nginx -t and SIGHUP do not wake it. pause and
// unpause change whether a container can answer.
func (d *DockerEngine) Events(ctx context.Context) (<-chan string, <-chan error) {
	f := filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("type", string(events.NetworkEventType)),
	)
	for _, e := range watchedEvents {
		f.Add("event", e)
	}
	// The subscription lives until its stream fails or ctx ends, whichever
	// comes first: the client's own goroutine stops with sub.
	sub, cancel := context.WithCancel(ctx)
	// Until a full list is read after this subscription, changes made
	// before it (while no stream was open) may be unknown.
	d.mu.Lock()
	d.complete, d.subscribed = false, true
	d.mu.Unlock()
	msgs, errs := d.cli.Events(sub, events.ListOptions{Filters: f})
	out, outErr := forwardEvents(sub, msgs, errs, func(m events.Message) string {
		d.changed(m) // before the loop hears of it
		return fmt.Sprintf("%s %s %s", m.Type, m.Action, shortID(m.Actor.ID))
	})
	done := make(chan error, 1)
	go func() {
		err, ok := <-outErr
		d.mu.Lock()
		d.complete, d.subscribed = false, false // events may be missed from now on
		d.mu.Unlock()
		cancel()
		if ok {
			done <- err
		}
		close(done)
	}()
	return out, done
}

// changed marks the container an event is about: its own ID for container
// events, the "container" attribute for network connect and disconnect.
//
// A network event about a container the snapshot does not know as running
// is left out: that is a container being started (its endpoints are made
// during the start, before the start event), and an inspect of it would
// wait for the start to finish, holding up the whole pass; its start (or
// die) event follows and names it.
func (d *DockerEngine) changed(m events.Message) {
	id := m.Actor.ID
	if m.Type == events.NetworkEventType {
		id = m.Actor.Attributes["container"]
		d.mu.Lock()
		s, known := d.snap[id]
		d.mu.Unlock()
		if known && s.State != container.StateRunning && s.State != container.StatePaused || !known && d.snap != nil && id != "" {
			return
		}
	}
	if id == "" {
		d.mu.Lock()
		d.complete = false // an event about something unknown: list everything
		d.mu.Unlock()
		return
	}
	d.mu.Lock()
	d.dirty[id] = true
	d.mu.Unlock()
}

// watchedEvents are the Docker actions that can change routing.
var watchedEvents = []string{"start", "die", "destroy", "pause", "unpause", "health_status", "connect", "disconnect", "rename"}

// forwardEvents turns a Docker event stream into descriptions. It returns
// as soon as the stream fails (forwarding its one error) or ctx ends, so no
// goroutine outlives a broken subscription: the message channel of the
// Docker client never closes, and a forwarder that only watched it would
// leak once per reconnect.
func forwardEvents[M any](ctx context.Context, msgs <-chan M, errs <-chan error, describe func(M) string) (<-chan string, <-chan error) {
	out := make(chan string)
	outErr := make(chan error, 1)
	go func() {
		defer close(outErr)
		for {
			select {
			case <-ctx.Done():
				return
			case err := <-errs:
				outErr <- err
				return
			case m := <-msgs:
				select {
				case out <- describe(m):
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, outErr
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Exec runs cmd and waits for it, returning the exit code and the combined
// output (nginx -t writes its verdict to stderr).
func (d *DockerEngine) Exec(ctx context.Context, id string, cmd []string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.execTimeout)
	defer cancel()
	created, err := d.cli.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return -1, "", fmt.Errorf("exec create in %s: %w", shortID(id), err)
	}
	att, err := d.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return -1, "", fmt.Errorf("exec attach in %s: %w", shortID(id), err)
	}
	defer att.Close()
	// The hijacked connection ignores ctx: close it when ctx ends, so a
	// wedged nginx -t cannot stall the loop.
	stop := context.AfterFunc(ctx, func() { att.Close() })
	defer stop()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, att.Reader); err != nil {
		return -1, out.String(), fmt.Errorf("exec read in %s: %w", shortID(id), err)
	}
	insp, err := d.cli.ContainerExecInspect(ctx, created.ID)
	if err != nil {
		return -1, out.String(), fmt.Errorf("exec inspect in %s: %w", shortID(id), err)
	}
	return insp.ExitCode, out.String(), nil
}

// Signal sends sig to the container's main process.
func (d *DockerEngine) Signal(ctx context.Context, id, sig string) error {
	ctx, cancel := context.WithTimeout(ctx, d.callTimeout)
	defer cancel()
	if err := d.cli.ContainerKill(ctx, id, sig); err != nil {
		return fmt.Errorf("signal %s to %s: %w", sig, shortID(id), err)
	}
	return nil
}
