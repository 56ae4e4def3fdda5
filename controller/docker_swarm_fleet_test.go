package controller

import (
	"errors"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/swarm"
)

func TestAgentTasksAreTheRunningOnesOnNodesThatAreUp(t *testing.T) {
	proxy := overlayNet("berth-proxy", "10.0.5.7/24")
	other := overlayNet("aaa-other", "10.0.9.7/24")
	starting := task("t-starting", "svc-agent", 0, "n1", swarm.TaskStateStarting, proxy)
	stopping := task("t-stopping", "svc-agent", 0, "n1", swarm.TaskStateRunning, proxy)
	stopping.DesiredState = swarm.TaskStateShutdown
	got := agentTasks([]swarm.Task{
		task("t-up", "svc-agent", 0, "n1", swarm.TaskStateRunning, other, proxy),
		task("t-down", "svc-agent", 0, "n2", swarm.TaskStateRunning, proxy),
		starting, stopping,
		task("t-noaddr", "svc-agent", 0, "n3", swarm.TaskStateRunning),
	}, map[string]bool{"n2": true}, []string{"berth-proxy"})
	want := []AgentTask{{ID: "t-up", Node: "n1", Addr: "10.0.5.7"}}
	if len(got) != 1 || got[0] != want[0] {
		t.Fatalf("agentTasks = %+v; want %+v (on the manager's network, not the first by name)", got, want)
	}
	if got := agentTasks([]swarm.Task{task("t", "s", 0, "n1", swarm.TaskStateRunning, other)}, nil, []string{"berth-proxy"}); len(got) != 1 || got[0].Addr != "10.0.9.7" {
		t.Fatalf("an agent on no shared network: %+v; want its first overlay address", got)
	}
}

func TestOneNginxServiceIsNeededOrNamed(t *testing.T) {
	a := swarm.Service{ID: "1"}
	a.Spec.Name = "web_nginx"
	b := swarm.Service{ID: "2"}
	b.Spec.Name = "other_nginx"
	if svc, err := oneNginxService([]swarm.Service{a}, ""); err != nil || svc.ID != "1" {
		t.Fatalf("one service: %v %v", svc.ID, err)
	}
	if _, err := oneNginxService(nil, ""); !errors.Is(err, errNginxMissing) || !strings.Contains(err.Error(), "proxy.nginx=true") {
		t.Fatalf("none: %v", err)
	}
	if _, err := oneNginxService([]swarm.Service{a, b}, ""); err == nil || !strings.Contains(err.Error(), "other_nginx, web_nginx") || !strings.Contains(err.Error(), "BERTH_NGINX_CONTAINER") {
		t.Fatalf("two: %v; want both named and the setting that picks one", err)
	}
}
