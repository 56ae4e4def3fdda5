package controller

// Lease against a real Swarm: run by TestLeaseAndClusterStoreOnARealSwarm
// (docker_swarm_store_integration_test.go), which shares one Swarm between
// the lease and the store.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/internal/testenv"
)

// updateService runs `docker service update --detach ARGS` on node,
// again when it loses a race with a renewal ("update out of sequence"):
// the CLI's own read-modify-write is a CAS too.
func updateService(t *testing.T, sw *testenv.Swarm, node int, args ...string) {
	t.Helper()
	var err error
	for range 10 {
		var out string
		out, err = sw.TryDocker(node, append([]string{"service", "update", "--detach"}, args...)...)
		if err == nil || !strings.Contains(err.Error()+out, "out of sequence") {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// campaignResult is what one Campaign returned, and when.
type campaignResult struct {
	holder  string
	term    context.Context
	release func()
	err     error
	at      time.Time
	cancel  context.CancelFunc // ends the campaign's context
}

// candidate is a Lease campaigning in the background.
type candidate struct {
	holder string
	cancel context.CancelFunc
	done   chan campaignResult
}

func campaign(l *Lease, log *logrus.Entry) *candidate {
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{holder: l.holder, cancel: cancel, done: make(chan campaignResult, 1)}
	go func() {
		term, release, err := l.Campaign(ctx, log)
		c.done <- campaignResult{holder: l.holder, term: term, release: release, err: err, at: time.Now(), cancel: cancel}
	}()
	return c
}

// winners collects the candidates that won within d, or within
// winnersSettle after the first: long enough for a second winner's write
// to land, if the CAS let one through.
func winners(cands []*candidate, d time.Duration) []campaignResult {
	var won []campaignResult
	deadline := time.After(d)
	var settled <-chan time.Time
	for {
		for _, c := range cands {
			select {
			case r := <-c.done:
				won = append(won, r)
				if settled == nil {
					settled = time.After(winnersSettle)
				}
			default:
			}
		}
		select {
		case <-deadline:
			return won
		case <-settled:
			return won
		case <-time.After(20 * time.Millisecond):
		}
	}
}

const winnersSettle = time.Second

func without(cands []*candidate, holder string) []*candidate {
	return slices.DeleteFunc(slices.Clone(cands), func(c *candidate) bool { return c.holder == holder })
}

func testLeaseOnSwarm(t *testing.T, sw *testenv.Swarm, clis []*client.Client) {
	const ttl = 3 * time.Second
	backend := testenv.BackendImage(t)
	sw.Load(t, backend)
	const name = "berth-lease"
	// No health check: the image's (1 s interval, 1 s timeout, 1 retry)
	// fails now and then on a loaded machine, and Swarm then replaces the
	// task, which would read as a restart caused by the lease.
	sw.Docker(t, 0, "service", "create", "--detach", "--name", name, "--replicas", "2",
		"--endpoint-mode", "dnsrr", "--no-healthcheck", backend)
	svcID := sw.Docker(t, 0, "service", "inspect", "--format", "{{.ID}}", name)
	tasks := func() string {
		return sw.Docker(t, 0, "service", "ps", "-q", "--no-trunc", name)
	}
	eventually(t, 90*time.Second, "2 running tasks", func() (bool, string) {
		out := sw.Docker(t, 0, "service", "ps", "--filter", "desired-state=running", "--format", "{{.CurrentState}}", name)
		return strings.Count(out, "Running") == 2, out
	})
	tasksBefore := tasks()
	ctx := context.Background()

	// SelfService, from inside a task: a task's container's hostname is
	// its short ID, which is what os.Hostname returns in there.
	found := false
	for i := range sw.Nodes {
		out, _ := sw.TryDocker(i, "ps", "-q", "--no-trunc", "--filter", "label=com.docker.swarm.service.id="+svcID)
		ids := strings.Fields(out)
		if len(ids) == 0 {
			continue
		}
		id := ids[0]
		wantTask := sw.Docker(t, i, "inspect", "--format", `{{index .Config.Labels "com.docker.swarm.task.id"}}`, id)
		gotSvc, gotTask, err := selfService(ctx, clis[i], id[:12], dockerCallTimeout)
		if err != nil || gotSvc != svcID || gotTask != wantTask {
			t.Errorf("selfService(%s) = %q, %q, %v; want %q, %q", id[:12], gotSvc, gotTask, err, svcID, wantTask)
		}
		found = true
		break
	}
	if !found {
		t.Errorf("no container of %s on any node", name)
	}
	if _, _, err := selfService(ctx, clis[0], "no-such-container", dockerCallTimeout); err == nil || !strings.Contains(err.Error(), "no-such-container") {
		t.Errorf("selfService of an unknown hostname: %v, want an error naming it", err)
	}

	log := bufferedLog(t)
	labels := func() map[string]string {
		svc, _, err := clis[0].ServiceInspectWithRaw(ctx, svcID, swarm.ServiceInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return svc.Spec.Labels
	}
	// Released, so that the first campaign need not wait the TTL plus
	// grace that labels missing altogether ask for.
	updateService(t, sw, 0, "--label-add", LeaseExpiresLabel+"="+time.Now().UTC().Format(time.RFC3339Nano), name)

	// The CAS itself: a write based on a read that another update has
	// overtaken is refused.
	stale, _, err := clis[0].ServiceInspectWithRaw(ctx, svcID, swarm.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	updateService(t, sw, 1, "--label-add", "other=change", name)
	racer := newSwarmSource(clis[2]).Lease(svcID, "racer", ttl)
	if _, err := racer.write(ctx, stale, time.Now()); err == nil || labels()[LeaseHolderLabel] == "racer" {
		t.Fatalf("a claim written from a stale read of the service was accepted (err %v): no compare-and-swap", err)
	} else {
		t.Logf("a claim from a stale read is refused: %v", err)
	}

	// Four candidates on three managers start at once: exactly one wins,
	// the CAS turning the others' writes away, and its renewals keep the
	// others out for two TTLs.
	var cands []*candidate
	for i, h := range []string{"A", "B", "C", "D"} {
		cands = append(cands, campaign(newSwarmSource(clis[i%len(clis)]).Lease(svcID, h, ttl), log))
	}
	all := slices.Clone(cands)
	t.Cleanup(func() {
		for _, c := range all {
			c.cancel()
		}
	})
	won := winners(cands, 2*time.Second)
	if len(won) != 1 || won[0].err != nil {
		t.Fatalf("4 candidates on a released lease: winners %+v, want exactly one", won)
	}
	first := won[0]
	if more := winners(without(cands, first.holder), 2*ttl); len(more) != 0 {
		t.Fatalf("%s won while %s renews: %+v", more[0].holder, first.holder, more)
	}
	if got := labels()[LeaseHolderLabel]; got != first.holder {
		t.Errorf("leader label %q, want %q", got, first.holder)
	}
	if first.term.Err() != nil {
		t.Errorf("%s's term ended while it renews", first.holder)
	}
	cands = without(cands, first.holder)

	// The holder releases: one of the others takes over at once.
	released := time.Now()
	first.release()
	if first.term.Err() == nil {
		t.Errorf("%s's term still on after its release", first.holder)
	}
	won = winners(cands, 2*time.Second)
	if len(won) != 1 || won[0].err != nil {
		t.Fatalf("after a release: winners %+v, want exactly one", won)
	}
	second := won[0]
	t.Logf("after %s's release, %s held the lease %s later", first.holder, second.holder, second.at.Sub(released).Round(time.Millisecond))
	cands = without(cands, second.holder)

	// The holder stops renewing without a release (its process dies):
	// its term ends at once, and another takes over after the TTL.
	stopped := time.Now()
	second.cancel()
	select {
	case <-second.term.Done():
	case <-time.After(time.Second):
		t.Errorf("%s's term still on after its context ended", second.holder)
	}
	won = winners(cands, ttl+leaseSkewGrace+2*time.Second)
	if len(won) != 1 || won[0].err != nil {
		t.Fatalf("after %s stopped renewing: winners %+v, want exactly one", second.holder, won)
	}
	third := won[0]
	took := third.at.Sub(stopped)
	t.Logf("after %s stopped renewing, %s held the lease %s later", second.holder, third.holder, took.Round(time.Millisecond))
	if took < leaseSkewGrace {
		t.Errorf("%s took over %s after %s stopped, before the lease could have expired", third.holder, took, second.holder)
	}
	cands = without(cands, third.holder)
	last := cands[0]

	// A stack deploy rewrites the labels from the stack file: the holder
	// writes its claim back, and the last candidate does not take over.
	updateService(t, sw, 1, "--label-rm", LeaseHolderLabel, "--label-rm", LeaseExpiresLabel, name)
	eventually(t, ttl, "the holder writes its wiped claim back", func() (bool, string) {
		l := labels()
		return l[LeaseHolderLabel] == third.holder, fmt.Sprint(l)
	})
	if won = winners([]*candidate{last}, ttl+leaseSkewGrace+time.Second); len(won) != 0 {
		t.Fatalf("%s took the lease that %s holds, after its labels were wiped: %+v", last.holder, third.holder, won)
	}
	if third.term.Err() != nil {
		t.Errorf("%s's term ended after a wipe of its labels", third.holder)
	}

	// Someone else writes itself in: the holder's term ends at its next
	// renewal, and its release leaves the other's labels alone.
	far := time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	updateService(t, sw, 2, "--label-add", LeaseHolderLabel+"=intruder", "--label-add", LeaseExpiresLabel+"="+far, name)
	eventually(t, ttl, "the holder's term ends when another holds the lease", func() (bool, string) {
		return third.term.Err() != nil, "term on"
	})
	third.release()
	if l := labels(); l[LeaseHolderLabel] != "intruder" || l[LeaseExpiresLabel] != far {
		t.Errorf("after the release of a lost lease, labels %v; want the intruder's", l)
	}
	last.cancel()
	if r := <-last.done; !errors.Is(r.err, context.Canceled) {
		t.Errorf("a campaign whose context ends: %v, want context.Canceled", r.err)
	}

	if after := tasks(); after != tasksBefore {
		t.Errorf("the lease restarted tasks: before\n%s\nafter\n%s\n%s", tasksBefore, after, sw.Docker(t, 0, "service", "ps",
			"--no-trunc", "--format", "{{.ID}} {{.Name}} desired={{.DesiredState}} {{.CurrentState}} {{.Error}}", name))
	} else {
		t.Logf("tasks unchanged after the lease's updates:\n%s", tasksBefore)
	}
	prev := sw.Docker(t, 0, "service", "inspect", "--format", "{{json .PreviousSpec.Labels}}", name)
	t.Logf("PreviousSpec labels after renewals (what `docker service rollback` would restore): %s", prev)
}
