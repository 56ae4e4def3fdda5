package agent

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/berthproxy/berth/controller"
	"github.com/berthproxy/berth/nginxconf"
)

// fakeSwarm lists the agents a test runs, by task ID.
type fakeSwarm struct {
	mu     sync.Mutex
	agents []controller.AgentTask
}

func (f *fakeSwarm) Agents(context.Context, []string) ([]controller.AgentTask, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]controller.AgentTask(nil), f.agents...), nil
}

func (f *fakeSwarm) NginxService(context.Context, string) (controller.Container, error) {
	return controller.Container{ID: "svc", Name: "nginx", Running: true, Networks: map[string]string{"proxy": ""}}, nil
}

// fleetAgent is a real agent handler behind a recorder of what crossed
// the wire.
type fleetAgent struct {
	testAgent
	mu     sync.Mutex
	pushes int
	bodies []string
}

func newFleetAgent(t *testing.T) *fleetAgent {
	t.Helper()
	eng := &fakeEngine{}
	a := &fleetAgent{testAgent: testAgent{confDir: t.TempDir(), certsDir: t.TempDir(), webroot: t.TempDir(), eng: eng}}
	eng.confDir = a.confDir
	node := controller.NewNode(eng, controller.NewNginx(eng, "", "", ""), a.confDir)
	srv, err := New(node, Options{Secret: testSecret, CertsDir: a.certsDir, Webroot: a.webroot}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		a.mu.Lock()
		if r.URL.Path == "/v1/config" {
			a.pushes++
		}
		a.bodies = append(a.bodies, string(body))
		a.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	a.url = hs.URL
	return a
}

func (a *fleetAgent) pushCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pushes
}

// testFleet is a Fleet over agents, each addressed by its task ID.
func testFleet(t *testing.T, certsDir string, agents ...*fleetAgent) (*Fleet, *fakeSwarm, map[string]*fleetAgent) {
	t.Helper()
	sw := &fakeSwarm{}
	byID := map[string]*fleetAgent{}
	for i, a := range agents {
		id := string(rune('a' + i))
		byID[id] = a
		sw.agents = append(sw.agents, controller.AgentTask{ID: id, Node: "node-" + id, Addr: id})
	}
	f := NewFleet(sw, FleetOptions{Secret: testSecret, CertsDir: certsDir})
	f.baseURL = func(a controller.AgentTask) string {
		if ag, ok := byID[a.ID]; ok {
			return ag.url
		}
		return "http://127.0.0.1:1" // refused
	}
	return f, sw, byID
}

func defaultFiles(hosts ...string) nginxconf.Files {
	files := nginxconf.Files{nginxconf.DefaultFile: []byte("# default\n")}
	for _, h := range hosts {
		files["berth-"+h+".conf"] = []byte("# " + h + "\n")
	}
	return files
}

func TestFleetPushesEveryAgentOnceAndCatchesUpANewOne(t *testing.T) {
	a, b, c := newFleetAgent(t), newFleetAgent(t), newFleetAgent(t)
	f, sw, _ := testFleet(t, t.TempDir(), a, b, c)
	sw.agents = sw.agents[:2] // c's node joins later
	ctx := context.Background()
	files := defaultFiles("app.test")
	if err := f.Apply(ctx, files, quietLog()); err != nil {
		t.Fatal(err)
	}
	for name, ag := range map[string]*fleetAgent{"a": a, "b": b} {
		if got := ag.files(t); string(got["berth-app.test.conf"]) != "# app.test\n" {
			t.Fatalf("agent %s lacks the site: %v", name, got)
		}
	}
	if err := f.Apply(ctx, files, quietLog()); err != nil {
		t.Fatal(err)
	}
	if a.pushCount() != 1 || b.pushCount() != 1 {
		t.Fatalf("pushes a=%d b=%d after the same files twice; want 1 each (acknowledged bytes are not pushed again)", a.pushCount(), b.pushCount())
	}
	sw.agents = append(sw.agents, controller.AgentTask{ID: "c", Node: "node-c", Addr: "c"})
	if err := f.Apply(ctx, files, quietLog()); err != nil {
		t.Fatal(err)
	}
	if a.pushCount() != 1 || c.pushCount() != 1 {
		t.Fatalf("pushes a=%d c=%d after c joined; want only c pushed", a.pushCount(), c.pushCount())
	}
	if got := c.files(t); string(got["berth-app.test.conf"]) != "# app.test\n" {
		t.Fatalf("the new node lacks the site: %v", got)
	}
}

func TestFleetFailsNamingTheAgentItCannotReachAndTheOthersLand(t *testing.T) {
	a := newFleetAgent(t)
	f, sw, _ := testFleet(t, t.TempDir(), a)
	sw.agents = append(sw.agents, controller.AgentTask{ID: "gone", Node: "node-gone", Addr: "10.9.9.9"})
	err := f.Apply(context.Background(), defaultFiles("app.test"), quietLog())
	if err == nil || !strings.Contains(err.Error(), "node-gone") {
		t.Fatalf("Apply with an unreachable agent: %v; want an error naming its node", err)
	}
	if got := a.files(t); got["berth-app.test.conf"] == nil {
		t.Fatal("the reachable agent did not get the files")
	}
}

