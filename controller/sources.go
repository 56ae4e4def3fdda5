package controller

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/sirupsen/logrus"
)

// Inputs of Desired that are not containers' labels: nginx-proxy
// environment and the routes file. Both become label maps and go through
// the same parser, so every option means the same wherever it is written.

// routesFilePoll is how often the routes file is checked: a stat per poll,
// cheap, and quick enough that an edit is live in a couple of seconds.
const routesFilePoll = 2 * time.Second

// withNginxProxyEnv returns c with its nginx-proxy environment merged
// under its labels (labels win), and the warning that goes with it. Pure.
func withNginxProxyEnv(c Container) (Container, *Problem) {
	if len(c.Env) == 0 {
		return c, nil
	}
	merged, warning := MergeNginxProxy(c.Labels, c.Env)
	c.Labels = merged
	if warning == "" {
		return c, nil
	}
	return c, &Problem{Container: c.Name, Reason: warning, Warning: true}
}

// fileRouteName names a routes-file entry in problems and wants.
func fileRouteName(name string) string { return "routes-file:" + name }

// fileWants turns routes-file entries (backends already addresses) into
// wants: one per route and backend, always ready. A bad entry is skipped
// with its problems. Pure.
func fileWants(entries []FileRoute, d Defaults) ([]Want, []Problem) {
	var wants []Want
	var ps []Problem
	for _, e := range entries {
		name := fileRouteName(e.Name)
		routes, _, errs, warns := ParseRoutes(e.Labels, d)
		for _, w := range warns {
			ps = append(ps, Problem{name, w.Label, w.Value, w.Reason, true})
		}
		for _, err := range errs {
			ps = append(ps, Problem{Container: name, Label: err.Label, Value: err.Value, Reason: err.Reason + "; route not served"})
		}
		if len(errs) > 0 {
			continue
		}
		for _, r := range routes {
			for _, b := range e.Backends {
				wants = append(wants, Want{Container: name, Route: r, Backend: b, Ready: true})
			}
		}
	}
	return wants, ps
}

// resolveFileRoutes replaces DNS names in backends by addresses, at the
// edge, so a name that does not resolve costs only its own route.
func resolveFileRoutes(ctx context.Context, entries []FileRoute) ([]FileRoute, []Problem) {
	var out []FileRoute
	var ps []Problem
	for _, e := range entries {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		backends, err := ResolveBackends(rctx, net.DefaultResolver.LookupNetIP, e.Backends)
		cancel()
		if err != nil {
			ps = append(ps, Problem{Container: fileRouteName(e.Name), Reason: err.Error() + "; route not served"})
			continue
		}
		e.Backends = backends
		out = append(out, e)
	}
	return out, ps
}

// routesFileUpdate applies one change of the routes file: a file that is
// not a routes file (or cannot be read) keeps the last good set, with one
// error line; invalid entries are logged and skipped.
func (c *Controller) routesFileUpdate(content RoutesFileContent, log *logrus.Entry) {
	e := log.WithField("file", c.opts.RoutesFile)
	if content.Err != nil {
		e.WithError(content.Err).Error("cannot read the routes file; keeping its last good routes")
		return
	}
	entries, problems, err := ParseRoutesFile(content.Data)
	if err != nil {
		e.WithError(err).Error("not a routes file; keeping its last good routes")
		return
	}
	for _, p := range problems {
		e.Warn("routes file entry skipped: " + p)
	}
	c.fileRoutes = entries
	e.WithField("routes", len(entries)).Info(fmt.Sprintf("routes file read: %d routes", len(entries)))
}
