package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/acme"
	"github.com/berthproxy/berth/controller"
)

// certsCmd implements "berth certs", "berth renew", "berth revoke" and
// "berth import".
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
		return printCerts(store, s.StateDir, s.UserCertsDir, stdout, stderr)
	}
	if cmd == "import" {
		if len(s.args) != 1 {
			fmt.Fprintln(stderr, "berth: import takes exactly one DIR")
			return 2
		}
		return importCerts(store, s.args[0], stdout, stderr)
	}
	if len(s.args) != 1 {
		fmt.Fprintf(stderr, "berth: %s takes exactly one HOST\n", cmd)
		return 2
	}
	host, err := certHost(s.args[0])
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

// yours marks the user's own certificates in "berth certs".
const yours = "never: your own"

func printCerts(store acme.Store, stateDir, userDir string, stdout, stderr io.Writer) int {
	certs, names, err := acme.Status(store, stateDir)
	if err != nil {
		fmt.Fprintln(stderr, "berth:", err)
		return 1
	}
	user, rejected, err := acme.UserStatus(userDir, time.Now())
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
	for _, c := range user {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t-\n", c.Name, strings.Join(c.Domains, ","), orDash(c.Issuer), when(c.NotAfter), yours)
	}
	for _, r := range rejected {
		name := r.File
		if rel, err := filepath.Rel(userDir, r.File); err == nil {
			name = rel // as the certificates berth uses from there are named
		}
		fmt.Fprintf(w, "%s\t-\t-\t-\t-\tignored: %s\n", name, oneLine(r.Reason))
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

// importCerts runs "berth import DIR" and prints what it did with each
// file. Exit 0 when something was imported or there was nothing to do
// (nothing found, or everything usable already in the store); 1 when DIR
// is unreadable or every certificate found was unusable.
func importCerts(store acme.Store, dir string, stdout, stderr io.Writer) int {
	results, err := acme.Import(store, dir, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "berth: import:", err)
		return 1
	}
	imported, problems, present := 0, 0, 0
	for _, r := range results {
		switch {
		case r.Skipped == "":
			imported++
			fmt.Fprintf(stdout, "imported %s (%s) from %s, valid until %s\n", r.Name, strings.Join(r.Domains, ", "), r.File, when(r.NotAfter))
			continue
		case r.Problem:
			problems++
		default:
			present++
		}
		fmt.Fprintf(stdout, "skipped %s: %s\n", r.File, oneLine(r.Skipped))
	}
	switch {
	case imported > 0:
		fmt.Fprintf(stdout, "imported %d certificate(s) into %s; a running berth serves them within seconds and renews them like its own\n", imported, store.Dir)
	case problems > 0 && present == 0:
		fmt.Fprintf(stderr, "berth: import: nothing imported from %s: %d file(s) unusable (see above)\n", dir, problems)
		return 1
	case present > 0:
		fmt.Fprintf(stdout, "nothing to import from %s: the store already has what it holds\n", dir)
	default:
		fmt.Fprintf(stdout, "nothing to import from %s: no certificates found\n", dir)
	}
	return 0
}

// certHost reads the HOST of renew and revoke: a hostname, or the
// wildcard name of a wildcard certificate ("*.example.com").
func certHost(arg string) (string, error) {
	if rest, ok := strings.CutPrefix(arg, "*."); ok {
		h, err := controller.NormalizeHost(rest)
		return "*." + h, err
	}
	return controller.NormalizeHost(arg)
}
