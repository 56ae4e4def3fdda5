// Command berth is the sidecar controller: it watches Docker, writes nginx
// config for labelled containers and reloads nginx. This is the only package
// that reads flags and environment, sets up logging and exits.
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/acme"
	"github.com/berthproxy/berth/controller"
	"github.com/berthproxy/berth/status"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `berth: nginx sidecar controller for Docker.

Usage:
  berth [run] [flags]   watch Docker and keep nginx configured (default)
  berth render [flags]  print the files berth would write now; writes nothing
  berth certs           list certificates: hosts, issuer, expiry, next renewal, last error
  berth renew [--force] HOST
                        renew the certificate serving HOST now (--force: even if not due)
  berth revoke HOST     revoke the certificate serving HOST at the CA and stop serving it
  berth import DIR      copy certificates from an acme-companion / nginx-proxy certs volume or a
                        certbot tree into berth's store (berth renews them later)
  berth status [--json] what the running daemon serves, skips and waits for
  berth why NAME        why a container or host is (not) served, in sentences
  berth agent [flags]   Swarm agent beside a node's nginx: applies the config a manager's berth
                        pushes (signed with BERTH_AGENT_SECRET_FILE); in progress
  berth health          exit 0 if the daemon watches Docker and has a confirmed nginx
  berth version         print the version
  berth COMMAND --help  flags of a command

Every flag also reads an environment variable (shown in --help).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the exit code: 0 ok, 1 failure,
// 2 usage error.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !isFlag(args[0]) {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run", "render":
		s, err := parseSettings(cmd, args, stderr)
		log, code := startLogging(err, s.LogLevel, s.LogFormat, "berth", stderr)
		if log == nil {
			return code
		}
		if cmd == "render" {
			return render(s, stdout, log)
		}
		if s.Swarm {
			return serveSwarm(s, log)
		}
		return serve(s, log)
	case "certs", "renew", "revoke", "import":
		return certsCmd(cmd, args, stdout, stderr)
	case "status", "why", "health":
		return statusCmd(cmd, args, stdout, stderr)
	case "agent":
		return agentCmd(args, stderr)
	case "version":
		fmt.Fprintln(stdout, "berth", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "berth: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func isFlag(s string) bool {
	return len(s) > 0 && s[0] == '-' && s != "-h" && s != "--help" && s != "-help"
}

// timestampFormat has milliseconds: reactions take tens of milliseconds,
// and latency breakdowns are read from the logs.
const timestampFormat = "2006-01-02T15:04:05.000Z07:00"

// startLogging turns a command's settings error into its exit code (0 for
// --help, 2 for a usage error), or returns the logger those settings ask
// for. The logger is nil when the command must exit with the code.
func startLogging(settingsErr error, level, format, prog string, stderr io.Writer) (*logrus.Entry, int) {
	if errors.Is(settingsErr, flag.ErrHelp) {
		return nil, 0
	}
	if settingsErr != nil {
		fmt.Fprintln(stderr, prog+":", settingsErr)
		return nil, 2
	}
	log, err := newLogger(level, format, stderr)
	if err != nil {
		fmt.Fprintln(stderr, prog+":", err)
		return nil, 2
	}
	return log, 0
}

func newLogger(level, format string, w io.Writer) (*logrus.Entry, error) {
	l := logrus.New()
	l.SetOutput(w)
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("BERTH_LOG_LEVEL %q: want debug, info, warn or error", level)
	}
	l.SetLevel(lvl)
	switch format {
	case "text":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: timestampFormat})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{TimestampFormat: timestampFormat})
	default:
		return nil, fmt.Errorf("BERTH_LOG_FORMAT %q: want text or json", format)
	}
	return logrus.NewEntry(l), nil
}

// serve runs the controller until SIGTERM or SIGINT.
func serve(s settings, log *logrus.Entry) int {
	if err := prepareDirs(s); err != nil {
		log.WithError(err).Error("cannot start")
		return 1
	}
	engine, err := controller.NewDockerEngine()
	if engine != nil {
		engine.ReadEnv = s.NginxProxyEnv
	}
	if err != nil {
		log.WithError(err).Error("cannot start")
		return 1
	}
	defer engine.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.WithFields(logrus.Fields{"version": version, "conf_dir": s.ConfDir, "nginx": s.NginxContainer, "acme_ca": s.ACMECA}).Info("berth starting")
	s.warnAtStart(log)
	nginx := newNginx(engine, s)
	opts := s.controllerOptions()
	var mgr *acme.Manager
	if s.certsEnabled() {
		if mgr, err = newManager(s, log, nginx, nil); err != nil {
			log.WithError(err).Error("cannot start")
			return 1
		}
		opts.Certs = certificates{mgr, !s.acmeEnabled()}
	}
	board := status.NewBoard(version, certSource(mgr, mgr != nil))
	opts.Observer = board
	if err := serveStatus(ctx, s, board, log); err != nil {
		log.WithError(err).Error("cannot start")
		return 1
	}
	ctl := controller.New(engine, nginx, opts, log)
	if mgr != nil {
		go mgr.Run(ctx)
	}
	if err := ctl.Run(ctx); err != nil {
		log.WithError(err).Error("stopped")
		return 1
	}
	log.Info("berth stopped; nginx config left in place")
	return 0
}

// newNginx builds the locator of berth's nginx, which knows berth's own
// container (to prefer the nginx on its network).
func newNginx(engine controller.Engine, s settings) *controller.Nginx {
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	cgroup, _ := os.ReadFile("/proc/self/cgroup")
	hostname, _ := os.Hostname()
	return controller.NewNginx(engine, s.NginxContainer, controller.SelfID(string(mountinfo), string(cgroup), hostname), s.ProbeAddr)
}

// newManager builds the certificate manager; the CA is contacted only when
// a host first needs a certificate.
//
// A DNS provider is configured here, once; one that cannot be (unknown
// name, missing variables) is logged now and fails each DNS-01 order with
// the same error, with backoff, while HTTP-01 orders go on.
func newManager(s settings, log *logrus.Entry, probe acme.Prober, http01 acme.ChallengeWriter) (*acme.Manager, error) {
	cfg := withLog(s.accountConfig(), log)
	cfg.HTTP01 = http01
	if s.ACMEDNSProvider != "" && s.acmeEnabled() {
		if err := cfg.DNS.Err(); err != nil {
			log.WithError(err).Error("DNS-01 orders will fail until the DNS provider is fixed; HTTP-01 orders go on")
		} else {
			log.WithFields(logrus.Fields{"provider": s.ACMEDNSProvider, "resolvers": strings.Join(s.ACMEDNSResolvers, ",")}).Info("DNS-01 through lego's DNS provider")
		}
	}
	var issuer acme.Issuer = noCA{}
	if s.acmeEnabled() {
		issuer = &acme.LazyIssuer{Config: cfg}
	}
	return acme.NewManager(acme.Options{
		Store:    acme.Store{Dir: s.CertsDir},
		Issuer:   issuer,
		Webroot:  s.Webroot,
		StateDir: s.StateDir,
		UserDir:  s.UserCertsDir,
		Probe:    probe,
		Log:      log.WithField("component", "acme"),
		Profile:  s.ACMEProfile,
		DNS01:    s.ACMEDNSProvider != "",
	})
}

func withLog(c acme.AccountConfig, log *logrus.Entry) acme.AccountConfig {
	c.Log = log
	return c
}

// certificates adapts the certificate manager to what the loop needs.
// With noOrders (BERTH_ACME_CA=off and a user certificate directory) it
// serves the user's certificates and those already stored, and asks for
// none.
type certificates struct {
	m        *acme.Manager
	noOrders bool
}

func (c certificates) Certs() map[string]controller.CertFiles {
	certs := c.m.Certs()
	out := make(map[string]controller.CertFiles, len(certs))
	for host, p := range certs {
		out[host] = controller.CertFiles{Chain: p.Chain, Key: p.Key, Serial: p.Serial}
	}
	return out
}

func (c certificates) Want(reqs []controller.CertRequest, served []string) {
	if c.noOrders {
		reqs = nil
	}
	out := make([]acme.CertRequest, len(reqs))
	for i, r := range reqs {
		out[i] = acme.CertRequest{Names: r.Names, Challenge: r.Challenge, Profile: r.Profile}
	}
	c.m.Want(out, served)
}
func (c certificates) InUse(files []string)     { c.m.InUse(files) }
func (c certificates) Changed() <-chan struct{} { return c.m.Changed() }

// noCA is the issuer with BERTH_ACME_CA=off: never asked to order (see
// certificates.noOrders), it refuses anything else.
type noCA struct{}

var errNoCA = errors.New("BERTH_ACME_CA=off: no CA")

func (noCA) Obtain(context.Context, []string, acme.OrderOptions) (acme.Issued, error) {
	return acme.Issued{}, errNoCA
}
func (noCA) RenewalInfo(context.Context, *x509.Certificate) (*acme.Window, error) {
	return nil, errNoCA
}
func (noCA) Revoke(context.Context, []byte) error { return errNoCA }

// prepareDirs checks the conf dir exists (it is nginx's: berth must not
// invent it) and creates the challenge directory in the webroot.
func prepareDirs(s settings) error {
	if fi, err := os.Stat(s.ConfDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("BERTH_CONF_DIR %s: not a directory (mount nginx's conf.d volume there)", s.ConfDir)
	}
	challenge := filepath.Join(s.Webroot, ".well-known", "acme-challenge")
	if err := os.MkdirAll(challenge, 0o755); err != nil {
		return fmt.Errorf("BERTH_WEBROOT: %w", err)
	}
	if !s.certsEnabled() {
		return nil
	}
	if err := os.MkdirAll(s.CertsDir, 0o755); err != nil {
		return fmt.Errorf("BERTH_CERTS_DIR: %w", err)
	}
	if err := os.MkdirAll(s.StateDir, 0o700); err != nil {
		return fmt.Errorf("BERTH_STATE_DIR: %w", err)
	}
	return nil
}

// render prints the files for the current Docker state, sorted by name.
func render(s settings, stdout io.Writer, log *logrus.Entry) int {
	engine, err := controller.NewDockerEngine()
	if engine != nil {
		engine.ReadEnv = s.NginxProxyEnv
	}
	if err != nil {
		log.WithError(err).Error("render")
		return 1
	}
	defer engine.Close()
	opts := s.controllerOptions()
	if s.certsEnabled() {
		// The same certificates the daemon serves, read from the store;
		// nothing is ordered (the manager does not run).
		mgr, err := newManager(s, log, nil, nil)
		if err != nil {
			log.WithError(err).Error("render")
			return 1
		}
		opts.Certs = certificates{mgr, !s.acmeEnabled()}
	}
	files, err := controller.Render(context.Background(), engine, newNginx(engine, s), opts, log)
	if err != nil {
		log.WithError(err).Error("render")
		return 1
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(stdout, "# ==> %s <==\n%s\n", filepath.Join(s.ConfDir, n), files[n])
	}
	return 0
}
