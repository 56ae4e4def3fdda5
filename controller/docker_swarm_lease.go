package controller

// The leader lease of berth in Swarm mode: two (or more) replicas of the
// berth service run on managers, and exactly one of them may act at a time
// (decide the config, order certificates). The lease is kept in the Swarm
// itself, as two labels of a Swarm config of its own ("berth-lease"), and
// taken and renewed by compare-and-swap: ConfigUpdate carries the version
// that ConfigInspect returned, and Swarm refuses it ("update out of
// sequence") if anyone changed the config in between. A config's data is
// immutable but its labels are not, so the config holds a constant note
// and the lease lives in its labels. The first candidate creates the
// config with its claim; a create is a compare-and-swap too, refused if
// the config exists.
//
// Why a config and not the berth service's own labels (where the lease
// used to be): every update of a service replaces its PreviousSpec, so
// renewals made `docker service rollback` (and update failure_action
// rollback) restore lease labels instead of the previous image; `docker
// stack deploy` rewrites a service's labels, wiping the lease, which made
// candidates wait a whole TTL plus grace before trusting a missing lease
// and so delayed the first leader of every deployment; an operator's own
// `docker service update` raced the renewals ("update out of sequence");
// and every renewal was a service event that woke the Swarm source every
// few seconds. Nobody else edits the lease config (it is not in the stack
// file, and the CLI cannot change a config's labels), and the Swarm source
// does not watch configs.
//
// It imports the Docker client, so it is one of the docker*.go adapter
// files. The rules (who may take the lease, when) are the pure leaseDecide.

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"sync"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/sirupsen/logrus"
)

// The labels of the lease config that hold the lease. A held lease has
// both; a released one has only the expiry (the release time) and no
// holder; a config without them is a free lease.
const (
	LeaseHolderLabel  = "berth.leader"
	LeaseExpiresLabel = "berth.lease-expires"
)

// leaseConfigData is the lease config's data, which Swarm never lets
// change: a note for whoever finds the config in `docker config ls`.
const leaseConfigData = "berth's leader lease: the holder and its expiry are this config's labels " +
	"(" + LeaseHolderLabel + ", " + LeaseExpiresLabel + "), which the berth replicas update. " +
	"Removing the config lets a standby lead before the holder notices, for a few seconds.\n"

// DefaultLeaseTTL is how long a lease lasts unless renewed. A standby
// takes over a dead holder's lease within about this (plus leaseSkewGrace),
// so sites and renewals are not left without a leader for long; the
// holder, renewing every TTL/3 and retrying until 2/3 of it, rides out a
// few seconds of managers not answering. A raft election after the loss
// of the leading manager (about 10 s) can still end its term: labels that
// name it are then its own to take back at once, and no standby may take
// them before they expire.
const DefaultLeaseTTL = 15 * time.Second

// leaseSkewGrace is added to another holder's expiry before a candidate
// takes over. The expiry is written by the holder's clock and read by the
// candidate's; with the holder stopping at expiry − TTL/3 by its own clock,
// two replicas act at once only if the clocks differ by more than
// TTL/3 + leaseSkewGrace (7 s by default), far beyond what NTP leaves.
const leaseSkewGrace = 2 * time.Second

// Lease is one replica's claim on the leadership, kept in the labels of
// a Swarm config. Make it with SwarmSource.Lease; the holder id must be
// unique per process (SelfService's task ID is).
type Lease struct {
	cli          *client.Client
	name, holder string
	ttl, grace   time.Duration
	callTimeout  time.Duration
}

// Lease returns the lease kept in the Swarm config called name (created on
// first use) for holder. A ttl of 0 means DefaultLeaseTTL. Every replica
// that competes must use the same name and TTL.
func (s *SwarmSource) Lease(name, holder string, ttl time.Duration) *Lease {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	return &Lease{cli: s.cli, name: name, holder: holder, ttl: ttl, grace: leaseSkewGrace, callTimeout: s.callTimeout}
}

// leaseView is what the lease config's labels say.
type leaseView struct {
	Holder  string    // "" when released or never taken
	Expires time.Time // zero when missing or unreadable: treated as expired
}

