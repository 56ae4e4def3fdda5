package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/acme"
	"github.com/berthproxy/berth/agent"
	"github.com/berthproxy/berth/controller"
	"github.com/berthproxy/berth/status"
)

// The Swarm manager's berth (BERTH_SWARM=on). It decides and orders; the
// agent beside each node's nginx applies. Of the berth replicas on the
// managers, the one holding the lease acts, for one term: it restores the
// certificates and account from the Swarm store, runs the usual loop with
// Swarm services as the source and the agents as the nginx, orders through
// every node's webroot, and mirrors what it stores back into Swarm. When
// the lease is lost the term ends and everything it started stops, so two
// replicas never order or push at once.

// leaseHolder is the leader lease (controller.Lease).
type leaseHolder interface {
	Campaign(ctx context.Context, log *logrus.Entry) (term context.Context, release func(), err error)
}

// clusterStore keeps the certificate and state dirs in Swarm
// (controller.ClusterStore).
type clusterStore interface {
	Restore(ctx context.Context) (int, error)
	Sync(ctx context.Context) error
}

// storeSyncPeriod catches what changes in the state dir without a
// certificate change (name backoff, last-use times).
const storeSyncPeriod = time.Minute

// swarmEngine is the Swarm source as the loop's Engine. The loop never
// execs or signals with a Fleet (each agent runs nginx -t and the reload
// on its own node), so those fail loudly if anything tries.
type swarmEngine struct{ *controller.SwarmSource }

var errNoExecInSwarm = errors.New("the Swarm manager runs nothing in nginx containers: the agents do")

func (swarmEngine) Exec(context.Context, string, []string) (int, string, error) {
	return 0, "", errNoExecInSwarm
}
func (swarmEngine) Signal(context.Context, string, string) error { return errNoExecInSwarm }

// serveSwarm runs the manager's berth until SIGTERM or SIGINT.
func serveSwarm(s settings, log *logrus.Entry) int {
	for _, d := range []string{s.ConfDir, filepath.Join(s.Webroot, ".well-known", "acme-challenge"), s.CertsDir, s.StateDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			log.WithError(err).Error("cannot start")
			return 1
		}
	}
	secret, err := agent.ReadSecret(s.AgentSecretFile)
	if err != nil {
		log.WithError(err).Error("cannot start")
		return 1
	}
	src, err := controller.NewSwarmSource()
	if err != nil {
		log.WithError(err).Error("cannot start")
		return 1
	}
	defer src.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	lease, store, err := swarmLeaseAndStore(ctx, s, src, log)
	if err != nil {
		log.WithError(err).Error("cannot start")
		return 1
	}
	log.WithFields(logrus.Fields{"version": version, "acme_ca": s.ACMECA}).Info("berth starting in Swarm mode")
	s.warnAtStart(log)
	certs := &termCerts{}
	board := status.NewBoard(version, certSource(certs, s.certsEnabled()))
	if err := serveStatus(ctx, s, board, log); err != nil {
		log.WithError(err).Error("cannot start")
		return 1
	}
	for ctx.Err() == nil {
		board.Standby(true)
		term, release, err := lease.Campaign(ctx, log)
		if err != nil {
			if ctx.Err() == nil {
				log.WithError(err).Error("cannot campaign for the lease; retrying")
				sleep(ctx, 5*time.Second)
			}
			continue
		}
		log.Info("leading: this berth decides and orders")
		board.Standby(false)
		err = runTerm(term, s, secret, src, store, certs, board, log)
		release()
		if err != nil {
			log.WithError(err).Error("term ended")
			sleep(ctx, 5*time.Second)
		} else if ctx.Err() == nil {
			log.Warn("lease lost: another berth leads now; standing by")
		}
	}
	log.Info("berth stopped; every node keeps its nginx config")
	return 0
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// runTerm does the leader's work until term ends. The certificates are
// restored from the Swarm store before the certificate manager reads its
// dirs, so a new leader serves, and renews, what its predecessor ordered.
func runTerm(term context.Context, s settings, secret []byte, src *controller.SwarmSource, store clusterStore,
	certs *termCerts, board *status.Board, log *logrus.Entry) error {
	if store != nil {
		n, err := store.Restore(term)
		if err != nil {
			return fmt.Errorf("restore certificates from the Swarm store: %w", err)
		}
		log.WithField("files", n).Info("certificates and account restored from the Swarm store")
	}
	fleet := agent.NewFleet(src, agent.FleetOptions{Secret: secret, Port: s.AgentPort, CertsDir: s.CertsDir, NginxName: s.NginxContainer})
	opts := s.controllerOptions()
	opts.Fleet = fleet
	opts.Observer = board
	var mgr *acme.Manager
	if s.certsEnabled() {
		// No self-check: the challenge path is on every node, and the
		// agents confirm each token was written.
		var err error
		if mgr, err = newManager(s, log, nil, fleet); err != nil {
			return err
		}
		certs.set(mgr)
		defer certs.set(nil)
		var c controller.Certificates = certificates{mgr, !s.acmeEnabled()}
		if store != nil {
			c = mirror(term, c, store, log)
		}
		opts.Certs = c
	}
	ctl := controller.New(swarmEngine{src}, nil, opts, log)
	var wg sync.WaitGroup
	if mgr != nil {
		wg.Go(func() { mgr.Run(term) })
	}
	err := ctl.Run(term)
	wg.Wait()
	// No last Sync: the store refuses writes once the term has ended,
	// since another berth may lead by now. Every certificate change was
	// synced before the loop heard of it (mirror).
	return err
}

