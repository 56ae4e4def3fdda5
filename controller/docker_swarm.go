package controller

// The Swarm adapter: Swarm services and their tasks as the source of
// Containers. It imports the Docker client, so it is named docker_swarm.go:
// only the Docker adapter files (controller/docker*.go) may, and the engine
// can still be swapped behind the interfaces they implement.
//
// This is the read side only (issue 11, point 1). It talks to one manager's
// engine, the only place the Swarm API answers; nothing here execs or
// signals, since nginx on other nodes is out of a manager's reach (a later
// increment hands configuration to agents beside each nginx).

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
)

// Source is the read side of an engine: the Containers Desired works on
// and a stream that says when to look again. Engine is one; SwarmSource is
// one that cannot exec or signal.
type Source interface {
	List(ctx context.Context) ([]Container, error)
	Events(ctx context.Context) (<-chan string, <-chan error)
}

var (
	_ Source = (*DockerEngine)(nil)
	_ Source = (*SwarmSource)(nil)
)

// Labels berth sets on the Containers it projects from tasks. The task ID
// label is the one Swarm puts on a task's container, so resolved.go keeps
// task backends on addresses whatever the source; the service name lets
// logs and `berth why` name the service a backend belongs to.
const (
	swarmServiceNameLabel = "com.docker.swarm.service.name"
	swarmServiceIDLabel   = "com.docker.swarm.service.id"
)

// StateTaskNodeDown is the state of a task Swarm still wants running on a
// node that is down: it cannot answer, but its service keeps its host (503)
// if nothing else runs, until Swarm shuts the task down and replaces it.
const StateTaskNodeDown = "node-down"

// StateTaskStarting is the state of a task on its way to running while
// its service, which has run tasks before, has none running: a single
// replica replaced in a stop-first rolling update, restarted after a
// crash, or moved off a dead node. It keeps the service's host (503 with
// its certificate), as a restarting container does, instead of letting it
// vanish, which would refuse TLS for the seconds the new task takes.
const StateTaskStarting = "starting"

// swarmSettlePoll is how often Events pokes while the last List saw tasks
// on their way to running. Swarm sends no task events (API 1.41): a
// service event says a scale or update began, not when its tasks run.
// Starting a task takes one to a few seconds, so a poke a second reaches
// running tasks within about a second, at the cost of a list per second
// only while something is starting.
const swarmSettlePoll = time.Second

// SwarmSource lists the tasks of opted-in Swarm services as Containers,
// through a manager's engine. List costs one service list, one node list,
// one task list per opted-in service (in parallel) and, while a task
// keeps its service's host before Swarm has attached it to its networks,
// one network list: a few milliseconds (4-5 ms for a
// service of three tasks on the test Swarm), so it can run on every poke.
// The controller's periodic resync catches task moves that no event
// announces (a task that fails on another node and is replaced).
type SwarmSource struct {
	cli                     *client.Client
	callTimeout, settlePoll time.Duration
	// starting: the last List saw a task of an opted-in service on its way
	// to running; Events pokes until none is. A service whose tasks never
	// get there (an image missing on a node, a crash loop) keeps it set: a
	// List a second, milliseconds each.
	starting atomic.Bool
}

// NewSwarmSource connects to a manager's engine through the standard
// DOCKER_* environment, negotiating the API version as NewDockerEngine does.
func NewSwarmSource() (*SwarmSource, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return newSwarmSource(cli), nil
}

func newSwarmSource(cli *client.Client) *SwarmSource {
	return &SwarmSource{cli: cli, callTimeout: dockerCallTimeout, settlePoll: swarmSettlePoll}
}

// Close releases the client's connections.
func (s *SwarmSource) Close() error { return s.cli.Close() }

