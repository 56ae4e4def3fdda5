package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berthproxy/berth/agent"
	"github.com/berthproxy/berth/internal/testenv"
	"github.com/berthproxy/berth/nginxconf"
)

// agentSecret is the shared secret of the agent test, mounted as Docker
// mounts a secret: a file under /run/secrets.
var agentSecret = []byte("e2e-agent-secret")

// newAgentStack starts nginx (found by its proxy.nginx=true label, as on a
// Swarm node) and `berth agent` beside it on the stack's network, with the
// agent's port published on 127.0.0.1, and returns the agent's URL once its
// /healthz says it has confirmed nginx.
func newAgentStack(t *testing.T) (*stack, string) {
	testenv.RequireDocker(t)
	leftovers.Do(func() { testenv.CleanupLeftovers(t) })
	nginxImg, berthImg := testenv.NginxImage(t, "bookworm"), testenv.BerthImage(t)
	s := &stack{t: t, id: randomID(), backendImg: testenv.BackendImage(t), client: newClient(requestTimeout)}
	t.Cleanup(s.teardown)
	s.network = s.createNetwork("berth-e2e-" + s.id)
	conf, webroot, certs := s.createVolume("conf"), s.createVolume("webroot"), s.createVolume("certs")
	shared := []string{"-v", conf + ":" + confDir, "-v", webroot + ":" + webrootDir, "-v", certs + ":" + certsDir}
	s.nginx = "berth-e2e-nginx-" + s.id
	s.runContainer(s.nginx, slices.Concat([]string{"--network", s.network, "--label", "proxy.nginx=true",
		"-p", "127.0.0.1::80", "-p", "127.0.0.1::443"}, shared, []string{nginxImg})...)
	secrets := t.TempDir()
	if err := os.WriteFile(filepath.Join(secrets, "berth-agent"), append(agentSecret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	s.berth = "berth-e2e-agent-" + s.id
	s.runContainer(s.berth, slices.Concat([]string{"--network", s.network, "-p", "127.0.0.1::9181",
		"-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", secrets + ":/run/secrets:ro"},
		shared, []string{berthImg, "agent"})...)
	s.refreshPort()
	port, err := publishedPort(s.berth, "9181/tcp")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://127.0.0.1:" + port
	start := time.Now()
	testenv.Eventually(t, converge, func() error {
		resp, err := s.client.Get(url + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("agent /healthz: %d", resp.StatusCode)
		}
		return nil
	})
	t.Logf("agent %s confirmed nginx after %v", s.id, since(start))
	// The image's HEALTHCHECK, `berth health`, must find the agent healthy.
	if out, err := testenv.TryDocker("exec", s.berth, "/berth", "health"); err != nil {
		t.Fatalf("berth health in the agent's container: %v %s", err, out)
	}
	return s, url
}

// agentPush renders sites as the manager would for a node, plus extra raw
// files, into a push of generation gen.
func agentPush(t *testing.T, gen uint64, extra map[string]string, sites ...nginxconf.Site) agent.Payload {
	t.Helper()
	files, errs := nginxconf.Render(nginxconf.Config{Webroot: webrootDir, Sites: sites})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	p := agent.Payload{Generation: gen, Files: extra}
	if p.Files == nil {
		p.Files = map[string]string{}
	}
	for name, data := range files {
		p.Files[name] = string(data)
	}
	return p
}

// The agent in its container, on the real engine: it finds its nginx by
// label, lands a pushed site with its certificate, keeps serving when a
// push carries a file nginx rejects (and says which), refuses a forged
// push, and serves a challenge token through nginx.
func TestAgentAppliesPushesToTheNginxOnItsEngine(t *testing.T) {
	s, url := newAgentStack(t)
	ctx := context.Background()
	app, other := s.run(backend{name: "app"}), s.run(backend{name: "other"})
	chain, key, cert := testenv.SelfSigned(t, "app.test", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	appSite := nginxconf.Site{Host: "app.test", HTTPS: nginxconf.HTTPSBoth,
		TLS:       &nginxconf.TLS{CertFile: certsDir + "/app.test/1/fullchain.pem", KeyFile: certsDir + "/app.test/1/privkey.pem"},
		Locations: []nginxconf.Location{{Path: "/", Backends: []string{s.ip(app) + ":80"}}}}

	p := agentPush(t, 1, nil, appSite)
	p.Certs = map[string]string{"app.test/1/fullchain.pem": string(chain), "app.test/1/privkey.pem": string(key)}
	start := time.Now()
	resp, err := agent.Push(ctx, url, agentSecret, p)
	if err != nil || resp.Result != agent.ResultOK {
		t.Fatalf("push of app.test: %+v, %v; want ok", resp, err)
	}
	t.Logf("push of app.test with its certificate answered after %v", since(start))
	s.expectServed("app.test", "/", "app")
	if r, _, err := s.getTLS("app.test", "/", roots); err != nil || r.backend() != "app" {
		t.Fatalf("https://app.test: %v, %v; want app with the pushed certificate", r, err)
	}

	otherSite := nginxconf.Site{Host: "other.test", HTTPS: nginxconf.HTTPSOff, Locations: []nginxconf.Location{{Path: "/", Backends: []string{s.ip(other) + ":80"}}}}
	bad := map[string]string{"berth-bad.test.conf": "server {\n    bogus_directive on;\n}\n"}
	resp, err = agent.Push(ctx, url, agentSecret, agentPush(t, 2, bad, appSite, otherSite))
	if err != nil || resp.Result != agent.ResultRejected || !slices.Equal(resp.Held, []string{"berth-bad.test.conf"}) {
		t.Fatalf("push with a bad file: %+v, %v; want rejected with berth-bad.test.conf held", resp, err)
	}
	s.expectServed("other.test", "/", "other")
	s.expectServed("app.test", "/", "app")

	_, err = agent.Push(ctx, url, []byte("forged"), agentPush(t, 3, nil))
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("forged push: %v; want HTTP 401", err)
	}
	if _, err := s.servedBy("app.test", "/", "app"); err != nil {
		t.Fatalf("after the forged push: %v", err)
	}

	if err := agent.PutChallenge(ctx, url, agentSecret, "e2e-Tok_1", "e2e-Tok_1.thumbprint"); err != nil {
		t.Fatal(err)
	}
	r, err := s.get("other.test", "/.well-known/acme-challenge/e2e-Tok_1")
	if err != nil || r.status != http.StatusOK || strings.TrimSpace(r.body) != "e2e-Tok_1.thumbprint" {
		t.Fatalf("challenge token through nginx: %v, %v", r, err)
	}
}
