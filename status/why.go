package status

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrUnknown means the name is neither a container berth considered nor a
// host it serves or was asked to serve.
var ErrUnknown = errors.New("no labelled container and no host by that name")

// Why explains a container (by name or ID prefix) or a host in plain
// sentences: the labels read, the network and port chosen and why, health,
// certificate state and what holds it back. Pure.
func Why(s Snapshot, name string) ([]string, error) {
	name = strings.TrimPrefix(strings.TrimSpace(name), "/")
	if c := findContainer(s, name); c != nil {
		return whyContainer(s, *c), nil
	}
	host := strings.ToLower(strings.TrimSuffix(name, "."))
	if h := findHost(s, host); h != nil {
		return whyHost(s, *h), nil
	}
	if lines := whyMissingHost(s, host); len(lines) > 0 {
		return lines, nil
	}
	if ps := problemsOf(s.Skipped, name); len(ps) > 0 {
		return whyProblemsOnly(name, ps), nil
	}
	return nil, fmt.Errorf("%s: %w (berth only knows containers with proxy.* labels)", name, ErrUnknown)
}

func findContainer(s Snapshot, name string) *Container {
	for i, c := range s.Containers {
		if c.Name == name || (len(name) >= 4 && strings.HasPrefix(c.ID, name)) {
			return &s.Containers[i]
		}
	}
	return nil
}

func findHost(s Snapshot, host string) *Host {
	for i := range s.Hosts {
		if s.Hosts[i].Host == host {
			return &s.Hosts[i]
		}
	}
	return nil
}

func problemsOf(ps []Problem, container string) []Problem {
	var out []Problem
	for _, p := range ps {
		if p.Container == container {
			out = append(out, p)
		}
	}
	return out
}

func whyContainer(s Snapshot, c Container) []string {
	var out []string
	say := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }
	state := c.State
	if c.Health != "" {
		state += ", health " + c.Health
	}
	say("Container %s (%s) is %s.", c.Name, short(c.ID), state)
	say("Labels read: %s.", labelList(c.Labels))
	if c.Source != "" && c.Source != "labels" {
		say("Its routes come from %s.", c.Source)
	}
	say("It is on networks %s; nginx (%s) shares %s.", listOr(c.Networks, "none"), orDash(s.Nginx.Container), listOr(c.SharedNetworks, "none of them"))
	skipped := problemsOf(s.Skipped, c.Name)
	for _, p := range skipped {
		say("Skipped: %s.", problemLine(p))
	}
	for _, p := range problemsOf(s.Warnings, c.Name) {
		say("Warning: %s.", problemLine(p))
	}
	if len(skipped) > 0 && len(c.Routes) == 0 {
		say("So no host is served from this container; fix the label(s) above and berth picks the change up at once.")
		return out
	}
	for _, r := range c.Routes {
		out = append(out, whyRoute(s, c, r)...)
	}
	return out
}

func whyRoute(s Snapshot, c Container, r Route) []string {
	var out []string
	say := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }
	name := "The default route"
	if r.Name != "" {
		name = "Route " + r.Name
	}
	say("%s serves %s at path %s (HTTPS mode %s, ACME %s).", name, strings.Join(r.Hosts, ", "), r.Path, r.HTTPS, onOff(r.ACME))
	if r.Port != 0 {
		say("Port %d: %s.", r.Port, r.PortReason)
	}
	if r.Network != "" {
		say("Network %s: %s.", r.Network, r.NetworkReason)
	}
	switch {
	case r.Address == "":
		say("It has no address (not running): its hosts answer 503 unless another backend serves them.")
	case r.Ready:
		say("Backend %s gets traffic.", r.Address)
	default:
		say("Backend %s gets no traffic while its health is %s and another backend is ready.", r.Address, orDash(c.Health))
	}
	for _, h := range r.Hosts {
		out = append(out, certSentences(s, h)...)
	}
	if s.Pending != nil {
		say("A change waits for the reload pacer until %s.", clock(s.Pending.Until))
	}
	return out
}

