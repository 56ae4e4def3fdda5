package controller

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/nginxconf"
)

// applyTimeout bounds write → nginx -t → reload. It is detached from the
// shutdown context so SIGTERM never leaves written-but-unvalidated files.
const applyTimeout = 10 * time.Second

// errNginxMissing means no running nginx container was found: berth writes
// nothing until one is back, so the files on disk stay the validated ones.
var errNginxMissing = errors.New("nginx container not running")

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
	switch {
	case err == nil:
		c.failures = 0
		return 0
	case errors.Is(err, errPaced):
		return time.Until(c.notBefore)
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

var errPaced = errors.New("reload paced")

// runPass lists, renders, and applies what changed; errPaced means the
// change is held by the reload pacer until c.notBefore.
func (c *Controller) runPass(ctx context.Context, now time.Time, log *logrus.Entry) error {
	var t Timings
	start := time.Now()
	cs, err := c.engine.List(ctx)
	if err != nil {
		return err // never render from a partial view: sites would go missing
	}
	t.List = time.Since(start)
	nginx, err := c.findNginx(cs, log)
	if err != nil {
		return err
	}
	c.learnNginx(ctx, nginx, log)
	start = time.Now()
	desired, err := c.render(cs, nginx, log)
	if err != nil {
		return err
	}
	current, err := nginxconf.ReadOwned(c.opts.ConfDir)
	if err != nil {
		return err
	}
	desired = withoutQuarantined(desired, current, c.quarantine)
	plan := nginxconf.Diff(current, desired)
	t.Render = time.Since(start)
	if plan.Empty() {
		c.held = false // a held change that went away does not count as a burst
		log.WithField("list_ms", ms(t.List)).Debug("no change")
		return nil
	}
	if wait := c.pacer.Wait(now); wait > 0 {
		c.notBefore = now.Add(wait)
		c.held = true
		log.WithField("retry_in", wait).Debug("change waits for reload pacing")
		return errPaced
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), applyTimeout)
	defer cancel()
	if err := c.apply(actx, nginx, current, desired, plan, &t, log); err != nil {
		return err
	}
	c.pacer.Record(now, c.held)
	c.held = false
	log.WithFields(logrus.Fields{
		"written": plan.Write, "removed": plan.Remove,
		"list_ms": ms(t.List), "render_ms": ms(t.Render), "write_ms": ms(t.Write),
		"validate_ms": ms(t.Validate), "signal_ms": ms(t.Signal),
	}).Info("nginx reloaded")
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// render computes the desired files and logs problems once per change.
func (c *Controller) render(cs []Container, nginx Container, log *logrus.Entry) (nginxconf.Files, error) {
	in := Inputs{Nginx: nginx, Webroot: c.opts.Webroot, Listen: c.opts.Listen, HTTP2: c.http2}
	if c.opts.Certs != nil {
		in.Certs = c.opts.Certs()
	}
	cfg, wants, problems := Desired(cs, in)
	if c.opts.Want != nil {
		served := make([]string, len(cfg.Sites))
		for i, s := range cfg.Sites {
			served[i] = s.Host
		}
		c.opts.Want(certSets(wants), served)
	}
	files, errs := nginxconf.Render(cfg)
	c.report(problems, errs, log)
	if _, ok := files[nginxconf.DefaultFile]; !ok {
		return nil, fmt.Errorf("render: %v", errors.Join(errs...))
	}
	return files, nil
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

// learnNginx reads "nginx -V" once per nginx container, to know whether
// and how its build enables HTTP/2. Until it is known, TLS servers render
// without HTTP/2, which every nginx accepts.
func (c *Controller) learnNginx(ctx context.Context, nginx Container, log *logrus.Entry) {
	if c.nginxID == nginx.ID {
		return
	}
	code, out, err := c.engine.Exec(ctx, nginx.ID, []string{"nginx", "-V"})
	if err != nil || code != 0 {
		log.WithError(err).WithField("exit", code).Warn("cannot read nginx -V; rendering without HTTP/2")
		return
	}
	c.nginxID, c.http2 = nginx.ID, HTTP2Mode(out)
	log.WithFields(logrus.Fields{"nginx_version": nginxVersion.FindString(out), "http2": c.http2}).Info("nginx build detected")
}

var nginxVersion = regexp.MustCompile(`nginx/(\d+)\.(\d+)\.(\d+)`)

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

// certSets lists the host lists that want a certificate. Pure.
func certSets(wants []Want) [][]string {
	var sets [][]string
	for _, w := range wants {
		if w.Route.ACME {
			sets = append(sets, w.Route.Hosts)
		}
	}
	return sets
}

// findNginx locates the nginx container: by name or ID when configured,
// else by the proxy.nginx=true label.
func (c *Controller) findNginx(cs []Container, log *logrus.Entry) (Container, error) {
	var found []Container
	for _, x := range cs {
		byName := c.opts.NginxName != "" && (x.Name == c.opts.NginxName || strings.HasPrefix(x.ID, c.opts.NginxName))
		byLabel := c.opts.NginxName == "" && x.Labels[LabelNginx] == "true"
		if (byName || byLabel) && x.Running {
			found = append(found, x)
		}
	}
	state := "found"
	var err error
	switch {
	case len(found) == 0:
		state, err = "missing", errNginxMissing
	case len(found) > 1:
		state, err = "ambiguous", fmt.Errorf("%d running containers carry %s=true; set BERTH_NGINX_CONTAINER", len(found), LabelNginx)
	}
	if state != c.nginxState {
		c.nginxState = state
		e := log.WithField("nginx", c.opts.NginxName)
		switch state {
		case "found":
			e.WithField("container", found[0].Name).Info("nginx container found")
		case "missing":
			e.Warn("nginx container not running; berth writes nothing until it is back")
		}
	}
	if err != nil {
		return Container{}, err
	}
	c.setNginxAddr(found[0])
	return found[0], nil
}

// setNginxAddr remembers nginx's addresses, one per network: berth may
// share only some of them.
func (c *Controller) setNginxAddr(nginx Container) {
	var addrs []string
	for _, n := range sortedKeys(nginx.Networks) {
		if ip := nginx.Networks[n]; ip != "" {
			addrs = append(addrs, net.JoinHostPort(ip, "80"))
		}
	}
	c.mu.Lock()
	c.nginxAddrs = addrs
	c.mu.Unlock()
}

// probeClient never follows redirects: the challenge path must be served
// on port 80 itself, ahead of any redirect.
var probeClient = &http.Client{
	Timeout:       3 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// Probe fetches path from nginx with the given Host header: the
// certificate manager's self-check that the challenge path reaches the
// webroot before it spends a CA validation.
func (c *Controller) Probe(ctx context.Context, host, path string) (string, error) {
	c.mu.Lock()
	addrs := c.nginxAddrs
	c.mu.Unlock()
	if c.opts.ProbeAddr != "" {
		addrs = []string{c.opts.ProbeAddr}
	}
	if len(addrs) == 0 {
		return "", errors.New("nginx address not known yet")
	}
	var err error
	for _, addr := range addrs {
		var body string
		if body, err = probe(ctx, addr, host, path); err == nil {
			return body, nil
		}
	}
	return "", err
}

func probe(ctx context.Context, addr, host, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return "", err
	}
	req.Host = host
	resp, err := probeClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return string(body), nil
}

// apply writes the plan, validates it in the nginx container and signals a
// reload; on a rejected config it restores the previous files.
func (c *Controller) apply(ctx context.Context, nginx Container, current, desired nginxconf.Files, plan nginxconf.Plan, t *Timings, log *logrus.Entry) error {
	start := time.Now()
	if _, err := nginxconf.Apply(c.opts.ConfDir, current, desired); err != nil {
		return c.rollback(current, fmt.Errorf("write: %w", err))
	}
	t.Write = time.Since(start)
	start = time.Now()
	code, out, err := c.engine.Exec(ctx, nginx.ID, []string{"nginx", "-t"})
	t.Validate = time.Since(start)
	if err != nil {
		return c.rollback(current, fmt.Errorf("nginx -t: %w", err))
	}
	if code != 0 {
		c.quarantineFrom(out, desired, plan, log)
		return c.rollback(current, fmt.Errorf("nginx -t rejected the new config (exit %d): %s", code, strings.TrimSpace(out)))
	}
	start = time.Now()
	if err := c.engine.Signal(ctx, nginx.ID, "HUP"); err != nil {
		// The files are valid; nginx reads them when it next starts.
		return fmt.Errorf("reload: %w", err)
	}
	t.Signal = time.Since(start)
	return nil
}

func (c *Controller) rollback(previous nginxconf.Files, cause error) error {
	if err := nginxconf.Rollback(c.opts.ConfDir, previous); err != nil {
		return errors.Join(cause, fmt.Errorf("rollback: %w", err))
	}
	return cause
}

// rejectedFile finds "berth-….conf" files named in nginx -t output.
var rejectedFile = regexp.MustCompile(`(berth-[A-Za-z0-9._-]+\.conf):\d+`)

// quarantineFrom remembers the exact bytes of a host file that nginx
// rejected, so later passes keep that host's previous file and every other
// change still lands. The default file is never quarantined.
func (c *Controller) quarantineFrom(out string, desired nginxconf.Files, plan nginxconf.Plan, log *logrus.Entry) {
	for _, m := range rejectedFile.FindAllStringSubmatch(out, -1) {
		name := m[1]
		if name == nginxconf.DefaultFile || desired[name] == nil {
			continue
		}
		c.quarantine[name] = sha256.Sum256(desired[name])
		log.WithField("file", name).Error("nginx rejected this file; keeping its previous version until its input changes")
	}
}

// withoutQuarantined replaces each quarantined file whose desired bytes are
// still the rejected ones with what is on disk (or leaves it out). Pure.
func withoutQuarantined(desired, current nginxconf.Files, q map[string][32]byte) nginxconf.Files {
	if len(q) == 0 {
		return desired
	}
	out := nginxconf.Files{}
	for name, data := range desired {
		if h, bad := q[name]; bad && h == sha256.Sum256(data) {
			if old, ok := current[name]; ok {
				out[name] = old
			}
			continue
		}
		out[name] = data
	}
	return out
}

// Render computes the files berth would write for the current Docker
// state without writing anything (the "berth render" command).
func Render(ctx context.Context, engine Engine, opts Options, log *logrus.Entry) (nginxconf.Files, error) {
	c := New(engine, opts, log)
	cs, err := engine.List(ctx)
	if err != nil {
		return nil, err
	}
	nginx, err := c.findNginx(cs, log)
	if err != nil {
		return nil, err
	}
	return c.render(cs, nginx, log)
}
