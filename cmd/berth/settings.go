package main

import (
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/acme"
	"github.com/berthproxy/berth/controller"
)

// settings are the controller settings of DESIGN.md: each flag's default
// comes from its environment variable, and the flag wins.
type settings struct {
	ConfDir, CertsDir, Webroot, StateDir string
	UserCertsDir                         string
	NginxContainer                       string
	ACMEEmail, ACMECA, ACMECARoots       string
	ACMEEABKID, ACMEEABHMAC              string
	ACMEKeyType, ACMEProfile             string
	ACMEDNSProvider                      string   // BERTH_ACME_DNS_PROVIDER: a lego DNS provider name
	ACMEDNSResolvers                     []string // BERTH_ACME_DNS_RESOLVERS, host:port
	ACMEDNSHelper                        string   // BERTH_ACME_DNS_HELPER: the berth-dns program
	ProbeAddr                            string
	TrustedProxies                       []string            // BERTH_TRUSTED_PROXIES, validated CIDRs
	Defaults                             controller.Defaults // the labels' global defaults, validated
	RoutesFile                           string
	HTTPAddr                             string // BERTH_HTTP_ADDR; "" serves no HTTP
	NginxProxyEnv                        bool
	Swarm                                bool                // BERTH_SWARM=on: read Swarm services, push to agents
	AgentSecretFile                      string              // BERTH_AGENT_SECRET_FILE, shared with the agents
	SwarmStoreKeyFile                    string              // BERTH_SWARM_STORE_KEY_FILE: seals the certificates kept in Swarm
	AgentPort                            int                 // BERTH_SWARM_AGENT_PORT
	roots                                []*x509.Certificate // parsed BERTH_ACME_CA_ROOTS
	LogLevel, LogFormat                  string
	Resync                               time.Duration
	args                                 []string // positional arguments
}

func parseSettings(cmd string, args []string, stderr io.Writer) (settings, error) {
	s, err := parseSettingsWith(cmd, args, stderr, nil)
	if err == nil && len(s.args) > 0 {
		return s, fmt.Errorf("unexpected argument %q", s.args[0])
	}
	return s, err
}