// leaseFromLabels reads the lease labels.
func leaseFromLabels(labels map[string]string) leaseView {
	v := leaseView{Holder: labels[LeaseHolderLabel]}
	if t, err := time.Parse(time.RFC3339Nano, labels[LeaseExpiresLabel]); err == nil {
		v.Expires = t
	}
	return v
}

// leaseDecide says whether holder may write its claim at now, and if not,
// when to look again. It may when the lease is its own, released (or never
// taken), or expired for longer than grace (the expiry is the other
// holder's clock). A missing config is not decided here: it is created
// with the claim, which Swarm lets only one candidate do.
func leaseDecide(v leaseView, holder string, now time.Time, grace time.Duration) (take bool, retryAt time.Time) {
	if v.Holder == holder || v.Holder == "" {
		return true, now
	}
	retryAt = v.Expires.Add(grace)
	if now.After(retryAt) {
		return true, now
	}
	return false, retryAt
}

// renewEvery is how often the holder renews: three tries per TTL.
func (l *Lease) renewEvery() time.Duration { return l.ttl / 3 }

// margin is how long before its expiry the holder gives up acting when it
// could not renew: a renewal confirmed too late is not trusted, since a
// candidate may be about to take over.
func (l *Lease) margin() time.Duration { return l.ttl / 3 }

// retryEvery is how often a failed renewal is retried before the margin:
// a few tries in the last third of the TTL.
func (l *Lease) retryEvery() time.Duration { return l.ttl / 10 }

// Campaign blocks until this holder holds the lease (free, released,
// expired, already its own, or its config missing) or ctx ends. It then
// renews in the background every TTL/3 and returns term, which is
// cancelled when the holder must stop acting: a renewal could not confirm
// the lease before its expiry minus TTL/3, another holder has it, or ctx
// ended. release stops renewing and clears the holder (by CAS, only if it
// is still this one), so that a standby takes over at once; call it on
// shutdown, and after term ends before campaigning again. It may be
// called more than once, and works after ctx has ended.
func (l *Lease) Campaign(ctx context.Context, log *logrus.Entry) (term context.Context, release func(), err error) {
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	log = log.WithFields(logrus.Fields{"holder": l.holder, "lease": l.name})
	expires, err := l.acquire(ctx, log)
	if err != nil {
		return nil, nil, err
	}
	log.WithField("expires", expires.Format(time.RFC3339Nano)).Info("lease acquired")
	term, cancel := context.WithCancel(ctx)
	stop, stopRenew := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cancel()
		l.keep(stop, log, expires)
	}()
	var once sync.Once
	release = func() {
		once.Do(func() {
			stopRenew()
			<-done
			if err := l.clear(context.Background()); err != nil {
				log.WithError(err).Warn("lease not released; a standby takes over when it expires")
				return
			}
			log.Info("lease released")
		})
	}
	return term, release, nil
}

// acquire waits until a write of this holder's claim succeeds, and
// returns the expiry it wrote. A standby looks again when the holder's
// lease would expire, every TTL/3 at most, and at once on any event of
// the lease config (a release is an update), so a released lease is taken
// in about the time of one call.
func (l *Lease) acquire(ctx context.Context, log *logrus.Entry) (time.Time, error) {
	watching, stop := context.WithCancel(ctx)
	defer stop() // a holder needs no more pokes
	updates := l.watch(watching)
	for {
		wait := l.renewEvery()
		cfg, err := l.inspect(ctx)
		now := time.Now()
		switch {
		case errdefs.IsNotFound(err):
			expires, err := l.create(ctx, now)
			if err == nil {
				return expires, nil
			}
			if errdefs.IsConflict(err) {
				wait = 0 // another candidate created it first: read its claim
			} else {
				wait = l.retryEvery()
			}
			log.WithError(err).Debug("lease: could not create the lease config, looking again")
		case err != nil:
			log.WithError(err).Warn("lease: cannot read the lease config")
		default:
			v := leaseFromLabels(cfg.Spec.Labels)
			take, at := leaseDecide(v, l.holder, now, l.grace)
			if take {
				expires, err := l.write(ctx, cfg, now)
				if err == nil {
					return expires, nil
				}
				log.WithError(err).Debug("lease: claim lost a race, looking again")
				wait = l.retryEvery()
			} else if d := at.Sub(now); d < wait {
				wait = d
			}
			log.WithFields(logrus.Fields{"leader": v.Holder, "retry_in": wait}).Debug("lease held elsewhere")
		}
		if err := waitOrUpdate(ctx, wait, updates); err != nil {
			return time.Time{}, err
		}
	}
}

