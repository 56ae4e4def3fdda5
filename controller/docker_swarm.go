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
	"slices"
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
