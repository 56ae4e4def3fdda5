package controller

// The fleet half of the Swarm adapter: where the manager finds the nginx
// service (whose networks decide which services it can reach) and the
// agents it pushes to. Named docker_swarm_*.go because it imports the
// Docker client (see docker_swarm.go).

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
)

// LabelAgent marks the service of berth's Swarm agents (deploy.labels), so
// the manager knows where to push.
const LabelAgent = "proxy.agent"

// AgentTask is one running agent: where the manager pushes to reach the
// nginx of Node.
type AgentTask struct {
	ID   string // the task ID: a restarted agent is a new task, pushed afresh
	Node string // node ID
	Addr string // overlay IPv4 address
}

// Agents lists the running tasks of the services labelled proxy.agent=true
// on nodes that are up, each with its address on an overlay network (a
// network it shares with the manager's berth if there is one, since that
// is the one the push can cross).
func (s *SwarmSource) Agents(ctx context.Context, self []string) ([]AgentTask, error) {
	ctx, cancel := context.WithTimeout(ctx, s.callTimeout)
	defer cancel()
	services, err := s.cli.ServiceList(ctx, swarm.ServiceListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelAgent+"=true"))})
	if err != nil {
		return nil, fmt.Errorf("list agent services: %w", err)
	}
	nodes, err := s.cli.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	down := downNodes(nodes)
	var out []AgentTask
	for _, svc := range services {
		tasks, err := s.cli.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(
			filters.Arg("service", svc.ID), filters.Arg("desired-state", "running"))})
		if err != nil {
			return nil, fmt.Errorf("list tasks of agent service %s: %w", svc.Spec.Name, err)
		}
		out = append(out, agentTasks(tasks, down, self)...)
	}
	slices.SortFunc(out, func(a, b AgentTask) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// agentTasks picks the running agents on nodes that are up and their
// address: on a network named in self (the manager's own) when the task
// has one, else on its first overlay network. Pure.
func agentTasks(tasks []swarm.Task, down map[string]bool, self []string) []AgentTask {
	var out []AgentTask
	for _, t := range tasks {
		if t.Status.State != swarm.TaskStateRunning || t.DesiredState != swarm.TaskStateRunning || down[t.NodeID] {
			continue
		}
		v4, _ := taskAddresses(t.NetworksAttachments)
		addr := ""
		for _, name := range slices.Sorted(maps.Keys(v4)) {
			if v4[name] == "" {
				continue
			}
			if addr == "" || slices.Contains(self, name) {
				addr = v4[name]
				if slices.Contains(self, name) {
					break
				}
			}
		}
		if addr == "" {
			continue
		}
		out = append(out, AgentTask{ID: t.ID, Node: t.NodeID, Addr: addr})
	}
	return out
}

// NginxService returns the nginx service as the Container that stands for
// every node's nginx in Desired: its networks (from the service's spec)
// decide which services it reaches. name picks the service by name
// (BERTH_NGINX_CONTAINER); "" takes the one service labelled
// proxy.nginx=true, and several are an error naming them.
func (s *SwarmSource) NginxService(ctx context.Context, name string) (Container, error) {
	ctx, cancel := context.WithTimeout(ctx, s.callTimeout)
	defer cancel()
	f := filters.NewArgs(filters.Arg("label", LabelNginx+"=true"))
	if name != "" {
		f = filters.NewArgs(filters.Arg("name", name))
	}
	services, err := s.cli.ServiceList(ctx, swarm.ServiceListOptions{Filters: f})
	if err != nil {
		return Container{}, fmt.Errorf("list nginx services: %w", err)
	}
	if name != "" { // the name filter matches prefixes
		services = slices.DeleteFunc(services, func(svc swarm.Service) bool { return svc.Spec.Name != name && svc.ID != name })
	}
	svc, err := oneNginxService(services, name)
	if err != nil {
		return Container{}, err
	}
	netNames, err := s.overlayNames(ctx)
	if err != nil {
		return Container{}, err
	}
	return nginxServiceContainer(svc, netNames), nil
}

// oneNginxService picks the nginx service or says why there is none. Pure.
func oneNginxService(services []swarm.Service, name string) (swarm.Service, error) {
	switch {
	case len(services) == 1:
		return services[0], nil
	case len(services) == 0 && name != "":
		return swarm.Service{}, fmt.Errorf("%w: no Swarm service named %q (BERTH_NGINX_CONTAINER)", errNginxMissing, name)
	case len(services) == 0:
		return swarm.Service{}, fmt.Errorf("%w: no Swarm service labelled %s=true (deploy.labels)", errNginxMissing, LabelNginx)
	}
	names := make([]string, len(services))
	for i, svc := range services {
		names[i] = svc.Spec.Name
	}
	slices.Sort(names)
	return swarm.Service{}, fmt.Errorf("several Swarm services are labelled %s=true (%s): name one in BERTH_NGINX_CONTAINER", LabelNginx, strings.Join(names, ", "))
}

// nginxServiceContainer is the nginx service as Desired sees an nginx: its
// networks are the spec's, without addresses (each node's nginx has its
// own). Pure.
func nginxServiceContainer(svc swarm.Service, netNames map[string]string) Container {
	return Container{ID: svc.ID, Name: svc.Spec.Name, Labels: svc.Spec.Labels, Running: true, State: "running",
		Networks: specNetworks(svc.Spec, netNames)}
}
