package controller

// Lease against a real Swarm: run by TestLeaseAndClusterStoreOnARealSwarm
// (docker_swarm_store_integration_test.go), which shares one Swarm between
// the lease and the store.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/internal/testenv"
)

// setLeaseLabels changes the labels of the config called name as someone
// other than a Lease would (the CLI cannot): read, change, and
// ConfigUpdate with the version read, again when a renewal got in between
// ("update out of sequence").
func setLeaseLabels(t *testing.T, cli *client.Client, name string, change func(labels map[string]string)) {
	t.Helper()
	ctx := context.Background()
	var err error
	for range 10 {
		var cfg swarm.Config
		if cfg, _, err = cli.ConfigInspectWithRaw(ctx, name); err != nil {
			t.Fatal(err)
		}
		spec := cfg.Spec
		spec.Labels = maps.Clone(cfg.Spec.Labels)
		if spec.Labels == nil {
			spec.Labels = map[string]string{}
		}
		change(spec.Labels)
		if err = cli.ConfigUpdate(ctx, cfg.ID, cfg.Version, spec); err == nil || !strings.Contains(err.Error(), "out of sequence") {
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
	// A service standing for berth's own: the lease must leave its spec
	// (and so what `docker service rollback` restores) and its tasks alone.
	const service = "berth"
	// No health check: the image's (1 s interval, 1 s timeout, 1 retry)
	// fails now and then on a loaded machine, and Swarm then replaces the
	// task, which would read as a restart caused by the lease.
	sw.Docker(t, 0, "service", "create", "--detach", "--name", service, "--replicas", "2",
		"--endpoint-mode", "dnsrr", "--no-healthcheck", backend)
	svcID := sw.Docker(t, 0, "service", "inspect", "--format", "{{.ID}}", service)
	tasks := func() string {
		return sw.Docker(t, 0, "service", "ps", "-q", "--no-trunc", service)
	}
	serviceSpec := func() string {
		return sw.Docker(t, 0, "service", "inspect", "--format",
			"version {{.Version.Index}} labels {{json .Spec.Labels}} previous {{json .PreviousSpec}}", service)
	}
	eventually(t, 90*time.Second, "2 running tasks", func() (bool, string) {
		out := sw.Docker(t, 0, "service", "ps", "--filter", "desired-state=running", "--format", "{{.CurrentState}}", service)
		return strings.Count(out, "Running") == 2, out
	})
	tasksBefore, specBefore := tasks(), serviceSpec()
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
		t.Errorf("no container of %s on any node", service)
	}
	if _, _, err := selfService(ctx, clis[0], "no-such-container", dockerCallTimeout); err == nil || !strings.Contains(err.Error(), "no-such-container") {
		t.Errorf("selfService of an unknown hostname: %v, want an error naming it", err)
	}

	log := bufferedLog(t)
	inspect := func(name string) swarm.Config {
		t.Helper()
		cfg, _, err := clis[0].ConfigInspectWithRaw(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	// The CAS itself, on a lease config of its own (whose name is not a
	// prefix of the real one's, whose candidates it would poke): only one
	// create of the config succeeds, a write based on a read that another
	// update has overtaken is refused, and Swarm lets only the labels of
	// a config change.
	const scratch = "cas-check"
	racer := newSwarmSource(clis[2]).Lease(scratch, "racer", ttl)
	if _, err := racer.create(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := newSwarmSource(clis[1]).Lease(scratch, "second", ttl).create(ctx, time.Now()); !errdefs.IsConflict(err) ||
		inspect(scratch).Spec.Labels[LeaseHolderLabel] != "racer" {
		t.Fatalf("a second create of the lease config: %v (holder %q), want a conflict and racer's claim",
			err, inspect(scratch).Spec.Labels[LeaseHolderLabel])
	}
	stale, err := racer.inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	setLeaseLabels(t, clis[1], scratch, func(l map[string]string) { l[LeaseHolderLabel] = "other" })
	if _, err := racer.write(ctx, stale, time.Now()); err == nil || inspect(scratch).Spec.Labels[LeaseHolderLabel] != "other" {
		t.Fatalf("a claim written from a stale read of the lease config was accepted (err %v): no compare-and-swap", err)
	} else {
		t.Logf("a claim from a stale read is refused: %v", err)
	}
	cfg := inspect(scratch)
	changed := cfg.Spec
	changed.Data = []byte("changed")
	if err := clis[0].ConfigUpdate(ctx, cfg.ID, cfg.Version, changed); err == nil {
		t.Errorf("Swarm let the data of a config change")
	}
	if got := string(inspect(scratch).Spec.Data); got != leaseConfigData {
		t.Errorf("lease config data after label updates: %q, want %q", got, leaseConfigData)
	}
	if err := clis[0].ConfigRemove(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}

	// Four candidates on three managers start at once, before the lease
	// config exists: exactly one creates it and wins, at once, Swarm
	// turning the others' creates away; its renewals keep the others out
	// for two TTLs.
	const name = "berth-lease"
	labels := func() map[string]string { return inspect(name).Spec.Labels }
	var cands []*candidate
	started := time.Now()
	for i, h := range []string{"A", "B", "C", "D"} {
		cands = append(cands, campaign(newSwarmSource(clis[i%len(clis)]).Lease(name, h, ttl), log))
	}
	all := slices.Clone(cands)
	t.Cleanup(func() {
		for _, c := range all {
			c.cancel()
		}
	})
	won := winners(cands, 2*time.Second)
	if len(won) != 1 || won[0].err != nil {
		t.Fatalf("4 candidates on a missing lease config: winners %+v, want exactly one", won)
	}
	first := won[0]
	t.Logf("4 candidates on a missing lease config: %s held the lease %s after they started", first.holder,
		first.at.Sub(started).Round(time.Millisecond))
	if more := winners(without(cands, first.holder), 2*ttl); len(more) != 0 {
		t.Fatalf("%s won while %s renews: %+v", more[0].holder, first.holder, more)
	}
	if got := labels()[LeaseHolderLabel]; got != first.holder {
		t.Errorf("leader label %q, want %q", got, first.holder)
	}
	if got := string(inspect(name).Spec.Data); got != leaseConfigData {
		t.Errorf("lease config data %q, want %q", got, leaseConfigData)
	}
	if first.term.Err() != nil {
		t.Errorf("%s's term ended while it renews", first.holder)
	}
	cands = without(cands, first.holder)

	// The holder releases: one of the others takes over within a poll
	// (TTL/3 here); that the release's event wakes a candidate at once,
	// without waiting for its poll, is checked below with a candidate
	// that polls rarely.
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
	took := second.at.Sub(released)
	t.Logf("after %s's release, %s held the lease %s later", first.holder, second.holder, took.Round(time.Millisecond))
	if poll := ttl / 3; took > poll+500*time.Millisecond {
		t.Errorf("%s took %s to take over a released lease, more than its %s poll", second.holder, took, poll)
	}
	cands = without(cands, second.holder)

	// The holder stops renewing without a release (its process dies): its
	// term ends at once, and another takes over once the last expiry it
	// wrote plus the grace has passed. That expiry is a TTL after a
	// renewal at most a TTL/3 (and the time of one renewal's calls)
	// before it stopped; without the grace, the takeover would come at
	// least half a second earlier than this allows.
	stopped := time.Now()
	second.cancel()
	select {
	case <-second.term.Done():
	case <-time.After(time.Second):
		t.Errorf("%s's term still on after its context ended", second.holder)
	}
	won = winners(cands, ttl+leaseSkewGrace+time.Second)
	if len(won) != 1 || won[0].err != nil {
		t.Fatalf("after %s stopped renewing: winners %+v, want exactly one", second.holder, won)
	}
	third := won[0]
	took = third.at.Sub(stopped)
	t.Logf("after %s stopped renewing, %s held the lease %s later", second.holder, third.holder, took.Round(time.Millisecond))
	if earliest := ttl + leaseSkewGrace - ttl/3 - 500*time.Millisecond; took < earliest {
		t.Errorf("%s took over %s after %s stopped, before its lease could have expired plus the grace (%s)", third.holder, took, second.holder, earliest)
	}
	cands = without(cands, third.holder)
	last := cands[0]

	// Someone else writes itself in: the holder's term ends at its next
	// renewal, and its release leaves the other's labels alone.
	far := time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	setLeaseLabels(t, clis[2], name, func(l map[string]string) {
		l[LeaseHolderLabel], l[LeaseExpiresLabel] = "intruder", far
	})
	eventually(t, ttl, "the holder's term ends when another holds the lease", func() (bool, string) {
		return third.term.Err() != nil, "term on"
	})
	third.release()
	if l := labels(); l[LeaseHolderLabel] != "intruder" || l[LeaseExpiresLabel] != far {
		t.Errorf("after the release of a lost lease, labels %v; want the intruder's", l)
	}
	quitter := campaign(newSwarmSource(clis[0]).Lease(name, "quitter", ttl), log)
	all = append(all, quitter)
	quitter.cancel()
	if r := <-quitter.done; !errors.Is(r.err, context.Canceled) {
		t.Errorf("a campaign whose context ends: %v, want context.Canceled", r.err)
	}

	// The lease config is removed (by hand): a candidate, woken by the
	// removal, creates it again with its claim, however long the last
	// holder's expiry.
	removed := time.Now()
	if err := clis[1].ConfigRemove(ctx, name); err != nil {
		t.Fatal(err)
	}
	won = winners([]*candidate{last}, 2*time.Second)
	if len(won) != 1 || won[0].err != nil {
		t.Fatalf("after the lease config was removed: winners %+v, want %s", won, last.holder)
	}
	t.Logf("after the lease config was removed, %s held the lease %s later", last.holder, won[0].at.Sub(removed).Round(time.Millisecond))
	if l := labels(); l[LeaseHolderLabel] != last.holder {
		t.Errorf("after the lease config was removed and %s won, labels %v", last.holder, l)
	}
	// Removed under a holder with no candidate about: the holder's next
	// renewal creates it again, and its term goes on.
	if err := clis[1].ConfigRemove(ctx, name); err != nil {
		t.Fatal(err)
	}
	eventually(t, ttl, "the holder creates the removed lease config again", func() (bool, string) {
		cfg, _, err := clis[0].ConfigInspectWithRaw(ctx, name)
		return err == nil && cfg.Spec.Labels[LeaseHolderLabel] == last.holder, fmt.Sprint(cfg.Spec.Labels, err)
	})
	if won[0].term.Err() != nil {
		t.Errorf("%s's term ended after it created the removed lease config again", last.holder)
	}
	won[0].release()

	// A candidate with a TTL of a minute looks again at most every 20 s,
	// and at once on any event of the lease config: it takes a lease
	// released by someone else, with the expiry an hour off, in about the
	// time of one call.
	setLeaseLabels(t, clis[2], name, func(l map[string]string) {
		l[LeaseHolderLabel], l[LeaseExpiresLabel] = "keeper", far
	})
	watcher := campaign(newSwarmSource(clis[1]).Lease(name, "watcher", time.Minute), log)
	all = append(all, watcher)
	if won = winners([]*candidate{watcher}, time.Second); len(won) != 0 {
		t.Fatalf("watcher took keeper's lease: %+v", won)
	}
	released = time.Now()
	setLeaseLabels(t, clis[2], name, func(l map[string]string) {
		delete(l, LeaseHolderLabel)
		l[LeaseExpiresLabel] = time.Now().UTC().Format(time.RFC3339Nano)
	})
	won = winners([]*candidate{watcher}, 2*time.Second)
	if len(won) != 1 || won[0].err != nil {
		t.Fatalf("a candidate that polls every 20 s, after a release: winners %+v, want it, woken by the release's event", won)
	}
	t.Logf("after keeper's release, watcher (polling every 20 s) held the lease %s later", won[0].at.Sub(released).Round(time.Millisecond))
	won[0].release()

	// All those renewals left the service alone: the same spec version (so
	// the same PreviousSpec for a rollback) and the same tasks.
	if after := serviceSpec(); after != specBefore {
		t.Errorf("the lease changed the service: before\n%s\nafter\n%s", specBefore, after)
	}
	if after := tasks(); after != tasksBefore {
		t.Errorf("the lease restarted tasks: before\n%s\nafter\n%s\n%s", tasksBefore, after, sw.Docker(t, 0, "service", "ps",
			"--no-trunc", "--format", "{{.ID}} {{.Name}} desired={{.DesiredState}} {{.CurrentState}} {{.Error}}", service))
	}
	t.Logf("service after the lease's renewals: %s", specBefore)
}