// List returns a Container for each task of an opted-in service that Swarm
// wants running or ready (see projectTasks for which of them and how). An
// error names the call, and the service where there is one.
func (s *SwarmSource) List(ctx context.Context) ([]Container, error) {
	ctx, cancel := context.WithTimeout(ctx, s.callTimeout)
	defer cancel()
	services, err := s.cli.ServiceList(ctx, swarm.ServiceListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	services = slices.DeleteFunc(services, func(svc swarm.Service) bool { return !OptedIn(svc.Spec.Labels) })
	if len(services) == 0 {
		s.starting.Store(false)
		return nil, nil
	}
	nodes, err := s.cli.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	tasks := make([][]swarm.Task, len(services))
	errs := make([]error, len(services))
	parallel(len(services), func(i int) {
		// All of the service's tasks, the ended ones Swarm keeps as
		// history too (task-history-limit, 5 per slot by default): they
		// tell a service that has served from a new one (keepsHost).
		tasks[i], errs[i] = s.cli.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(
			filters.Arg("service", services[i].ID))})
	})
	for i, svc := range services {
		switch {
		case client.IsErrNotFound(errs[i]):
			tasks[i] = nil // removed since the service list: it is gone
		case errs[i] != nil:
			return nil, fmt.Errorf("list tasks of service %s: %w", svc.Spec.Name, errs[i])
		}
	}
	var netNames map[string]string
	if slices.ContainsFunc(tasks, needsSpecNetworks) {
		if netNames, err = s.overlayNames(ctx); err != nil {
			return nil, err
		}
	}
	down := downNodes(nodes)
	var out []Container
	starting := false
	for i, svc := range services {
		out = append(out, projectTasks(svc, tasks[i], down, netNames)...)
		starting = starting || slices.ContainsFunc(tasks[i], func(t swarm.Task) bool { return current(t) && pendingTask(taskState(t)) })
	}
	s.starting.Store(starting)
	return out, nil
}

// overlayNames maps the IDs of the overlay networks to their names. A
// service's spec names its networks by ID, and a task that Swarm has only
// just created has no network attachments yet (projectTasks).
func (s *SwarmSource) overlayNames(ctx context.Context) (map[string]string, error) {
	nets, err := s.cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("driver", "overlay"))})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	names := make(map[string]string, len(nets))
	for _, n := range nets {
		names[n.ID] = n.Name
	}
	return names, nil
}

// downNodes are the IDs of nodes the managers see as down or disconnected.
func downNodes(nodes []swarm.Node) map[string]bool {
	down := map[string]bool{}
	for _, n := range nodes {
		if n.Status.State == swarm.NodeStateDown || n.Status.State == swarm.NodeStateDisconnected {
			down[n.ID] = true
		}
	}
	return down
}

// projectTasks turns one service and its tasks into Containers. Pure.
//
// Only the tasks Swarm wants running, or ready to run, count (current).
// Swarm creates a task "ready" when it must not start yet: during a
// stop-first rolling update until the task it replaces has stopped, and
// during a restart delay; such a task is on its way, whatever its state
// says. Of these tasks:
//   - running: routed, with its overlay addresses;
//   - on its way (new … starting): StateCreated, so Desired neither routes
//     it nor gives its host a 503 site: a service being created or scaled
//     would otherwise reload nginx for a site that is only about to work.
//     The exception is a service that has run tasks before and has none
//     running now (keepsHost): there its tasks are StateTaskStarting, so
//     the host keeps answering 503 with its certificate. Swarm creates
//     such a task before it allocates its network attachments; until then
//     its networks are those of the service's spec (netNames maps their
//     IDs to names), without addresses, so the host stays within the
//     scope rule (sharesNetwork);
//   - ended (complete, failed, shutdown, rejected, orphaned, remove): left
//     out; Swarm replaces it with a new task, which is what counts.
//
// A running task on a node that is down is listed not running
// (StateTaskNodeDown): it cannot answer, and its service keeps its host.
//
// Health stays "": tasks carry none in API 1.41. Swarm itself gates on it,
// though: a task whose image or service declares a health check stays
// "starting" until its first healthy result, and one found unhealthy then
// is stopped and replaced, so a running task has passed its health check.
// One exception seen on engine 20.10: a container that exits 0 when it is
// stopped for failing (one that handles SIGTERM gracefully) is taken for a
// task that started, and listed running until Swarm sees the exit, a
// moment later; the next pass drops it.
func projectTasks(svc swarm.Service, tasks []swarm.Task, down map[string]bool, netNames map[string]string) []Container {
	exposed := servicePorts(svc.Spec)
	keep := keepsHost(tasks)
	var out []Container
	for _, t := range tasks {
		if !current(t) {
			continue
		}
		c := Container{
			ID:          t.ID,
			Name:        taskName(svc.Spec.Name, t),
			Labels:      taskLabels(svc, t),
			Exposed:     exposed,
			Healthcheck: declaresHealthcheck(svc.Spec),
		}
		switch st := taskState(t); {
		case st == swarm.TaskStateRunning && down[t.NodeID]:
			c.State = StateTaskNodeDown
		case st == swarm.TaskStateRunning:
			c.State, c.Running = string(swarm.TaskStateRunning), true
		case pendingTask(st) && keep:
			c.State = StateTaskStarting
		case pendingTask(st):
			c.State = StateCreated
		default:
			continue
		}
		c.Networks, c.IPv6 = taskAddresses(t.NetworksAttachments)
		if c.State == StateTaskStarting && len(t.NetworksAttachments) == 0 {
			c.Networks = specNetworks(svc.Spec, netNames)
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Container) int { return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID)) })
	return out
}

