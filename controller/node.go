package controller

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/nginxconf"
)

// Node applies a file set rendered elsewhere (by the berth that decides, on
// a Swarm manager) to the nginx on this node's Docker engine: the Swarm
// agent's half of a pass. It finds nginx exactly as `berth run` does
// (BERTH_NGINX_CONTAINER or the label, confirmed by `nginx -V`) and applies
// through the same Applier, so a node keeps every single-host guarantee:
// atomic writes, nginx -t before SIGHUP, rollback, and a rejected host file
// held back without holding back the others.
//
// Not safe for concurrent use: the agent serialises its requests, and is
// the only writer of the node's berth-* files.
type Node struct {
	engine  Engine
	nginx   *Nginx
	applier *Applier
}

// NewNode returns the node applier for confDir; nginx locates the node's
// nginx through engine.
func NewNode(engine Engine, nginx *Nginx, confDir string) *Node {
	return &Node{engine: engine, nginx: nginx, applier: NewApplier(confDir, engine)}
}

// Outcome is what one Converge did.
type Outcome struct {
	// Changed: files were written or nginx was reloaded.
	Changed bool
	// Held lists the desired files nginx rejected: each keeps its previous
	// version (or stays absent) until the manager sends other bytes.
	Held []string
	// Rejection is nginx -t's output for the last rejection, "" if none.
	Rejection string
}

// ErrRejected wraps a config nginx -t refused and whose file at fault could
// not be found, so nothing of the change landed.
var ErrRejected = errRejected

// Find returns the node's confirmed nginx container, or an error that says
// why there is none (errNginxMissing when none runs).
func (n *Node) Find(ctx context.Context, log *logrus.Entry) (Container, error) {
	cs, err := n.engine.List(ctx)
	if err != nil {
		return Container{}, fmt.Errorf("list containers: %w", err)
	}
	n.nginx.Forget(cs)
	c, _, err := n.nginx.Find(ctx, cs, log)
	return c, err
}

// Build returns the node's nginx -V output, which decides the directives
// the manager renders for every node.
func (n *Node) Build(ctx context.Context, log *logrus.Entry) (string, error) {
	cs, err := n.engine.List(ctx)
	if err != nil {
		return "", fmt.Errorf("list containers: %w", err)
	}
	n.nginx.Forget(cs)
	_, build, err := n.nginx.Find(ctx, cs, log)
	return build, err
}

// Converge makes the conf dir hold desired and nginx run it. Each rejection
// whose file at fault is found quarantines that file and applies the rest
// again at once, so one call lands every acceptable file: the manager's
// push gets a complete answer instead of waiting for a retry. desired must
// hold only berth's files (nginxconf.Owned).
func (n *Node) Converge(ctx context.Context, desired nginxconf.Files, log *logrus.Entry) (Outcome, error) {
	var out Outcome
	nginx, err := n.Find(ctx, log)
	if err != nil {
		return out, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), applyTimeout)
	defer cancel()
	a := n.applier
	// Each round either lands, fails, or quarantines one more file, so
	// len(desired)+1 rounds always suffice.
	for range len(desired) + 1 {
		current, err := nginxconf.ReadOwned(a.dir)
		if err != nil {
			return out, err
		}
		files := withoutQuarantined(desired, current, a.quarantine)
		plan := nginxconf.Diff(current, files)
		if plan.Empty() && !a.unconfirmed {
			break
		}
		held := len(a.quarantine)
		err = a.apply(ctx, nginx, current, files, plan, &Timings{}, log)
		if err == nil {
			out.Changed = true
			break
		}
		rejected := errors.Is(err, errRejected)
		if rejected {
			out.Rejection = err.Error()
		}
		if !rejected || len(a.quarantine) == held {
			out.Held = heldFiles(desired, a.quarantine)
			return out, err
		}
	}
	out.Held = heldFiles(desired, a.quarantine)
	return out, nil
}

// heldFiles lists, sorted, the files of desired whose bytes are the ones
// nginx rejected. Pure.
func heldFiles(desired nginxconf.Files, q map[string][32]byte) []string {
	var held []string
	for name, data := range desired {
		if h, bad := q[name]; bad && h == sha256.Sum256(data) {
			held = append(held, name)
		}
	}
	slices.Sort(held)
	return held
}
