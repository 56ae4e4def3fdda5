// Package controller owns label parsing, the projection of Docker containers
// into plain structs, the desired-state computation, and the watch → pace →
// reconcile loop that writes nginx files, validates them with nginx -t in the
// nginx container and signals a reload.
//
// Only the docker*.go files talk to Docker (docker.go to one engine, the
// docker_swarm*.go files to a Swarm manager's). The loop is the single
// writer of berth's nginx files; on a Swarm the agents are, each on its
// node, and the loop hands them the files through a Fleet. It must not touch any file in the conf dir that is not
// berth's (see nginxconf.Owned), and it never exits the process.
package controller

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/nginxconf"
)

// Options are the controller settings (see DESIGN.md).
type Options struct {
	ConfDir   string // berth-*.conf go here; the nginx container sees it at conf.d
	Webroot   string // ACME webroot path, same in nginx
	NginxName string // nginx container name or ID; "" finds it by label proxy.nginx=true
	Listen    [2]string
	// Resync is the period of the full pass that catches missed events.
	Resync time.Duration
	// Certs, when set, is the certificate manager (nil: no certificates).
	Certs Certificates
	// TrustedProxies are the CIDRs whose forwarded client address nginx
	// honours (BERTH_TRUSTED_PROXIES).
	TrustedProxies []string
	// Defaults are the settings that give unset labels their values.
	Defaults Defaults
	// NginxProxyEnv reads nginx-proxy / acme-companion variables
	// (BERTH_NGINX_PROXY_ENV=on).
	NginxProxyEnv bool
	// RoutesFile is a YAML file of routes to backends that are not
	// containers (BERTH_ROUTES_FILE); "" for none.
	RoutesFile string
	// Observer, when set, is told what every pass saw (see observe.go).
	Observer Observer
	// Fleet, when set, replaces the local nginx: a Swarm manager's passes
	// go to the agents beside every node's nginx (BERTH_SWARM=on).
	Fleet Fleet
}

// Fleet is the nginx of every Swarm node as the manager's loop sees it.
// Each node validates and reloads its own nginx (its agent runs the
// Applier), so the loop neither execs nor signals: it hands the files over
// and learns whether every node took them.
type Fleet interface {
	// Nginx returns what stands for every node's nginx in Desired (its
	// networks decide reach) and the nginx -V output features follow.
	Nginx(ctx context.Context) (Container, string, error)
	// Apply makes every node serve files, with the certificate files they
	// name. It is level-triggered: each call brings every agent that has
	// not taken these bytes (a new node, a restarted agent) up to date, so
	// the loop calls it on passes without a change too. An error means
	// some agent did not take them; the loop retries with backoff.
	Apply(ctx context.Context, files nginxconf.Files, log *logrus.Entry) error
}

// CertFiles are the files of one stored certificate version as nginx reads
// them, and the serial of its leaf: what berth expects nginx to serve.
type CertFiles struct {
	Chain, Key, Serial string
}

// CertRequest is one certificate a route wants and how to order it.
type CertRequest struct {
	Names     []string
	Challenge string // ChallengeHTTP01 or ChallengeDNS01
	Profile   string // ACME profile; "" is the manager's default
}

// Certificates is what the loop needs of the certificate manager. The
// manager says what changed through Changed; the loop tells it what is
// wanted and which files the config on disk refers to. None of these block.
type Certificates interface {
	// Certs returns, per host, the certificate to serve. A renewal gives a
	// new path, so the config bytes change and nginx reloads.
	Certs() map[string]CertFiles
	// Want says which certificates are wanted and how to order them, and
	// which hosts have a site at all.
	Want(reqs []CertRequest, served []string)
	// InUse lists every certificate file berth's nginx files on disk refer
	// to, so versions still referenced are never removed.
	InUse(files []string)
	// Changed receives when Certs may return something new.
	Changed() <-chan struct{}
}

// DefaultResync is short because a pass with no change costs one list call
// and no write: cheap insurance against a lost event.
const DefaultResync = 30 * time.Second

// Controller runs the reconcile loop. Everything but pokes is owned by the
// loop goroutine (Run); nginx's addresses, read by the certificate
// manager's self-check, are guarded inside Nginx.
type Controller struct {
	engine Engine
	opts   Options
	log    *logrus.Entry
	nginx  *Nginx
	pacer  reloadPacer
	pass   int

	notBefore  time.Time       // paced: no pass before this
	deferUntil time.Time       // an idle removal waits until this (idleRemoval)
	failures   int             // consecutive failed passes, for backoff
	reported   map[string]bool // problems already logged, to log each once per change
	pokes      chan string

	applier     *Applier          // the conf dir's one writer, and nginx's validator and signaller
	verify      map[string]string // host → serial nginx must serve after the last reload
	verifyFails int
	verifyAfter time.Time       // no check before this: the reload must be complete
	resolved    map[string]bool // "host path" → nginx resolves it by name, as last applied (leavesResolve)
	inUse       []string        // certificate files last reported to Certs.InUse
	fileRoutes  []FileRoute     // the routes file's last good entries
	seen        passView        // what the running pass saw, for Options.Observer
	// pushed is, with a Fleet, the last file set handed to it: the
	// manager has no conf dir of its own to diff against.
	pushed nginxconf.Files
}