// current: Swarm wants the task running, or ready to run.
func current(t swarm.Task) bool {
	return t.DesiredState == swarm.TaskStateRunning || t.DesiredState == swarm.TaskStateReady
}

// keepsHost: the service has run tasks before (Swarm keeps ended tasks as
// history) and none of its current tasks runs, so its tasks on their way
// keep its host. A brand-new service has no history: its first tasks do
// not make a 503 site. With a task-history-limit of 0 there is no history,
// and the host goes until a task runs again.
func keepsHost(tasks []swarm.Task) bool {
	history, running := false, false
	for _, t := range tasks {
		if !current(t) {
			history = true
		} else if taskState(t) == swarm.TaskStateRunning {
			running = true
		}
	}
	return history && !running
}

// needsSpecNetworks: a service's tasks include one that keeps its host
// and has no network attachments yet.
func needsSpecNetworks(tasks []swarm.Task) bool {
	return keepsHost(tasks) && slices.ContainsFunc(tasks, func(t swarm.Task) bool {
		return current(t) && pendingTask(taskState(t)) && len(t.NetworksAttachments) == 0
	})
}

// taskState is the state berth goes by: the task's own, except that one
// Swarm wants only ready does not count as running.
func taskState(t swarm.Task) swarm.TaskState {
	if t.DesiredState == swarm.TaskStateReady && t.Status.State == swarm.TaskStateRunning {
		return swarm.TaskStateReady
	}
	return t.Status.State
}

// specNetworks are the overlay networks the service's spec attaches its
// tasks to, by name, with no address ("" as for a container not running).
func specNetworks(spec swarm.ServiceSpec, netNames map[string]string) map[string]string {
	var nets map[string]string
	//nolint:staticcheck // spec.Networks: engines before API 1.44 may still fill it
	for _, n := range slices.Concat(spec.TaskTemplate.Networks, spec.Networks) {
		if name := netNames[n.Target]; name != "" {
			if nets == nil {
				nets = map[string]string{}
			}
			nets[name] = ""
		}
	}
	return nets
}

// pendingTask: a task on its way to running.
func pendingTask(st swarm.TaskState) bool {
	switch st {
	case swarm.TaskStateNew, swarm.TaskStateAllocated, swarm.TaskStatePending, swarm.TaskStateAssigned,
		swarm.TaskStateAccepted, swarm.TaskStatePreparing, swarm.TaskStateReady, swarm.TaskStateStarting:
		return true
	}
	return false
}

// taskName is Swarm's own name of a task: "<service>.<slot>" for a
// replicated service, "<service>.<node ID>" for a global one (its tasks
// have no slot). Two tasks of one slot can be listed together during a
// start-first update; their IDs tell them apart.
func taskName(service string, t swarm.Task) string {
	if t.Slot != 0 {
		return service + "." + strconv.Itoa(t.Slot)
	}
	return service + "." + t.NodeID
}

// taskLabels are the service's labels (what a stack file's deploy.labels
// sets, and where berth reads proxy.*) plus the task and service labels
// Swarm puts on a task's container. The service's map is not modified.
func taskLabels(svc swarm.Service, t swarm.Task) map[string]string {
	labels := make(map[string]string, len(svc.Spec.Labels)+3)
	for k, v := range svc.Spec.Labels {
		labels[k] = v
	}
	labels[swarmTaskLabel] = t.ID
	labels[swarmServiceNameLabel] = svc.Spec.Name
	labels[swarmServiceIDLabel] = svc.ID
	return labels
}

