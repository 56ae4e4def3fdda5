package controller

// The leader lease of berth in Swarm mode: two (or more) replicas of the
// berth service run on managers, and exactly one of them may act at a time
// (decide the config, order certificates). The lease is kept in the Swarm
// itself, as two labels of the berth service's own spec, and taken and
// renewed by compare-and-swap: ServiceUpdate carries the spec version that
// ServiceInspect returned, and Swarm refuses it ("update out of sequence")
// if anyone changed the service in between. Only Spec.Labels change, never
// the TaskTemplate, so a renewal restarts no task.
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
	"github.com/sirupsen/logrus"
)

// The service labels that hold the lease. A held lease has both; a
// released one has only the expiry (the release time) and no holder; a
// service that never had a lease, or whose labels a `docker stack deploy`
// has just rewritten from the stack file, has neither.
const (
	LeaseHolderLabel  = "berth.leader"
	LeaseExpiresLabel = "berth.lease-expires"
)

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

// Lease is one replica's claim on the leadership of a Swarm service. Make
// it with SwarmSource.Lease; the holder id must be unique per process
// (SelfService's task ID is).
type Lease struct {
	cli             *client.Client
	service, holder string
	ttl, grace      time.Duration
	callTimeout     time.Duration
}

// Lease returns the lease on service (a name or ID) for holder. A ttl of
// 0 means DefaultLeaseTTL.
func (s *SwarmSource) Lease(service, holder string, ttl time.Duration) *Lease {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	return &Lease{cli: s.cli, service: service, holder: holder, ttl: ttl, grace: leaseSkewGrace, callTimeout: s.callTimeout}
}

// leaseView is what a service's labels say about its lease.
type leaseView struct {
	// Present: a lease label is there (the lease is held or was
	// released). Absent: no lease was ever taken, or a stack deploy has
	// just rewritten the labels from the stack file while a holder may
	// still be acting.
	Present bool
	Holder  string    // "" when released
	Expires time.Time // zero when unreadable: treated as expired
}

// leaseFromLabels reads the lease labels.
func leaseFromLabels(labels map[string]string) leaseView {
	raw, ok := labels[LeaseExpiresLabel]
	v := leaseView{Present: ok || labels[LeaseHolderLabel] != "", Holder: labels[LeaseHolderLabel]}
	if t, err := time.Parse(time.RFC3339Nano, raw); err == nil {
		v.Expires = t
	}
	return v
}

