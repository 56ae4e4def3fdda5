// Package status owns what berth tells an operator about itself: the
// Snapshot (the JSON of "berth status --json" and GET /status), its table
// for "berth status", the plain-sentence explanation of "berth why", the
// read-only HTML status page and the Prometheus metrics view.
//
// The model is pure: producers (the controller after every pass, the
// certificate manager on demand) hand in parts; nothing here talks to
// Docker, nginx or the CA. Nothing secret may enter a Snapshot: no keys,
// no EAB values, no basic-auth hashes (SafeLabels redacts them).
//
// The JSON field names are a stable interface, documented on each field.
package status

import (
	"slices"
	"strings"
	"time"
)

// Snapshot is everything berth knows about its state at one moment.
type Snapshot struct {
	Time    time.Time `json:"time"`    // when the snapshot was taken
	Version string    `json:"version"` // berth's version
	// Healthy is what "berth health" and /healthz report: berth watches
	// Docker and has a confirmed nginx. HealthReason says why not.
	Healthy      bool   `json:"healthy"`
	HealthReason string `json:"health_reason,omitempty"`
	// Standby: a Swarm berth that does not hold the lease; another berth
	// decides and orders, and this one takes over if that one goes.
	Standby bool   `json:"standby,omitempty"`
	Docker  Docker `json:"docker"`
	Nginx   Nginx  `json:"nginx"`
	// Reloads are the most recent reloads, newest first (at most MaxReloads).
	Reloads []Reload `json:"reloads"`
	// LastPass is the last reconcile pass.
	LastPass Pass `json:"last_pass"`
	// Hosts are the served hosts, sorted by name.
	Hosts []Host `json:"hosts"`
	// Containers are the labelled containers berth considered, sorted by name.
	Containers []Container `json:"containers"`
	// Skipped are containers (or routes) left out of the config, with why.
	Skipped []Problem `json:"skipped"`
	// Warnings are problems that do not stop a container being routed.
	Warnings []Problem `json:"warnings"`
	// Pending is a change waiting for the reload pacer; nil when none.
	Pending *Pending `json:"pending,omitempty"`
	// Certificates are the stored certificates, sorted by name.
	Certificates []Certificate `json:"certificates"`
	// Orders are certificate orders in flight.
	Orders []Order `json:"orders"`
	// Failing are names whose last order failed, with when berth retries.
	Failing []Failing `json:"failing"`
	// Counters are totals since berth started, the source of the metrics.
	Counters Counters `json:"counters"`
}

// MaxReloads bounds the reload history: enough to see a pattern of
// rejections on the status page, small enough to keep the JSON short.
const MaxReloads = 20

// Docker is the state of berth's view of Docker.
type Docker struct {
	Watching bool `json:"watching"` // the event stream is subscribed
}

// Nginx is the nginx container berth configures.
type Nginx struct {
	Container string `json:"container,omitempty"` // name
	ID        string `json:"id,omitempty"`
	Version   string `json:"version,omitempty"` // e.g. "1.22.1", from nginx -V
	// Confirmed: the container answered nginx -V as nginx, so its nginx -t
	// is trusted and it is signalled.
	Confirmed  bool    `json:"confirmed"`
	Error      string  `json:"error,omitempty"` // why no nginx is in use
	LastReload *Reload `json:"last_reload,omitempty"`
}

// Reload results, the values of Reload.Result and of the result label of
// berth_reloads_total.
const (
	ReloadOK       = "ok"       // validated and signalled
	ReloadRejected = "rejected" // nginx -t refused the new files; the old ones stay
	ReloadFailed   = "failed"   // a write, nginx -t run or signal failed
)

// Reload is one attempt to put new files live.
type Reload struct {
	Time    time.Time `json:"time"`
	Result  string    `json:"result"` // ok, rejected or failed
	Error   string    `json:"error,omitempty"`
	Written []string  `json:"written,omitempty"` // files written
	Removed []string  `json:"removed,omitempty"` // files removed
}

