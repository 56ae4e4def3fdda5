package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/acme"
	"github.com/berthproxy/berth/controller"
)

// certsCmd implements "berth certs", "berth renew" and "berth revoke".
// They work on the shared files, so they are run next to the daemon, e.g.
// "docker compose exec berth berth certs"; the daemon notices changes
// within a couple of seconds.
func certsCmd(cmd string, args []string, stdout, stderr io.Writer) int {
	var force bool
	extra := func(fs *flag.FlagSet) {
		if cmd == "renew" {
			fs.BoolVar(&force, "force", false, "renew even if the certificate is not due")
		}
	}
	s, err := parseSettingsWith(cmd, args, stderr, extra)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "berth:", err)
		return 2
	}
	store := acme.Store{Dir: s.CertsDir, Log: cliLog(stderr)}
	if cmd == "certs" {
		return printCerts(store, s.StateDir, stdout, stderr)
	}
	if len(s.args) != 1 {
		fmt.Fprintf(stderr, "berth: %s takes exactly one HOST\n", cmd)
		return 2
	}
	host, err := controller.NormalizeHost(s.args[0])
	if err != nil {
		fmt.Fprintln(stderr, "berth:", err)
		return 2
	}
	if !s.acmeEnabled() {
		fmt.Fprintln(stderr, "berth: BERTH_ACME_CA=off: no CA to talk to")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	issuer := &acme.LazyIssuer{Config: s.accountConfig()}
	if cmd == "revoke" {
		st, err := acme.RevokeHost(ctx, store, s.StateDir, issuer, host)
		if err != nil {
			fmt.Fprintln(stderr, "berth: revoke:", err)
			return 1
		}
		fmt.Fprintf(stdout, "revoked %s (%s); berth stops serving it within a few seconds and will not re-issue it until \"berth renew --force %s\"\n",
			st.Name, strings.Join(st.Meta.Domains, ", "), host)
		return 0
	}
	st, err := acme.RenewHost(ctx, store, s.StateDir, issuer, host, force, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "berth: renew:", err)
		return 1
	}
	fmt.Fprintf(stdout, "renewed %s (%s), valid until %s\n", st.Name, strings.Join(st.Meta.Domains, ", "), st.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return 0
}

// cliLog reports files found corrupt (and moved aside) on stderr.
func cliLog(stderr io.Writer) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(stderr)
	return logrus.NewEntry(l)
}

func printCerts(store acme.Store, stateDir string, stdout, stderr io.Writer) int {
	certs, names, err := acme.Status(store, stateDir)
	if err != nil {
		fmt.Fprintln(stderr, "berth:", err)
		return 1
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tHOSTS\tISSUER\tNOT AFTER\tNEXT RENEWAL\tLAST ERROR")
	for _, c := range certs {
		if c.Revoked {
			c.NextRenewal, c.LastError = time.Time{}, "revoked (berth renew --force HOST to re-issue)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, strings.Join(c.Domains, ","), orDash(c.Issuer),
			when(c.NotAfter), when(c.NextRenewal), orDash(oneLine(c.LastError)))
	}
	for _, n := range names {
		status := "no certificate"
		if n.Revoked {
			status = "revoked (berth renew --force to re-issue)"
		}
		next := "-"
		if !n.NextAttempt.IsZero() {
			next = "retry " + when(n.NextAttempt)
		}
		fmt.Fprintf(w, "-\t%s\t%s\t-\t%s\t%s\n", n.Name, status, next, orDash(oneLine(n.LastError)))
	}
	w.Flush()
	return 0
}

func when(t time.Time) string {
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

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}
