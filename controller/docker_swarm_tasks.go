package controller

// The pure half of the Swarm adapter (docker_swarm.go): a service and its
// tasks, as the Swarm API gives them, projected into Containers. No I/O;
// it imports the Docker API's types, so it is named like the adapter.

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/swarm"
)

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

// keepsHost: the service has ended tasks (Swarm keeps them as history)
// and none of its current tasks runs, so its tasks on their way keep its
// host. A brand-new service has no history: its first tasks do not make a
// 503 site, unless one of them has already ended (a first task that
// crashed counts as history, so such a service gets its 503 site and its
// certificate order at once). With a task-history-limit of 0 there is no
// history, and the host goes until a task runs again.
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