// New returns a controller. The logger should carry no per-pass fields.
// nginx is shared with the certificate manager's self-check.
func New(engine Engine, nginx *Nginx, opts Options, log *logrus.Entry) *Controller {
	if opts.Resync <= 0 {
		opts.Resync = DefaultResync
	}
	c := &Controller{engine: engine, nginx: nginx, opts: opts, log: log, reported: map[string]bool{},
		applier: NewApplier(opts.ConfDir, engine), pokes: make(chan string, 1), verify: map[string]string{}}
	if opts.Fleet != nil {
		c.applier.unconfirmed = false // no local nginx: each agent keeps its own marker
	}
	return c
}

// Run watches Docker and reconciles until ctx ends. It returns nil on
// cancellation: berth's files stay in place, so nginx keeps serving.
func (c *Controller) Run(ctx context.Context) error {
	if removed, err := nginxconf.RemoveLeftovers(c.opts.ConfDir, time.Now()); err == nil {
		for _, name := range removed {
			c.log.WithField("file", name).Info("removed a temporary file left by an interrupted write")
		}
	}
	pokes := c.pokes
	go c.watch(ctx, pokes)
	var certsChanged <-chan struct{}
	if c.opts.Certs != nil {
		certsChanged = c.opts.Certs.Changed()
	}
	var routesFile <-chan RoutesFileContent
	if c.opts.RoutesFile != "" {
		routesFile = WatchRoutesFile(ctx, c.opts.RoutesFile, routesFilePoll)
		// The first pass waits for the file's first read, so a restart
		// never drops the file's routes for a moment.
		select {
		case content, ok := <-routesFile:
			if ok {
				c.routesFileUpdate(content, c.log)
			}
		case <-ctx.Done():
			return nil
		}
	}
	timer := time.NewTimer(0) // first pass at once
	defer timer.Stop()
	resync := time.NewTicker(c.opts.Resync)
	defer resync.Stop()
	next := time.Now()
	schedule := func(at time.Time) {
		if at.Before(c.notBefore) {
			at = c.notBefore
		}
		if !next.IsZero() && !at.Before(next) {
			return // an earlier pass is already due and will see this change
		}
		next = at
		timer.Reset(time.Until(at))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case why := <-pokes:
			c.log.WithField("event", why).Debug("docker event")
			schedule(time.Now().Add(coalesceDelay))
		case <-certsChanged:
			c.log.Debug("certificates changed")
			schedule(time.Now())
		case content, ok := <-routesFile:
			if !ok {
				routesFile = nil
				continue
			}
			c.routesFileUpdate(content, c.log)
			schedule(time.Now())
		case <-resync.C:
			schedule(time.Now())
		case <-timer.C:
			next = time.Time{}
			if again := c.reconcile(ctx, time.Now()); again > 0 {
				schedule(time.Now().Add(again))
			}
		}
	}
}

// poke delivers an event without blocking: one pending poke is enough,
// since every pass reads the whole world.
func poke(pokes chan<- string, why string) {
	select {
	case pokes <- why:
	default:
	}
}

// watch subscribes to Docker events and pokes the loop; when the stream
// breaks it backs off, resubscribes and pokes for a resync.
func (c *Controller) watch(ctx context.Context, pokes chan<- string) {
	for attempt := 0; ; attempt++ {
		msgs, errs := c.engine.Events(ctx)
		c.observeStream(true, attempt > 0)
		if attempt > 0 {
			poke(pokes, "resubscribed")
		}
		err := c.drain(ctx, msgs, errs, pokes, &attempt)
		if ctx.Err() != nil {
			return
		}
		c.observeStream(false, false)
		wait := backoff(attempt + 1)
		c.log.WithError(err).WithField("retry_in", wait).Warn("docker event stream broken; resubscribing")
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// drain forwards events until the stream fails. A received event proves the
// stream healthy, so it resets the backoff.
func (c *Controller) drain(ctx context.Context, msgs <-chan string, errs <-chan error, pokes chan<- string, attempt *int) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case m := <-msgs:
			*attempt = 0
			c.observeEvent()
			poke(pokes, m)
		}
	}
}