// waitOrUpdate returns after wait, on a message from updates, or with
// ctx's error when ctx ends first.
func waitOrUpdate(ctx context.Context, wait time.Duration, updates <-chan struct{}) error {
	timer := time.NewTimer(max(wait, 0))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
	case <-updates:
	}
	return nil
}

// watch pokes on every event (create, update, remove) of the lease
// config, while ctx lasts. Swarm sends config events to subscribers on
// every manager. (The name filter matches by prefix, so a config whose
// name starts with the lease's pokes too: a needless read, no more.) If
// the subscription fails it goes quiet, and acquire's timer still looks.
func (l *Lease) watch(ctx context.Context) <-chan struct{} {
	f := filters.NewArgs(filters.Arg("type", string(events.ConfigEventType)), filters.Arg("config", l.name))
	msgs, errs := l.cli.Events(ctx, events.ListOptions{Filters: f})
	poke := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-errs:
				return
			case <-msgs:
				select {
				case poke <- struct{}{}:
				default:
				}
			}
		}
	}()
	return poke
}

// keep renews the lease until stop ends or the lease is lost. expires is
// the expiry last confirmed; after a failed renewal it retries until
// expires − margin, and then gives up.
func (l *Lease) keep(stop context.Context, log *logrus.Entry, expires time.Time) {
	next := l.renewEvery()
	for {
		if err := waitOrUpdate(stop, next, nil); err != nil {
			return
		}
		deadline := expires.Add(-l.margin())
		got, lost, err := l.renew(stop, deadline)
		switch {
		case stop.Err() != nil:
			return
		case lost != "":
			log.WithField("leader", lost).Warn("lease lost to another holder")
			return
		case err == nil:
			expires, next = got, l.renewEvery()
			continue
		}
		if !time.Now().Before(deadline) {
			log.WithError(err).Error("lease could not be renewed before its expiry; stepping down")
			return
		}
		next = min(l.retryEvery(), time.Until(deadline))
		log.WithError(err).WithField("retry_in", next).Warn("lease renewal failed")
	}
}

// renew confirms the lease until now + TTL, within deadline. lost names
// the holder when the labels show another (or a release nobody asked
// for). A lease config that someone removed is created again with this
// holder's claim: if a candidate created it first, the create fails, and
// the next try finds the candidate's claim and steps down.
func (l *Lease) renew(ctx context.Context, deadline time.Time) (expires time.Time, lost string, err error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	cfg, err := l.inspect(ctx)
	if errdefs.IsNotFound(err) {
		expires, err = l.create(ctx, time.Now())
		return expires, "", err
	}
	if err != nil {
		return time.Time{}, "", err
	}
	if v := leaseFromLabels(cfg.Spec.Labels); v.Holder != l.holder {
		return time.Time{}, cmp.Or(v.Holder, "(released)"), nil
	}
	expires, err = l.write(ctx, cfg, time.Now())
	return expires, "", err
}

// clear removes this holder from the labels, leaving the release time as
// the expiry. A lease that is no longer this holder's, or whose config is
// gone, is left alone.
func (l *Lease) clear(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.callTimeout)
	defer cancel()
	for range 3 { // a concurrent update of the config costs one retry
		cfg, err := l.inspect(ctx)
		if errdefs.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if leaseFromLabels(cfg.Spec.Labels).Holder != l.holder {
			return nil
		}
		labels := maps.Clone(cfg.Spec.Labels)
		delete(labels, LeaseHolderLabel)
		labels[LeaseExpiresLabel] = time.Now().UTC().Format(time.RFC3339Nano)
		if err = l.update(ctx, cfg, labels); err == nil {
			return nil
		}
	}
	return fmt.Errorf("release lease config %s: concurrent updates", l.name)
}

