package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable writes the snapshot for people ("berth status"): a header of
// nginx, Docker and health, then the hosts, the skipped containers, the
// pending change, orders and failing names. Sections with nothing in them
// are left out.
func WriteTable(w io.Writer, s Snapshot) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format, a...) }
	p("nginx:\t%s\n", nginxLine(s.Nginx))
	p("docker:\t%s\n", dockerLine(s))
	p("health:\t%s\n", healthLine(s))
	if s.Pending != nil {
		p("pending:\t%d file(s) wait for the reload pacer until %s\n", len(s.Pending.Changes), clock(s.Pending.Until))
	}
	p("\n")
	if len(s.Hosts) > 0 {
		p("HOST\tHTTPS\tPATH\tBACKENDS\tCERTIFICATE\n")
		for _, h := range s.Hosts {
			cert := certLine(s, h)
			for i, path := range hostPaths(h) {
				if i > 0 {
					p("\t\t%s\t%s\t\n", path.Path, backendsLine(path.Backends))
					continue
				}
				p("%s\t%s\t%s\t%s\t%s\n", h.Host, h.HTTPS, path.Path, backendsLine(path.Backends), cert)
			}
		}
		p("\n")
	} else {
		p("no hosts served\n\n")
	}
	if len(s.Skipped) > 0 {
		p("SKIPPED CONTAINER\tREASON\n")
		for _, pr := range s.Skipped {
			p("%s\t%s\n", pr.Container, problemLine(pr))
		}
		p("\n")
	}
	if len(s.Orders) > 0 {
		p("ORDER IN FLIGHT\tNAMES\tSTARTED\n")
		for _, o := range s.Orders {
			p("%s\t%s\t%s\n", o.Name, strings.Join(o.Names, ","), clock(o.Started))
		}
		p("\n")
	}
	if len(s.Failing) > 0 {
		p("FAILING NAME\tFAILURES\tNEXT ATTEMPT\tLAST ERROR\n")
		for _, f := range s.Failing {
			p("%s\t%d\t%s\t%s\n", f.Name, f.Failures, clock(f.NextAttempt), oneLine(f.LastError, 120))
		}
		p("\n")
	}
	return tw.Flush()
}

// hostPaths gives a redirect host one pseudo-path, so every host has a row.
func hostPaths(h Host) []Path {
	if len(h.Paths) == 0 {
		to := "-"
		if h.RedirectTo != "" {
			to = "redirect to " + h.RedirectTo
		}
		return []Path{{Path: "-", Backends: []Backend{{Container: to}}}}
	}
	return h.Paths
}

func nginxLine(n Nginx) string {
	if n.Container == "" {
		return "none in use" + withReason(n.Error)
	}
	out := n.Container
	if n.Version != "" {
		out += " (nginx " + n.Version + ")"
	}
	if !n.Confirmed {
		out += ", not confirmed"
	}
	if r := n.LastReload; r != nil {
		out += fmt.Sprintf(", last reload %s %s", clock(r.Time), r.Result)
		if r.Error != "" {
			out += ": " + oneLine(r.Error, 100)
		}
	} else {
		out += ", no reload since berth started"
	}
	return out
}

func dockerLine(s Snapshot) string {
	state := "watching events"
	if !s.Docker.Watching {
		state = "NOT watching events"
	}
	return fmt.Sprintf("%s (%d events, %d reconnects)", state, s.Counters.Events, s.Counters.Reconnects)
}

func healthLine(s Snapshot) string {
	if s.Standby {
		return "ok, standing by (Swarm: another berth holds the lease)"
	}
	if s.Healthy {
		return "ok"
	}
	return "UNHEALTHY: " + s.HealthReason
}

func backendsLine(bs []Backend) string {
	if len(bs) == 0 {
		return "none (503)"
	}
	parts := make([]string, len(bs))
	for i, b := range bs {
		if b.Address == "" && b.Health == "" {
			parts[i] = b.Container
			continue
		}
		parts[i] = fmt.Sprintf("%s %s (%s)", b.Container, orDash(b.Address), healthText(b))
	}
	return strings.Join(parts, ", ")
}

func certLine(s Snapshot, h Host) string {
	c := certNamed(s.Certificates, h.Certificate)
	if c == nil {
		if f := failingFor(s, h.Host); f != nil {
			return "none; order failing, retry " + clock(f.NextAttempt)
		}
		if orderFor(s, h.Host) != nil {
			return "none; order in flight"
		}
		return "-"
	}
	renews := "renews " + clock(c.NextRenewal)
	if c.Source == "user" {
		renews = "your own, never renewed by berth"
	}
	out := fmt.Sprintf("%s, %s, expires %s (%s), %s", c.Name, c.Issuer, clock(c.NotAfter), daysLeft(c.NotAfter, s.Time), renews)
	if h.CertificateMismatch {
		out += ", NGINX SERVES ANOTHER"
	}
	return out
}

func problemLine(p Problem) string {
	if p.Label != "" {
		return fmt.Sprintf("label %s=%q: %s", p.Label, p.Value, p.Reason)
	}
	return p.Reason
}

func certNamed(certs []Certificate, name string) *Certificate {
	for i := range certs {
		if certs[i].Name == name && name != "" {
			return &certs[i]
		}
	}
	return nil
}

func failingFor(s Snapshot, host string) *Failing {
	for i := range s.Failing {
		if s.Failing[i].Name == host {
			return &s.Failing[i]
		}
	}
	return nil
}

func orderFor(s Snapshot, host string) *Order {
	for i := range s.Orders {
		for _, n := range s.Orders[i].Names {
			if n == host {
				return &s.Orders[i]
			}
		}
	}
	return nil
}

// DaysLeft is the whole days until t, as the status page shows them.
func DaysLeft(t, now time.Time) int {
	return int(t.Sub(now).Hours() / 24)
}

func daysLeft(t, now time.Time) string {
	d := DaysLeft(t, now)
	if !t.After(now) {
		return "EXPIRED"
	}
	if d == 1 {
		return "1 day left"
	}
	return fmt.Sprintf("%d days left", d)
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func withReason(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}