// mirrored passes the certificate manager through, saving the certificate
// and state dirs to the Swarm store before the loop hears of a change: a
// certificate is in the cluster before any node serves it, so the loss of
// this node never costs a new order.
type mirrored struct {
	controller.Certificates
	changed chan struct{}
}

func mirror(ctx context.Context, c controller.Certificates, store clusterStore, log *logrus.Entry) mirrored {
	m := mirrored{Certificates: c, changed: make(chan struct{}, 1)}
	go func() {
		tick := time.NewTicker(storeSyncPeriod)
		defer tick.Stop()
		for {
			notify := false
			select {
			case <-ctx.Done():
				return
			case <-c.Changed():
				notify = true
			case <-tick.C:
			}
			if err := store.Sync(ctx); err != nil && ctx.Err() == nil {
				log.WithError(err).Error("could not save the certificates to the Swarm store; retrying")
			}
			if notify {
				select {
				case m.changed <- struct{}{}:
				default:
				}
			}
		}
	}()
	return m
}

func (m mirrored) Changed() <-chan struct{} { return m.changed }

// termCerts is the certificate status of the current term's manager, for
// the status page and `berth certs`; empty while standing by.
type termCerts struct {
	mu sync.Mutex
	m  *acme.Manager
}

func (t *termCerts) set(m *acme.Manager) {
	t.mu.Lock()
	t.m = m
	t.mu.Unlock()
}

func (t *termCerts) CertStatus(now time.Time) status.CertPart {
	t.mu.Lock()
	m := t.m
	t.mu.Unlock()
	if m == nil {
		return status.CertPart{}
	}
	return m.CertStatus(now)
}

// swarmLeaseAndStore builds the lease, kept in the Swarm config berth-lease
// (created by the first replica that campaigns; one berth stack per Swarm,
// as with swarmStoreNamespace) with this replica's task ID as the holder
// (found from its own container, so the stack needs no setting), and the
// Swarm store of certificates sealed under BERTH_SWARM_STORE_KEY_FILE.
func swarmLeaseAndStore(ctx context.Context, s settings, src *controller.SwarmSource, log *logrus.Entry) (leaseHolder, clusterStore, error) {
	service, task, err := src.SelfService(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("BERTH_SWARM=on runs as a Swarm service (docker stack deploy): %w", err)
	}
	key, err := os.ReadFile(s.SwarmStoreKeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read the store key (BERTH_SWARM_STORE_KEY_FILE; create it with `openssl rand -hex 32 | docker secret create berth-store-key -`): %w", err)
	}
	key = bytes.TrimRight(key, "\r\n")
	if len(bytes.TrimSpace(key)) == 0 {
		return nil, nil, fmt.Errorf("the store key %s is empty", s.SwarmStoreKeyFile)
	}
	const leaseName = "berth-lease"
	log.WithFields(logrus.Fields{"service": service, "task": task, "lease": leaseName}).Info("campaigning for the lease")
	store := src.ClusterStore(swarmStoreNamespace, key, map[string]string{"certs": s.CertsDir, "state": s.StateDir})
	store.Log = log.WithField("component", "store")
	return src.Lease(leaseName, task, 0), store, nil
}

// swarmStoreNamespace prefixes the configs of the certificate store. One
// berth stack per Swarm: a second would need its own namespace.
const swarmStoreNamespace = "berth"
