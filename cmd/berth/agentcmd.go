package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/agent"
	"github.com/berthproxy/berth/controller"
	"github.com/berthproxy/berth/nginxconf"
)

// agentSettings are what `berth agent` needs: where the node's nginx reads
// its files, which nginx, and how the manager reaches and authenticates to
// it. No ACME setting: the manager orders, the agent only writes.
type agentSettings struct {
	ConfDir, CertsDir, Webroot string
	StateDir                   string // the health socket and the last generation taken
	NginxContainer             string
	Addr, SecretFile           string
	LogLevel, LogFormat        string
}

func parseAgentSettings(args []string, stderr io.Writer) (agentSettings, error) {
	var s agentSettings
	fs := flag.NewFlagSet("berth agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	str := envFlag(fs)
	str(&s.ConfDir, "conf-dir", "BERTH_CONF_DIR", "/etc/nginx/conf.d", "this node's nginx conf.d volume; the agent owns only berth-* files there")
	str(&s.CertsDir, "certs-dir", "BERTH_CERTS_DIR", "/etc/nginx/certs", "certificate volume, same path in nginx; pushed certificates go here")
	str(&s.Webroot, "webroot", "BERTH_WEBROOT", "/var/www/acme", "HTTP-01 webroot volume, same path in nginx")
	str(&s.StateDir, "state-dir", "BERTH_STATE_DIR", "/var/lib/berth", "the agent's state: the last generation taken, the socket of `berth health`")
	str(&s.NginxContainer, "nginx-container", "BERTH_NGINX_CONTAINER", "", "nginx container name or ID on this node (default: the running container labelled proxy.nginx=true)")
	str(&s.Addr, "agent-addr", "BERTH_AGENT_ADDR", agent.DefaultAddr, "address the manager pushes to")
	str(&s.SecretFile, "agent-secret-file", "BERTH_AGENT_SECRET_FILE", "/run/secrets/berth-agent", "file holding the secret shared with the manager (a Docker secret)")
	str(&s.LogLevel, "log-level", "BERTH_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&s.LogFormat, "log-format", "BERTH_LOG_FORMAT", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return s, nil
}

// agentCmd runs the Swarm agent until SIGTERM or SIGINT. It refuses to
// start without a secret: an agent that took configuration from anyone
// would hand nginx to whoever reaches its port.
func agentCmd(args []string, stderr io.Writer) int {
	s, err := parseAgentSettings(args, stderr)
	log, code := startLogging(err, s.LogLevel, s.LogFormat, "berth agent", stderr)
	if log == nil {
		return code
	}
	secret, err := agent.ReadSecret(s.SecretFile)
	if err != nil {
		fmt.Fprintln(stderr, "berth agent: cannot start:", err)
		return 1
	}
	if err := prepareAgentDirs(s); err != nil {
		log.WithError(err).Error("cannot start")
		return 1
	}
	engine, err := controller.NewDockerEngine()
	if err != nil {
		log.WithError(err).Error("cannot start")
		return 1
	}
	defer engine.Close()
	for _, name := range removeLeftovers(s.ConfDir) {
		log.WithField("file", name).Info("removed a temporary file left by an interrupted write")
	}
	node := controller.NewNode(engine, newNginx(engine, settings{NginxContainer: s.NginxContainer}), s.ConfDir)
	srv, err := agent.New(node, agent.Options{Secret: secret, CertsDir: s.CertsDir, Webroot: s.Webroot,
		GenerationFile: filepath.Join(s.StateDir, "agent-generation")}, log.WithField("component", "agent"))
	if err != nil {
		log.WithError(err).Error("cannot start")
		return 1
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		log.WithError(err).Error("cannot start: BERTH_AGENT_ADDR")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.WithFields(logrus.Fields{"version": version, "conf_dir": s.ConfDir, "addr": ln.Addr().String()}).Info("berth agent starting")
	serveHTTP(ctx, ln, srv.Handler(), log)
	// The image's HEALTHCHECK runs `berth health`, which asks the state
	// dir's socket for /healthz: the same handler answers there, so the
	// agent's container is healthy exactly when its nginx is confirmed.
	if sock, err := listenSocket(s.StateDir); err != nil {
		log.WithError(err).Warn("no health socket: berth health will report the agent unhealthy")
	} else {
		serveHTTP(ctx, sock, srv.Handler(), log)
	}
	<-ctx.Done()
	srv.Drain()
	log.Info("berth agent stopped; nginx config left in place")
	return 0
}

// removeLeftovers clears the temporary files of a write interrupted by a
// kill: the agent is the conf dir's one writer on this node.
func removeLeftovers(dir string) []string {
	removed, _ := nginxconf.RemoveLeftovers(dir, time.Now())
	return removed
}

// prepareAgentDirs checks the conf dir exists (it is nginx's) and creates
// the certificate and challenge directories the manager's pushes fill and
// the agent's state dir.
func prepareAgentDirs(s agentSettings) error {
	if err := prepareDirs(settings{ConfDir: s.ConfDir, Webroot: s.Webroot, ACMECA: "off"}); err != nil {
		return err
	}
	if err := os.MkdirAll(s.CertsDir, 0o755); err != nil {
		return fmt.Errorf("BERTH_CERTS_DIR: %w", err)
	}
	if err := os.MkdirAll(s.StateDir, 0o700); err != nil {
		return fmt.Errorf("BERTH_STATE_DIR: %w", err)
	}
	return nil
}
