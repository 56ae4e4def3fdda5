package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/nginxconf"
)

// applyTimeout bounds write → nginx -t → reload (and a search for the file
// nginx rejects, a few more nginx -t runs). It is detached from the shutdown
// context so SIGTERM never leaves written-but-unvalidated files.
const applyTimeout = 30 * time.Second

// errNginxMissing means no running nginx container was found: berth writes
// nothing until one is back, so the files on disk stay the validated ones.
var errNginxMissing = errors.New("nginx container not running")

// errPaced means the change is held by the reload pacer until c.notBefore.
var errPaced = errors.New("reload paced")

// errDeferred means an idle removal waits until c.deferUntil (idleRemoval).
// It is a kind of pacing, but holds back no other change: the next event's
// pass runs as usual and takes the removal with it.
var errDeferred = fmt.Errorf("%w: idle removal deferred", errPaced)

// Timings of one pass, logged so latency can be broken down.
type Timings struct {
	List, Render, Write, Validate, Signal time.Duration
}

// reconcile runs one pass and returns when the next must run (0: on the
// next event or resync).
func (c *Controller) reconcile(ctx context.Context, now time.Time) time.Duration {
	c.pass++
	log := c.log.WithField("pass", c.pass)
	err := c.runPass(ctx, now, log)
	c.publish(now, err)
	switch {
	case err == nil:
		c.failures = 0
		if len(c.verify) > 0 {
			return verifyDelay
		}
		return 0
	case errors.Is(err, errDeferred):
		return time.Until(c.deferUntil)
	case errors.Is(err, errPaced):
		return time.Until(c.notBefore)
	case errors.Is(err, errServed):
		return backoff(c.verifyFails) // checkServed logged it
	case ctx.Err() != nil:
		return 0
	case errors.Is(err, errNginxMissing):
		return 0 // the nginx start event brings us back
	}
	c.failures++
	wait := backoff(c.failures)
	log.WithError(err).WithField("retry_in", wait).Error("pass failed")
	return wait
}

// runPass lists, renders, and applies what changed.
func (c *Controller) runPass(ctx context.Context, now time.Time, log *logrus.Entry) error {
	var t Timings
	start := time.Now()
	cs, err := c.engine.List(ctx)
	if err != nil {
		return err // never render from a partial view: sites would go missing
	}
	t.List = time.Since(start)
	c.seen.listed, c.seen.cs = true, cs
	nginx, build, err := c.findNginx(ctx, cs, log)
	if err != nil {
		return err
	}
	c.seen.nginx, c.seen.build = nginx, build
	start = time.Now()
	certs := c.certs()
	in, fileProblems := c.inputs(ctx, nginx, build, certs)
	cfg, wants, problems := Desired(cs, in)
	problems = append(problems, fileProblems...)
	c.tellWanted(cfg, wants)
	desired, errs := nginxconf.Render(cfg)
	c.report(problems, errs, log)
	if _, ok := desired[nginxconf.DefaultFile]; !ok {
		return fmt.Errorf("render: %v", errors.Join(errs...))
	}
	current, err := c.current()
	if err != nil {
		return err
	}
	desired = withoutQuarantined(desired, current, c.applier.quarantine)
	plan := nginxconf.Diff(current, desired)
	t.Render = time.Since(start)
	c.seen.cfg, c.seen.wants, c.seen.problems, c.seen.plan = cfg, wants, problems, plan
	if idleRemoval(plan, current) && !c.applier.unconfirmed {
		if c.deferUntil.IsZero() {
			c.deferUntil = now.Add(idleRemovalDelay)
		}
		if now.Before(c.deferUntil) {
			log.WithFields(logrus.Fields{"removed": plan.Remove, "retry_in": c.deferUntil.Sub(now)}).Debug("removal of idle sites waits for the next change")
			return errDeferred
		}
	}
	c.deferUntil = time.Time{}
	if plan.Empty() && !c.applier.unconfirmed {
		c.pacer.Cancel()
		c.resolved = resolvedLocations(cfg)
		c.tellInUse(current)
		log.WithField("list_ms", ms(t.List)).Debug("no change")
		if c.opts.Fleet != nil {
			return c.opts.Fleet.Apply(ctx, current, log) // agents that lag behind catch up
		}
		return c.checkServed(ctx, now, log)
	}
	resolved := resolvedLocations(cfg)
	if wait := c.pacer.Wait(now); wait > 0 && !plan.Empty() && !leavesResolve(c.resolved, resolved) {
		c.notBefore = now.Add(wait)
		log.WithField("retry_in", wait).Debug("change waits for reload pacing")
		return errPaced
	}
	if c.opts.Fleet != nil {
		return c.push(ctx, now, desired, resolved, plan, t, log)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), applyTimeout)
	defer cancel()
	err = c.applier.apply(actx, nginx, current, desired, plan, &t, log)
	c.seen.applied = true
	if after, rerr := nginxconf.ReadOwned(c.opts.ConfDir); rerr == nil {
		c.tellInUse(after) // whatever happened, the files on disk are what counts
	}
	if err != nil {
		return err
	}
	c.resolved = resolved
	c.expectServed(cfg, certs, current, now)
	c.pacer.Record(now)
	log.WithFields(logrus.Fields{
		"written": plan.Write, "removed": plan.Remove,
		"list_ms": ms(t.List), "render_ms": ms(t.Render), "write_ms": ms(t.Write),
		"validate_ms": ms(t.Validate), "signal_ms": ms(t.Signal),
	}).Info("nginx reloaded")
	return nil
}