// claim is the labels of this holder's claim until expires, over labels.
func (l *Lease) claim(labels map[string]string, expires time.Time) map[string]string {
	labels = maps.Clone(labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LeaseHolderLabel] = l.holder
	labels[LeaseExpiresLabel] = expires.UTC().Format(time.RFC3339Nano)
	return labels
}

// write claims the lease for holder until now + TTL by CAS on cfg's version.
func (l *Lease) write(ctx context.Context, cfg swarm.Config, now time.Time) (time.Time, error) {
	expires := now.Add(l.ttl)
	return expires, l.update(ctx, cfg, l.claim(cfg.Spec.Labels, expires))
}

// create makes the lease config with this holder's claim until now + TTL.
// It fails (errdefs.IsConflict) if the config exists: a candidate that
// created it first holds the lease.
func (l *Lease) create(ctx context.Context, now time.Time) (time.Time, error) {
	expires := now.Add(l.ttl)
	spec := swarm.ConfigSpec{
		Annotations: swarm.Annotations{Name: l.name, Labels: l.claim(nil, expires)},
		Data:        []byte(leaseConfigData),
	}
	ctx, cancel := context.WithTimeout(ctx, l.callTimeout)
	defer cancel()
	if _, err := l.cli.ConfigCreate(ctx, spec); err != nil {
		return time.Time{}, fmt.Errorf("create lease config %s: %w", l.name, err)
	}
	return expires, nil
}

// update writes labels into cfg's spec if cfg's version is still the
// config's. The rest of the spec goes back as read: Swarm refuses any
// change but to the labels. A stale version is refused with "update out
// of sequence", an HTTP 500 on engine 20.10, not a conflict.
func (l *Lease) update(ctx context.Context, cfg swarm.Config, labels map[string]string) error {
	spec := cfg.Spec
	spec.Labels = labels
	ctx, cancel := context.WithTimeout(ctx, l.callTimeout)
	defer cancel()
	if err := l.cli.ConfigUpdate(ctx, cfg.ID, cfg.Version, spec); err != nil {
		return fmt.Errorf("update labels of lease config %s (version %d): %w", l.name, cfg.Version.Index, err)
	}
	return nil
}

// inspect reads the lease config; a missing one is errdefs.IsNotFound.
func (l *Lease) inspect(ctx context.Context) (swarm.Config, error) {
	ctx, cancel := context.WithTimeout(ctx, l.callTimeout)
	defer cancel()
	cfg, _, err := l.cli.ConfigInspectWithRaw(ctx, l.name)
	if err != nil {
		return swarm.Config{}, fmt.Errorf("inspect lease config %s: %w", l.name, err)
	}
	return cfg, nil
}

// SelfService finds the Swarm service and task this process runs as, by
// inspecting its own container: in a Swarm task the hostname is the
// container ID's first 12 characters (unless the service sets hostname:),
// and Swarm labels the container with its service and task IDs. The task
// ID is the holder id for Lease: unique, and new for a restarted replica.
func (s *SwarmSource) SelfService(ctx context.Context) (serviceID, taskID string, err error) {
	host, err := os.Hostname()
	if err != nil {
		return "", "", fmt.Errorf("find own container: hostname: %w", err)
	}
	return selfService(ctx, s.cli, host, s.callTimeout)
}

func selfService(ctx context.Context, cli *client.Client, host string, timeout time.Duration) (serviceID, taskID string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := cli.ContainerInspect(ctx, host)
	if err != nil {
		return "", "", fmt.Errorf("find own container by hostname %q (a Swarm task's hostname is its container ID; "+
			"do not set hostname: on the berth service): %w", host, err)
	}
	serviceID, taskID = c.Config.Labels[swarmServiceIDLabel], c.Config.Labels[swarmTaskLabel]
	if serviceID == "" || taskID == "" {
		return "", "", fmt.Errorf("container %s (hostname %q) is not a Swarm task: labels %s and %s are missing",
			shortID(c.ID), host, swarmServiceIDLabel, swarmTaskLabel)
	}
	return serviceID, taskID, nil
}