// servicePorts stands in for a container's exposed ports, which the task
// API does not carry (the image's EXPOSE is known only to the engine of the
// node that runs it). DESIGN's rule for a missing proxy.port is "the only
// exposed port; else 80 if exposed; else an error". The closest the
// service API allows: the target ports the service publishes (TCP), so a
// service that publishes one port is proxied there and one that publishes
// several must say proxy.port; a service that publishes none (the usual
// case behind berth) is taken to listen on 80, where a container would get
// "no exposed port". proxy.port, when set, wins over both, as it does for
// containers (choosePort).
func servicePorts(spec swarm.ServiceSpec) []int {
	var ports []int
	if spec.EndpointSpec != nil {
		for _, p := range spec.EndpointSpec.Ports {
			if p.TargetPort != 0 && (p.Protocol == "" || p.Protocol == swarm.PortConfigProtocolTCP) {
				ports = append(ports, int(p.TargetPort))
			}
		}
	}
	if len(ports) == 0 {
		return []int{80}
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

// declaresHealthcheck: the service declares a health check of its own.
// One that comes only from the image is invisible here.
func declaresHealthcheck(spec swarm.ServiceSpec) bool {
	cs := spec.TaskTemplate.ContainerSpec
	return cs != nil && cs.Healthcheck != nil && len(cs.Healthcheck.Test) > 0 && cs.Healthcheck.Test[0] != "NONE"
}

// taskAddresses maps the overlay networks a task is attached to, by name,
// to its IPv4 and IPv6 addresses there (Swarm gives them as CIDRs, e.g.
// "10.0.1.5/24"). The ingress network is left out: its addresses serve the
// routing mesh, which berth does not use, and nginx is never attached to
// it. A network with no address yet maps to "", as for containers.
func taskAddresses(atts []swarm.NetworkAttachment) (v4, v6 map[string]string) {
	for _, a := range atts {
		n := a.Network
		if n.Spec.Ingress || !overlay(n) || n.Spec.Name == "" {
			continue
		}
		if v4 == nil {
			v4 = map[string]string{}
		}
		v4[n.Spec.Name] = ""
		for _, cidr := range a.Addresses {
			p, err := netip.ParsePrefix(cidr)
			if err != nil {
				continue
			}
			switch ip := p.Addr(); {
			case ip.Is4() && v4[n.Spec.Name] == "":
				v4[n.Spec.Name] = ip.String()
			case ip.Is6() && !ip.IsLinkLocalUnicast():
				if v6 == nil {
					v6 = map[string]string{}
				}
				if v6[n.Spec.Name] == "" {
					v6[n.Spec.Name] = ip.String()
				}
			}
		}
	}
	return v4, v6
}

// overlay: the network spans nodes. The driver is named in the network's
// state and, when given at creation, in its spec.
func overlay(n swarm.Network) bool {
	if n.DriverState.Name != "" {
		return n.DriverState.Name == "overlay"
	}
	return n.Spec.DriverConfiguration == nil || n.Spec.DriverConfiguration.Name == "" || n.Spec.DriverConfiguration.Name == "overlay"
}

// Events subscribes to the Swarm changes that can alter routing: services
// created, updated (which includes scaled and the progress of a rolling
// update) and removed, and nodes joining, leaving, or going down or up.
// Swarm sends no task events in API 1.41, so while the last List saw tasks
// on their way to running it also pokes every swarmSettlePoll.
//
// Container events are not subscribed: a manager's engine sees only the
// containers of its own node, so they would make the reaction to a task
// depend on where Swarm placed it; the settle poll and the resync cover
// every node alike.
func (s *SwarmSource) Events(ctx context.Context) (<-chan string, <-chan error) {
	f := filters.NewArgs(
		filters.Arg("type", string(events.ServiceEventType)),
		filters.Arg("type", string(events.NodeEventType)),
	)
	sub, cancel := context.WithCancel(ctx)
	msgs, errs := s.cli.Events(sub, events.ListOptions{Filters: f})
	out, outErr := forwardEvents(sub, msgs, errs, func(m events.Message) string {
		return fmt.Sprintf("%s %s %s", m.Type, m.Action, cmp.Or(m.Actor.Attributes["name"], shortID(m.Actor.ID)))
	})
	merged := make(chan string)
	done := make(chan error, 1)
	go func() {
		defer close(done)
		defer cancel()
		tick := time.NewTicker(s.settlePoll)
		defer tick.Stop()
		for {
			var msg string
			select {
			case <-sub.Done():
				return
			case err, ok := <-outErr:
				if ok {
					done <- err
				}
				return
			case m := <-out:
				msg = m
			case <-tick.C:
				if !s.starting.Load() {
					continue
				}
				msg = "swarm tasks starting"
			}
			select {
			case merged <- msg:
			case <-sub.Done():
				return
			}
		}
	}()
	return merged, done
}