// findNginx returns the nginx the pass renders for: the local container,
// or with a Fleet the nginx service that stands for every node's.
func (c *Controller) findNginx(ctx context.Context, cs []Container, log *logrus.Entry) (Container, string, error) {
	if c.opts.Fleet != nil {
		return c.opts.Fleet.Nginx(ctx)
	}
	c.nginx.Forget(cs)
	return c.nginx.Find(ctx, cs, log)
}

// current returns the files nginx runs: those in the conf dir, or with a
// Fleet those last handed to it.
func (c *Controller) current() (nginxconf.Files, error) {
	if c.opts.Fleet != nil {
		return maps.Clone(c.pushed), nil
	}
	return nginxconf.ReadOwned(c.opts.ConfDir)
}

// push hands a changed file set to the Fleet. What was handed over counts
// as current even when some agent failed to take it: the Fleet knows which
// agents lag and the next pass (after backoff) brings them up to date.
// Serving is checked by each node, which validates what it runs; the
// manager has no nginx of its own to check on the wire.
func (c *Controller) push(ctx context.Context, now time.Time, desired nginxconf.Files, resolved map[string]bool, plan nginxconf.Plan, t Timings, log *logrus.Entry) error {
	start := time.Now()
	err := c.opts.Fleet.Apply(ctx, desired, log)
	c.seen.applied = true
	c.pushed = desired
	c.tellInUse(desired)
	if err != nil {
		return err
	}
	c.resolved = resolved
	c.pacer.Record(now)
	log.WithFields(logrus.Fields{
		"written": plan.Write, "removed": plan.Remove,
		"list_ms": ms(t.List), "render_ms": ms(t.Render), "push_ms": ms(time.Since(start)),
	}).Info("pushed to every node")
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// certs asks the certificate manager for the certificates to serve.
func (c *Controller) certs() map[string]CertFiles {
	if c.opts.Certs == nil {
		return nil
	}
	return c.opts.Certs.Certs()
}

// inputs gathers what Desired needs beyond the containers; "berth render"
// uses the same function, so it shows what the daemon writes.
func (c *Controller) inputs(ctx context.Context, nginx Container, build string, certs map[string]CertFiles) (Inputs, []Problem) {
	in := Inputs{Nginx: nginx, Webroot: c.opts.Webroot, Listen: c.opts.Listen, HTTP2: HTTP2Mode(build), Resolver: ResolverFor(build),
		TrustedProxies: c.opts.TrustedProxies, Defaults: c.opts.Defaults, NginxProxyEnv: c.opts.NginxProxyEnv}
	var problems []Problem
	in.FileRoutes, problems = resolveFileRoutes(ctx, c.fileRoutes)
	if len(certs) > 0 {
		in.Certs = make(map[string]nginxconf.TLS, len(certs))
		for h, f := range certs {
			in.Certs[h] = nginxconf.TLS{CertFile: f.Chain, KeyFile: f.Key}
		}
	}
	return in, problems
}

// tellWanted tells the certificate manager which host lists want a
// certificate and which hosts have a site.
func (c *Controller) tellWanted(cfg nginxconf.Config, wants []Want) {
	if c.opts.Certs == nil {
		return
	}
	served := make([]string, len(cfg.Sites))
	for i, s := range cfg.Sites {
		served[i] = s.Host
	}
	c.opts.Certs.Want(certRequests(wants), served)
}

// tellInUse reports the certificate files the config on disk refers to,
// when that set changes.
func (c *Controller) tellInUse(files nginxconf.Files) {
	if c.opts.Certs == nil {
		return
	}
	paths := referencedCertFiles(files)
	if c.inUse != nil && slices.Equal(paths, c.inUse) {
		return
	}
	c.inUse = paths
	c.opts.Certs.InUse(paths)
}

// certDirective finds the certificate files a rendered file refers to.
var certDirective = regexp.MustCompile(`(?m)^\s*ssl_certificate(?:_key)?\s+(\S+);`)

// ReferencedCertFiles lists, sorted and unique, every certificate and key
// path files refer to: what a Swarm manager sends with them. Pure.
func ReferencedCertFiles(files nginxconf.Files) []string { return referencedCertFiles(files) }

// referencedCertFiles lists, sorted and unique, every certificate and key
// path in files. Never nil, so "nothing" is reported once too. Pure.
func referencedCertFiles(files nginxconf.Files) []string {
	paths := []string{}
	for _, data := range files {
		for _, m := range certDirective.FindAllSubmatch(data, -1) {
			paths = append(paths, string(m[1]))
		}
	}
	slices.Sort(paths)
	return slices.Compact(paths)
}

// report logs each problem when it first appears, not on every pass.
func (c *Controller) report(problems []Problem, errs []error, log *logrus.Entry) {
	seen := map[string]bool{}
	for _, p := range problems {
		key := p.String()
		seen[key] = true
		if c.reported[key] {
			continue
		}
		e := log.WithFields(logrus.Fields{"container": p.Container, "label": p.Label, "value": p.Value})
		if p.Warning {
			e.Warn(p.Reason)
		} else {
			e.Warn("container skipped: " + p.Reason)
		}
	}
	for _, err := range errs {
		key := err.Error()
		seen[key] = true
		if !c.reported[key] {
			log.WithError(err).Error("site left out of the nginx config")
		}
	}
	c.reported = seen
}

// HTTP2Mode decides from "nginx -V" output how TLS servers enable HTTP/2:
// the "http2 on" directive from 1.25.1, the listen parameter before, and not
// at all without the module. Pure.
func HTTP2Mode(nginxV string) string {
	m := nginxVersion.FindStringSubmatch(nginxV)
	if m == nil || !strings.Contains(nginxV, "--with-http_v2_module") {
		return nginxconf.HTTP2Off
	}
	v := [3]int{}
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	if v[0] > 1 || v[1] > 25 || (v[1] == 25 && v[2] >= 1) {
		return nginxconf.HTTP2Directive
	}
	return nginxconf.HTTP2Listen
}

// certRequests lists the certificates the routes want: one per route, or
// one per name with proxy.cert-per-host=on, each with the route's challenge
// and profile. Pure.
func certRequests(wants []Want) []CertRequest {
	var reqs []CertRequest
	for _, w := range wants {
		if !w.Route.ACME {
			continue
		}
		names := [][]string{w.CertNames()}
		if w.Route.Cert.PerHost {
			names = names[:0]
			for _, n := range w.CertNames() {
				names = append(names, []string{n})
			}
		}
		for _, ns := range names {
			reqs = append(reqs, CertRequest{Names: ns, Challenge: w.Route.Cert.Challenge, Profile: w.Route.Cert.Profile})
		}
	}
	return reqs
}

// Render computes the files berth would write for the current Docker
// state without writing anything (the "berth render" command). It runs the
// daemon's own pipeline, certificates and nginx build included; only the
// quarantine of files nginx rejected, which lives in the daemon's memory,
// is not applied.
func Render(ctx context.Context, engine Engine, nginx *Nginx, opts Options, log *logrus.Entry) (nginxconf.Files, error) {
	c := New(engine, nginx, opts, log)
	cs, err := engine.List(ctx)
	if err != nil {
		return nil, err
	}
	n, build, err := nginx.Find(ctx, cs, log)
	if err != nil {
		return nil, err
	}
	if opts.RoutesFile != "" {
		data, err := os.ReadFile(opts.RoutesFile)
		c.routesFileUpdate(RoutesFileContent{Data: data, Err: err}, log)
	}
	in, fileProblems := c.inputs(ctx, n, build, c.certs())
	cfg, _, problems := Desired(cs, in)
	problems = append(problems, fileProblems...)
	files, errs := nginxconf.Render(cfg)
	c.report(problems, errs, log)
	if _, ok := files[nginxconf.DefaultFile]; !ok {
		return nil, fmt.Errorf("render: %v", errors.Join(errs...))
	}
	return files, nil
}