func whyHost(s Snapshot, h Host) []string {
	var out []string
	say := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }
	say("Host %s is served (HTTPS mode %s%s).", h.Host, h.HTTPS, hstsNote(h.HSTS))
	if h.RedirectTo != "" {
		say("It redirects every request to %s (proxy.redirect-from).", h.RedirectTo)
	}
	for _, p := range h.Paths {
		if len(p.Backends) == 0 {
			say("Path %s has no backend: nginx answers 503.", p.Path)
			continue
		}
		var parts []string
		for _, b := range p.Backends {
			traffic := "gets traffic"
			if !b.Ready {
				traffic = "held back"
			}
			parts = append(parts, fmt.Sprintf("%s at %s (%s, %s)", b.Container, orDash(b.Address), b.Health, traffic))
		}
		say("Path %s goes to %s.", p.Path, strings.Join(parts, "; "))
	}
	out = append(out, certSentences(s, h.Host)...)
	if h.CertificateMismatch {
		say("After the last reload nginx still served a different certificate than the stored one; berth keeps checking and signals nginx again.")
	}
	if s.Pending != nil {
		say("A change waits for the reload pacer until %s.", clock(s.Pending.Until))
	}
	return out
}

// certSentences says what berth knows about host's certificate.
func certSentences(s Snapshot, host string) []string {
	var out []string
	say := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }
	if c := certFor(s.Certificates, host); c != nil {
		if c.Source == "user" {
			say("Your own certificate %s covers %s: issued by %s, valid until %s (%s); berth serves it ahead of its own and never renews it.",
				c.Name, strings.Join(c.Names, ", "), c.Issuer, clock(c.NotAfter), daysLeft(c.NotAfter, s.Time))
		} else {
			say("Certificate %s covers %s: issued by %s, valid until %s (%s), next renewal %s.",
				c.Name, strings.Join(c.Names, ", "), c.Issuer, clock(c.NotAfter), daysLeft(c.NotAfter, s.Time), clock(c.NextRenewal))
		}
		if c.Revoked {
			say("It is revoked: berth does not re-issue it until \"berth renew --force %s\".", host)
		}
	}
	if o := orderFor(s, host); o != nil {
		say("An order for %s is in flight since %s.", strings.Join(o.Names, ", "), clock(o.Started))
	}
	if f := failingFor(s, host); f != nil {
		say("The last order for %s failed (%d time(s)): %s. Next attempt %s.", host, f.Failures, oneLine(f.LastError, 300), clock(f.NextAttempt))
	}
	if len(out) == 0 && len(s.Certificates)+len(s.Orders)+len(s.Failing) > 0 {
		say("No certificate covers %s.", host)
	}
	return out
}

// whyMissingHost explains a host no site serves: which containers ask for
// it and why they are skipped.
func whyMissingHost(s Snapshot, host string) []string {
	var out []string
	for _, c := range s.Containers {
		if !asksFor(c, host) {
			continue
		}
		out = append(out, fmt.Sprintf("Host %s is not served, but container %s asks for it.", host, c.Name))
		out = append(out, whyContainer(s, c)...)
	}
	if len(out) == 0 {
		if f := failingFor(s, host); f != nil {
			out = append(out, fmt.Sprintf("Host %s is not served by any site.", host))
			out = append(out, certSentences(s, host)...)
		}
	}
	return out
}

func asksFor(c Container, host string) bool {
	for _, r := range c.Routes {
		if slices.Contains(r.Hosts, host) {
			return true
		}
	}
	for k, v := range c.Labels {
		if strings.HasSuffix(k, "host") || strings.HasSuffix(k, "redirect-from") {
			for _, h := range strings.Split(v, ",") {
				if strings.EqualFold(strings.TrimSpace(h), host) {
					return true
				}
			}
		}
	}
	return false
}

func whyProblemsOnly(name string, ps []Problem) []string {
	out := []string{fmt.Sprintf("Container %s is skipped:", name)}
	for _, p := range ps {
		out = append(out, problemLine(p)+".")
	}
	return out
}

func labelList(labels map[string]string) string {
	if len(labels) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, labels[k])
	}
	return strings.Join(parts, ", ")
}

func listOr(xs []string, none string) string {
	if len(xs) == 0 {
		return none
	}
	return strings.Join(xs, ", ")
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func hstsNote(v string) string {
	if v == "" {
		return ""
	}
	return ", HSTS " + v
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return orDash(id)
}