// parseSettingsWith parses the common settings plus a command's own flags.
func parseSettingsWith(cmd string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("berth "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	str := envFlag(fs)
	str(&s.ConfDir, "conf-dir", "BERTH_CONF_DIR", "/etc/nginx/conf.d", "nginx conf.d volume; berth owns only berth-*.conf there")
	str(&s.CertsDir, "certs-dir", "BERTH_CERTS_DIR", "/etc/nginx/certs", "certificate volume, same path in nginx")
	str(&s.UserCertsDir, "user-certs-dir", "BERTH_USER_CERTS_DIR", "/etc/nginx/user-certs", "read-only directory of your own certificates (<host>.crt + .key, or <name>/fullchain.pem + privkey.pem); never renewed or deleted")
	str(&s.Webroot, "webroot", "BERTH_WEBROOT", "/var/www/acme", "HTTP-01 webroot volume, same path in nginx")
	str(&s.StateDir, "state-dir", "BERTH_STATE_DIR", "/var/lib/berth", "berth's own state")
	str(&s.NginxContainer, "nginx-container", "BERTH_NGINX_CONTAINER", "", "nginx container name or ID (default: the running container labelled proxy.nginx=true)")
	str(&s.ACMEEmail, "acme-email", "BERTH_ACME_EMAIL", "", "ACME account contact")
	str(&s.ACMECA, "acme-ca", "BERTH_ACME_CA", "letsencrypt", "ACME directory URL, letsencrypt, letsencrypt-staging, or off (no certificates)")
	str(&s.ACMECARoots, "acme-ca-roots", "BERTH_ACME_CA_ROOTS", "", "PEM file of extra roots to trust for the CA")
	str(&s.ACMEEABKID, "acme-eab-kid", "BERTH_ACME_EAB_KID", "", "External Account Binding key ID, for CAs that require it")
	str(&s.ACMEEABHMAC, "acme-eab-hmac", "BERTH_ACME_EAB_HMAC", "", "External Account Binding HMAC key (base64url)")
	str(&s.ACMEKeyType, "acme-key-type", "BERTH_ACME_KEY_TYPE", "ec256", "certificate key type: ec256, ec384, rsa2048, rsa3072, rsa4096")
	str(&s.ACMEProfile, "acme-profile", "BERTH_ACME_PROFILE", "", "ACME certificate profile (empty: the CA's default)")
	str(&s.Defaults.ACMEChallenge, "acme-challenge", "BERTH_ACME_CHALLENGE", "http-01", "default of proxy.acme-challenge: http-01 or dns-01 (wildcards always use dns-01)")
	str(&s.ACMEDNSProvider, "acme-dns-provider", "BERTH_ACME_DNS_PROVIDER", "", "lego DNS provider for DNS-01 (rfc2136, cloudflare, route53, …), configured by its own variables")
	str(&s.ACMEDNSHelper, "acme-dns-helper", "BERTH_ACME_DNS_HELPER", defaultDNSHelper(), "the berth-dns program that runs the DNS provider")
	resolvers := envOr("BERTH_ACME_DNS_RESOLVERS", "")
	fs.Func("acme-dns-resolvers", "comma-separated host:port resolvers where DNS-01 propagation is checked (env BERTH_ACME_DNS_RESOLVERS; default the system's)", func(v string) error {
		resolvers = v
		return nil
	})
	str(&s.ProbeAddr, "probe-addr", "BERTH_PROBE_ADDR", "", "host:port where berth reaches nginx's port 80 for the challenge self-check (default: the nginx container's address)")
	str(&s.LogLevel, "log-level", "BERTH_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&s.LogFormat, "log-format", "BERTH_LOG_FORMAT", "text", "text or json")
	str(&s.Defaults.MaxBodySize, "max-body-size", "BERTH_MAX_BODY_SIZE", "0", "default of proxy.max-body-size: nginx size, 0 = no limit")
	str(&s.Defaults.ConnectTimeout, "proxy-connect-timeout", "BERTH_PROXY_CONNECT_TIMEOUT", "", "default of proxy.connect-timeout (empty: not rendered)")
	str(&s.Defaults.ReadTimeout, "proxy-read-timeout", "BERTH_PROXY_READ_TIMEOUT", "", "default of proxy.read-timeout (empty: not rendered)")
	str(&s.Defaults.SendTimeout, "proxy-send-timeout", "BERTH_PROXY_SEND_TIMEOUT", "", "default of proxy.send-timeout (empty: not rendered)")
	str(&s.Defaults.HSTS, "hsts", "BERTH_HSTS", controller.DefaultHSTS, "default of proxy.hsts: off or max-age=N[; includeSubDomains][; preload]")
	str(&s.HTTPAddr, "http-addr", "BERTH_HTTP_ADDR", "", "address for /metrics, /status, /healthz and the status page, e.g. :9180 (empty: off)")
	str(&s.RoutesFile, "routes-file", "BERTH_ROUTES_FILE", "", "YAML file of routes to backends that are not containers (watched)")
	nginxProxyEnv := envOr("BERTH_NGINX_PROXY_ENV", "off")
	fs.Func("nginx-proxy-env", "on also reads nginx-proxy / acme-companion variables (VIRTUAL_HOST, LETSENCRYPT_HOST, …) of containers (env BERTH_NGINX_PROXY_ENV, default off)", func(v string) error {
		nginxProxyEnv = v
		return nil
	})
	snippets := envOr("BERTH_SNIPPETS", "off")
	fs.Func("snippets", "on allows proxy.server-snippet and proxy.location-snippet: anyone who can label a container then controls nginx (env BERTH_SNIPPETS, default off)", func(v string) error {
		snippets = v
		return nil
	})
	trusted := envOr("BERTH_TRUSTED_PROXIES", "")
	fs.Func("trusted-proxies", "comma-separated CIDRs of a CDN or load balancer in front whose X-Forwarded-For is honoured (env BERTH_TRUSTED_PROXIES)", func(v string) error {
		trusted = v
		return nil
	})
	resync := envOr("BERTH_RESYNC", controller.DefaultResync.String())
	fs.Func("resync", fmt.Sprintf("period of the full resync (env BERTH_RESYNC, default %s)", resync), func(v string) error {
		resync = v
		return nil
	})
	swarmMode := envOr("BERTH_SWARM", "off")
	fs.Func("swarm", "on: run as the Swarm manager's berth: read services, push to the agents on every node (env BERTH_SWARM, default off)", func(v string) error {
		swarmMode = v
		return nil
	})
	str(&s.AgentSecretFile, "agent-secret-file", "BERTH_AGENT_SECRET_FILE", "/run/secrets/berth-agent", "with BERTH_SWARM=on: the secret shared with the agents (a Docker secret)")
	str(&s.SwarmStoreKeyFile, "swarm-store-key-file", "BERTH_SWARM_STORE_KEY_FILE", "/run/secrets/berth-store-key", "with BERTH_SWARM=on: the key sealing the certificates and account kept in Swarm (a Docker secret)")
	agentPort := envOr("BERTH_SWARM_AGENT_PORT", "9181")
	fs.Func("swarm-agent-port", "with BERTH_SWARM=on: the port the agents listen on (env BERTH_SWARM_AGENT_PORT, default 9181)", func(v string) error {
		agentPort = v
		return nil
	})
	if extra != nil {
		extra(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: berth %s [flags]%s\n\nFlags:\n", cmd, map[string]string{"renew": " HOST", "revoke": " HOST", "why": " NAME", "import": " DIR"}[cmd])
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	s.args = fs.Args()
	d, err := time.ParseDuration(resync)
	if err != nil || d < time.Second {
		return s, fmt.Errorf("BERTH_RESYNC %q: want a duration of at least 1s, like 30s", resync)
	}
	s.Resync = d
	switch nginxProxyEnv {
	case "on", "off":
		s.NginxProxyEnv = nginxProxyEnv == "on"
	default:
		return s, fmt.Errorf("BERTH_NGINX_PROXY_ENV %q: want on or off", nginxProxyEnv)
	}
	switch swarmMode {
	case "on", "off":
		s.Swarm = swarmMode == "on"
	default:
		return s, fmt.Errorf("BERTH_SWARM %q: want on or off", swarmMode)
	}
	if n, perr := strconv.Atoi(agentPort); perr != nil || n < 1 || n > 65535 {
		return s, fmt.Errorf("BERTH_SWARM_AGENT_PORT %q: want a port number", agentPort)
	} else {
		s.AgentPort = n
	}
	switch snippets {
	case "on", "off":
		s.Defaults.Snippets = snippets == "on"
	default:
		return s, fmt.Errorf("BERTH_SNIPPETS %q: want on or off", snippets)
	}
	if s.Swarm && s.Defaults.ConnectTimeout == "" {
		s.Defaults.ConnectTimeout = swarmConnectTimeout
	}
	if s.Defaults, err = s.Defaults.Validate(); err != nil {
		return s, err
	}
	if s.TrustedProxies, err = controller.ParseAddrs(trusted); err != nil {
		return s, fmt.Errorf("BERTH_TRUSTED_PROXIES: %w", err)
	}
	if s.ACMEDNSResolvers, err = parseResolvers(resolvers); err != nil {
		return s, err
	}
	if s.Defaults.ACMEChallenge == controller.ChallengeDNS01 && s.ACMEDNSProvider == "" {
		return s, fmt.Errorf("BERTH_ACME_CHALLENGE=dns-01 needs BERTH_ACME_DNS_PROVIDER (a lego DNS provider name, e.g. rfc2136 or cloudflare)")
	}
	if (s.ACMEEABKID == "") != (s.ACMEEABHMAC == "") {
		return s, fmt.Errorf("BERTH_ACME_EAB_KID and BERTH_ACME_EAB_HMAC go together: set both or neither")
	}
	if s.ACMECARoots != "" {
		if s.roots, err = acme.ParseRoots(s.ACMECARoots); err != nil {
			return s, err
		}
	}
	return s, nil
}

// accountConfig is the ACME account and CA configuration.
func (s settings) accountConfig() acme.AccountConfig {
	return acme.AccountConfig{
		CA: s.ACMECA, Email: s.ACMEEmail, Roots: s.roots, EABKID: s.ACMEEABKID, EABHMAC: s.ACMEEABHMAC,
		KeyType: s.ACMEKeyType, Profile: s.ACMEProfile, StateDir: s.StateDir, Webroot: s.Webroot,
		DNS: acme.NewDNSSolver(s.ACMEDNSProvider, s.ACMEDNSResolvers, s.ACMEDNSHelper),
	}
}

// parseResolvers reads BERTH_ACME_DNS_RESOLVERS: comma-separated host:port
// (a bare host gets port 53), naming the first entry that is neither.
func parseResolvers(v string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		host, port, err := net.SplitHostPort(part)
		if err != nil {
			host, port = strings.Trim(part, "[]"), "53"
		}
		if n, perr := strconv.Atoi(port); perr != nil || n < 1 || n > 65535 || host == "" || strings.ContainsAny(host, " /") {
			return nil, fmt.Errorf("BERTH_ACME_DNS_RESOLVERS: %q is not host:port", part)
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	return out, nil
}

// swarmConnectTimeout is BERTH_PROXY_CONNECT_TIMEOUT's default on a Swarm.
// A task on a node that died stays in the upstreams until Swarm marks the
// node down and berth pushes (15-20 s), and a connection to its overlay
// address is not refused but unanswered: with nginx's own 60 s every
// request nginx sends there hangs. A second is ample to connect across a
// cluster's network; then nginx tries the next replica and avoids the dead
// one for fail_timeout (10 s).
const swarmConnectTimeout = "1s"

// acmeEnabled is false when BERTH_ACME_CA=off: no certificates at all.
func (s settings) acmeEnabled() bool { return s.ACMECA != "off" }

// certsEnabled: berth serves certificates, ordered or the user's own. With
// BERTH_ACME_CA=off only when the user certificate directory exists, so
// an HTTP-only berth writes nothing to the certificate volume.
func (s settings) certsEnabled() bool {
	if s.acmeEnabled() {
		return true
	}
	fi, err := os.Stat(s.UserCertsDir)
	return err == nil && fi.IsDir()
}

// snippetWarning is logged at start with BERTH_SNIPPETS=on: the snippet
// labels splice raw directives into nginx, so labelling is then root over nginx.
const snippetWarning = "BERTH_SNIPPETS=on: anyone who can label a container controls nginx (proxy.server-snippet, proxy.location-snippet)"

// warnAtStart logs what the settings make dangerous.
func (s settings) warnAtStart(log *logrus.Entry) {
	if s.Defaults.Snippets {
		log.Warn(snippetWarning)
	}
}

// envFlag returns a definer of string flags whose default is read from an
// environment variable, which the help text names.
func envFlag(fs *flag.FlagSet) func(p *string, name, env, def, help string) {
	return func(p *string, name, env, def, help string) {
		fs.StringVar(p, name, envOr(env, def), fmt.Sprintf("%s (env %s)", help, env))
	}
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func (s settings) controllerOptions() controller.Options {
	return controller.Options{
		ConfDir:        s.ConfDir,
		Webroot:        s.Webroot,
		NginxName:      s.NginxContainer,
		Resync:         s.Resync,
		TrustedProxies: s.TrustedProxies,
		Defaults:       s.Defaults,
		NginxProxyEnv:  s.NginxProxyEnv,
		RoutesFile:     s.RoutesFile,
	}
}

// defaultDNSHelper is berth-dns beside this executable, where the image
// puts it (/berth-dns); it is a program of its own (cmd/berth-dns says why).
func defaultDNSHelper() string {
	exe, err := os.Executable()
	if err != nil {
		return "berth-dns"
	}
	return filepath.Join(filepath.Dir(exe), "berth-dns")
}