// Pass is one reconcile pass.
type Pass struct {
	Number   int       `json:"number"`
	Time     time.Time `json:"time"`
	Seconds  float64   `json:"seconds"` // how long it took
	Error    string    `json:"error,omitempty"`
	ListedOK bool      `json:"listed_ok"` // the Docker list succeeded
}

// HTTPS modes a host can have, as the proxy.https label names them.
// Host.HTTPS carries one of the label's values verbatim.

// Host is one served hostname.
type Host struct {
	Host       string `json:"host"`
	HTTPS      string `json:"https"`                 // proxy.https mode: redirect, on, off, both…
	HSTS       string `json:"hsts,omitempty"`        // the Strict-Transport-Security value, if sent
	RedirectTo string `json:"redirect_to,omitempty"` // set for proxy.redirect-from hosts
	// Certificate is the name of the stored certificate nginx serves for
	// this host ("" when it has none on disk).
	Certificate string `json:"certificate,omitempty"`
	// CertificateMismatch: after the last reload, nginx still served a
	// different certificate than the stored one.
	CertificateMismatch bool   `json:"certificate_mismatch,omitempty"`
	Paths               []Path `json:"paths"`
}

// Path is one location of a host.
type Path struct {
	Path     string    `json:"path"`
	Backends []Backend `json:"backends"`
}

// Backend health values.
const (
	HealthHealthy   = "healthy"   // Docker's health check passes
	HealthStarting  = "starting"  // no traffic while a ready replica exists
	HealthUnhealthy = "unhealthy" // no traffic while a ready replica exists
	HealthNone      = "none"      // no health check: ready while running
	HealthStopped   = "stopped"   // not running: the host answers 503 if no other backend
)

// Backend is one upstream of a path.
type Backend struct {
	Container string `json:"container"`
	Address   string `json:"address,omitempty"` // ip:port or [ipv6]:port; "" when not running
	Health    string `json:"health"`            // healthy, starting, unhealthy, none, stopped
	Ready     bool   `json:"ready"`             // gets traffic
}

// Container is a labelled container as berth saw it, for "berth why".
type Container struct {
	Name   string `json:"name"`
	ID     string `json:"id"`
	State  string `json:"state"`            // Docker's state
	Health string `json:"health,omitempty"` // Docker's health status, if it has a check
	// Labels are its proxy.* labels, basic-auth values redacted.
	Labels map[string]string `json:"labels"`
	// Networks the container is on, and which of them nginx is on too.
	Networks       []string `json:"networks"`
	SharedNetworks []string `json:"shared_networks"`
	Routes         []Route  `json:"routes"`
	// Source is where the routes came from: "labels", "nginx-proxy env"
	// or "routes file".
	Source string `json:"source,omitempty"`
}

// Route is one route of a container, with the decisions berth made.
type Route struct {
	Name          string   `json:"name,omitempty"` // "" for the unnamed labels
	Hosts         []string `json:"hosts"`
	Path          string   `json:"path"`
	Port          int      `json:"port,omitempty"`
	PortReason    string   `json:"port_reason,omitempty"` // why this port
	Network       string   `json:"network,omitempty"`
	NetworkReason string   `json:"network_reason,omitempty"` // why this network
	Address       string   `json:"address,omitempty"`        // the backend address chosen
	HTTPS         string   `json:"https"`
	ACME          bool     `json:"acme"`
	Ready         bool     `json:"ready"`
}

// Problem is why a container (or a route of it) is skipped, or a warning.
type Problem struct {
	Container string `json:"container"`
	Label     string `json:"label,omitempty"`
	Value     string `json:"value,omitempty"` // redacted for basic-auth
	Reason    string `json:"reason"`
}

// Pending is a change the reload pacer holds.
type Pending struct {
	Until   time.Time `json:"until"`   // when it goes live
	Changes []string  `json:"changes"` // files to write or remove
}