// leaseDecide says whether holder may write its claim at now, and if not,
// when to look again. It may when the lease is its own, released, or
// expired for longer than grace (the expiry is the other holder's clock).
// Labels that are missing altogether may be a stack deploy's rewrite under
// a live holder, who writes them back at its next renewal: a candidate
// waits a whole TTL plus grace from when it first saw them missing
// (absentSince), which on a fresh deployment delays the first leader by
// that much once.
func leaseDecide(v leaseView, holder string, now, absentSince time.Time, ttl, grace time.Duration) (take bool, retryAt time.Time) {
	switch {
	case !v.Present:
		retryAt = absentSince.Add(ttl + grace)
	case v.Holder == holder || v.Holder == "":
		return true, now
	default:
		retryAt = v.Expires.Add(grace)
	}
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
// expired, or already its own) or ctx ends. It then renews in the
// background every TTL/3 and returns term, which is cancelled when the
// holder must stop acting: a renewal could not confirm the lease before
// its expiry minus TTL/3, another holder has it, or ctx ended. release
// stops renewing and clears the holder (by CAS, only if it is still this
// one), so that a standby takes over at once; call it on shutdown, and
// after term ends before campaigning again. It may be called more than
// once, and works after ctx has ended.
func (l *Lease) Campaign(ctx context.Context, log *logrus.Entry) (term context.Context, release func(), err error) {
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	log = log.WithField("holder", l.holder)
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
// lease would expire, every TTL/3 at most, and at once on any update of the
// service (a release is one), so a released lease is taken in about the
// time of one call.
func (l *Lease) acquire(ctx context.Context, log *logrus.Entry) (time.Time, error) {
	watching, stop := context.WithCancel(ctx)
	defer stop() // a holder needs no more pokes
	updates := l.watch(watching)
	var absentSince time.Time
	for {
		wait := l.renewEvery()
		svc, err := l.inspect(ctx)
		if err != nil {
			log.WithError(err).Warn("lease: cannot read the service")
		} else {
			now := time.Now()
			v := leaseFromLabels(svc.Spec.Labels)
			if !v.Present {
				if absentSince.IsZero() {
					absentSince = now
				}
			} else {
				absentSince = time.Time{}
			}
			take, at := leaseDecide(v, l.holder, now, absentSince, l.ttl, l.grace)
			if take {
				expires, err := l.write(ctx, svc, now)
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

// watch pokes on every update of the service, while ctx lasts. If the
// subscription fails it goes quiet, and acquire's timer still looks.
func (l *Lease) watch(ctx context.Context) <-chan struct{} {
	f := filters.NewArgs(filters.Arg("type", string(events.ServiceEventType)), filters.Arg("service", l.service))
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
// for); labels a stack deploy removed are written back, since this holder
// still holds the lease it last confirmed and candidates wait a whole TTL
// after seeing none.
func (l *Lease) renew(ctx context.Context, deadline time.Time) (expires time.Time, lost string, err error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	svc, err := l.inspect(ctx)
	if err != nil {
		return time.Time{}, "", err
	}
	v := leaseFromLabels(svc.Spec.Labels)
	if v.Present && v.Holder != l.holder {
		return time.Time{}, cmp.Or(v.Holder, "(released)"), nil
	}
	expires, err = l.write(ctx, svc, time.Now())
	return expires, "", err
}

// clear removes this holder from the labels, leaving the release time as
// the expiry so candidates see a released lease, not a missing one. A
// lease that is no longer this holder's is left alone.
func (l *Lease) clear(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.callTimeout)
	defer cancel()
	for range 3 { // a concurrent update of the service costs one retry
		svc, err := l.inspect(ctx)
		if err != nil {
			return err
		}
		if leaseFromLabels(svc.Spec.Labels).Holder != l.holder {
			return nil
		}
		labels := maps.Clone(svc.Spec.Labels)
		delete(labels, LeaseHolderLabel)
		labels[LeaseExpiresLabel] = time.Now().UTC().Format(time.RFC3339Nano)
		if err = l.update(ctx, svc, labels); err == nil {
			return nil
		}
	}
	return fmt.Errorf("release lease on service %s: concurrent updates", l.service)
}

// write claims the lease for holder until now + TTL by CAS on svc's version.
func (l *Lease) write(ctx context.Context, svc swarm.Service, now time.Time) (time.Time, error) {
	expires := now.Add(l.ttl)
	labels := maps.Clone(svc.Spec.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LeaseHolderLabel] = l.holder
	labels[LeaseExpiresLabel] = expires.UTC().Format(time.RFC3339Nano)
	return expires, l.update(ctx, svc, labels)
}

// update writes labels into svc's spec, and nothing else, if svc's version
// is still the service's. The TaskTemplate goes back unchanged, so Swarm
// restarts no task.
func (l *Lease) update(ctx context.Context, svc swarm.Service, labels map[string]string) error {
	spec := svc.Spec
	spec.Labels = labels
	ctx, cancel := context.WithTimeout(ctx, l.callTimeout)
	defer cancel()
	if _, err := l.cli.ServiceUpdate(ctx, svc.ID, svc.Version, spec, swarm.ServiceUpdateOptions{}); err != nil {
		return fmt.Errorf("update labels of service %s (version %d): %w", l.service, svc.Version.Index, err)
	}
	return nil
}

func (l *Lease) inspect(ctx context.Context) (swarm.Service, error) {
	ctx, cancel := context.WithTimeout(ctx, l.callTimeout)
	defer cancel()
	svc, _, err := l.cli.ServiceInspectWithRaw(ctx, l.service, swarm.ServiceInspectOptions{})
	if err != nil {
		return swarm.Service{}, fmt.Errorf("inspect service %s: %w", l.service, err)
	}
	return svc, nil
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