func TestFleetSendsCertificateFilesSealed(t *testing.T) {
	certsDir := t.TempDir()
	key := "-----BEGIN EC PRIVATE KEY-----\nsecret-key-bytes\n-----END EC PRIVATE KEY-----\n"
	chain := "-----BEGIN CERTIFICATE-----\nchain\n-----END CERTIFICATE-----\n"
	dir := filepath.Join(certsDir, ".berth", "app.test", "v1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "privkey.pem"), []byte(key), 0o600)
	os.WriteFile(filepath.Join(dir, "fullchain.pem"), []byte(chain), 0o644)
	files := defaultFiles()
	files["berth-app.test.conf"] = []byte("server {\n  ssl_certificate " + filepath.Join(dir, "fullchain.pem") + ";\n  ssl_certificate_key " + filepath.Join(dir, "privkey.pem") + ";\n}\n")
	a := newFleetAgent(t)
	f, _, _ := testFleet(t, certsDir, a)
	if err := f.Apply(context.Background(), files, quietLog()); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(a.certsDir, ".berth", "app.test", "v1", "privkey.pem"))
	if err != nil || string(got) != key {
		t.Fatalf("the agent's copy of the key: %q, %v", got, err)
	}
	fi, _ := os.Stat(filepath.Join(a.certsDir, ".berth", "app.test", "v1", "privkey.pem"))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v; want 0600", fi.Mode().Perm())
	}
	for _, body := range a.bodies {
		if strings.Contains(body, "PRIVATE KEY") || strings.Contains(body, "secret-key-bytes") {
			t.Fatalf("the private key crossed the wire in clear: %.200s", body)
		}
	}
}

func TestSealedCertificatesOpenOnlyWithTheSecretAndPath(t *testing.T) {
	sealed, err := sealCerts(testSecret, map[string]string{"a/privkey.pem": "KEY", "b/privkey.pem": "OTHER"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := openCerts(testSecret, sealed); err != nil || got["a/privkey.pem"] != "KEY" {
		t.Fatalf("open: %v, %v", got, err)
	}
	if _, err := openCerts([]byte("another secret"), sealed); err == nil {
		t.Fatal("opened with another secret")
	}
	swapped := map[string]string{"b/privkey.pem": sealed["a/privkey.pem"]}
	if _, err := openCerts(testSecret, swapped); err == nil || !strings.Contains(err.Error(), "b/privkey.pem") {
		t.Fatalf("a sealed file moved to another path: %v; want an error naming the path", err)
	}
}

func TestFleetPushesAboveAGenerationTakenFromAnotherManager(t *testing.T) {
	a := newFleetAgent(t)
	if _, err := Push(context.Background(), a.url, testSecret, Payload{Generation: math.MaxUint64 / 2, Files: map[string]string{nginxconf.DefaultFile: "# old\n"}}); err != nil {
		t.Fatal(err)
	}
	f, _, _ := testFleet(t, t.TempDir(), a)
	if err := f.Apply(context.Background(), defaultFiles("app.test"), quietLog()); err != nil {
		t.Fatalf("Apply after a manager with a clock far ahead: %v", err)
	}
	if got := a.files(t); got["berth-app.test.conf"] == nil {
		t.Fatal("the files did not land")
	}
}

func TestFleetChallengesReachEveryAgent(t *testing.T) {
	a, b := newFleetAgent(t), newFleetAgent(t)
	f, sw, _ := testFleet(t, t.TempDir(), a, b)
	if err := f.Present("app.test", "tok123", "tok123.key"); err != nil {
		t.Fatal(err)
	}
	for _, ag := range []*fleetAgent{a, b} {
		data, err := os.ReadFile(filepath.Join(ag.webroot, ".well-known", "acme-challenge", "tok123"))
		if err != nil || string(data) != "tok123.key" {
			t.Fatalf("token on an agent: %q, %v", data, err)
		}
	}
	if err := f.CleanUp("app.test", "tok123", "tok123.key"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(a.webroot, ".well-known", "acme-challenge", "tok123")); !os.IsNotExist(err) {
		t.Fatalf("token left after CleanUp: %v", err)
	}
	sw.agents = append(sw.agents, controller.AgentTask{ID: "gone", Node: "node-gone", Addr: "x"})
	if err := f.Present("app.test", "tok456", "k"); err == nil || !strings.Contains(err.Error(), "node-gone") {
		t.Fatalf("Present with an unreachable agent: %v; want an error naming it (the CA may reach that node)", err)
	}
	sw.agents = nil
	if err := f.Present("app.test", "tok789", "k"); err == nil {
		t.Fatal("Present with no agent succeeded")
	}
}

func TestFleetNginxIsTheServiceWithTheLeastCapableBuild(t *testing.T) {
	a := newFleetAgent(t)
	f, sw, _ := testFleet(t, t.TempDir(), a)
	svc, build, err := f.Nginx(context.Background())
	if err != nil || svc.Name != "nginx" || !strings.Contains(build, "nginx/1.22.1") {
		t.Fatalf("Nginx: %+v %q %v", svc, build, err)
	}
	sw.agents = nil
	if _, _, err := f.Nginx(context.Background()); err == nil || !strings.Contains(err.Error(), "agent") {
		t.Fatalf("Nginx without agents: %v; want an error saying no agent runs", err)
	}
	old := "nginx version: nginx/1.22.1\nconfigure arguments: --with-http_v2_module"
	newer := "nginx version: nginx/1.30.0\nconfigure arguments: --with-http_v2_module"
	if got := LeastBuild([]string{newer, old}); got != old {
		t.Fatalf("LeastBuild picked %q; want the 1.22 build", got)
	}
}