// Certificate is one stored certificate (never its key).
type Certificate struct {
	Name        string    `json:"name"`  // its first host; the store's directory name
	Names       []string  `json:"names"` // the names it covers
	Issuer      string    `json:"issuer"`
	Serial      string    `json:"serial"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	NextRenewal time.Time `json:"next_renewal"`
	Revoked     bool      `json:"revoked,omitempty"`
	// Source is "user" for the user's own certificate (never renewed by
	// berth; Name is its file), empty for berth's own.
	Source string `json:"source,omitempty"`
}

// Order is a certificate order in flight.
type Order struct {
	Name    string    `json:"name"`
	Names   []string  `json:"names"`
	Started time.Time `json:"started"`
	Renewal bool      `json:"renewal"`
}

// Failing is a name whose last order failed.
type Failing struct {
	Name        string    `json:"name"`
	Failures    int       `json:"failures"`
	LastError   string    `json:"last_error"`
	NextAttempt time.Time `json:"next_attempt"`
}

// Counters are totals since start.
type Counters struct {
	Reloads map[string]uint64 `json:"reloads"` // by result: ok, rejected, failed
	// LastReloadOK is the time of the last successful reload.
	LastReloadOK time.Time `json:"last_ok_reload"`
	Passes       Histogram `json:"pass_seconds"`
	Events       uint64    `json:"docker_events"`
	Reconnects   uint64    `json:"docker_reconnects"`
	// Orders by result: ok, failed, rate_limited.
	Orders        map[string]uint64 `json:"acme_orders"`
	OrderDuration Histogram         `json:"acme_order_seconds"`
}

// Order results, the values of the result label of berth_acme_orders_total.
const (
	OrderOK          = "ok"
	OrderFailed      = "failed"
	OrderRateLimited = "rate_limited"
)

// ControllerPart is what the controller publishes after every pass.
type ControllerPart struct {
	Pass       Pass
	Nginx      Nginx
	Reload     *Reload // this pass's reload attempt, nil when none
	Hosts      []Host
	Containers []Container
	Skipped    []Problem
	Warnings   []Problem
	Pending    *Pending
	// Mismatch are the hosts whose served certificate did not match.
	Mismatch []string
}

// CertPart is what the certificate manager reports.
type CertPart struct {
	Certificates  []Certificate
	Orders        []Order
	Failing       []Failing
	OrderCounts   map[string]uint64
	OrderDuration Histogram
}

// SafeLabels keeps a container's proxy.* labels and redacts the values
// that are secrets (basic-auth htpasswd lines), so a snapshot can be shown
// to anyone who can reach the status page.
func SafeLabels(labels map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range labels {
		if !strings.HasPrefix(k, "proxy.") {
			continue
		}
		if secretLabel(k) {
			v = Redacted
		}
		out[k] = v
	}
	return out
}

// Redacted replaces a secret value.
const Redacted = "(redacted)"

func secretLabel(k string) bool {
	return strings.HasSuffix(k, ".basic-auth") || strings.Contains(k, "password") || strings.Contains(k, "secret")
}

// SafeProblem redacts a problem's value when its label is a secret.
func SafeProblem(p Problem) Problem {
	if secretLabel(p.Label) {
		p.Value = Redacted
	}
	return p
}

// certFor finds the certificate that covers host as acme.Manager.Certs
// and nginx serve it: the user's own before berth's (a user wildcard wins
// over berth's certificate for the host's own name, since berth stops
// renewing the names a user certificate covers); within each, the host's
// own name before the wildcard one label up (controller.CertFor), and the
// one that expires last when several do.
func certFor(certs []Certificate, host string) *Certificate {
	names := []string{host}
	if _, parent, ok := strings.Cut(host, "."); ok && strings.Contains(parent, ".") && !strings.HasPrefix(host, "*.") {
		names = append(names, "*."+parent)
	}
	for _, user := range []bool{true, false} {
		for _, name := range names {
			if c := certCovering(certs, name, user); c != nil {
				return c
			}
		}
	}
	return nil
}

// certCovering is the certificate naming name that expires last, among
// the user's own (user) or berth's.
func certCovering(certs []Certificate, name string, user bool) *Certificate {
	var best *Certificate
	for i := range certs {
		c := &certs[i]
		if (c.Source == "user") == user && slices.Contains(c.Names, name) && (best == nil || c.NotAfter.After(best.NotAfter)) {
			best = c
		}
	}
	return best
}
