package testenv

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestHashOfSeparatesParts(t *testing.T) {
	if hashOf("ab", "c") == hashOf("a", "bc") {
		t.Error(`hashOf("ab", "c") == hashOf("a", "bc"): parts are not delimited`)
	}
	if hashOf("x") != hashOf("x") {
		t.Error("hashOf is not deterministic")
	}
}

func TestProgressLogsMilestonesAndKeepsTail(t *testing.T) {
	var logged []string
	p := newProgress(func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) },
		"cmd", regexp.MustCompile(`^Step`))
	for i := 0; i < 100; i++ {
		fmt.Fprintf(p, "noise %d\n", i)
	}
	fmt.Fprint(p, "Step 1/2 : FROM x\nnoise tail")
	fmt.Fprint(p, "\n")
	if len(logged) != 1 || logged[0] != "cmd: Step 1/2 : FROM x" {
		t.Errorf("logged %q, want only the milestone", logged)
	}
	tail := strings.Split(p.lastLines(), "\n")
	if len(tail) != tailLines || tail[len(tail)-1] != "noise tail" {
		t.Errorf("tail has %d lines ending %q, want %d ending %q", len(tail), tail[len(tail)-1], tailLines, "noise tail")
	}
}

func TestTestOnlyFilesStayOutOfTheBerthContext(t *testing.T) {
	for name, want := range map[string]bool{
		"controller/loop.go":        false,
		"controller/loop_test.go":   true,
		"e2e/backend/main.go":       true,
		"internal/testenv/build.go": true,
		".ci/run":                   true,
		"e2efoo/x.go":               false,
		"Dockerfile":                false,
	} {
		if got := testOnly(name); got != want {
			t.Errorf("testOnly(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestNginxImages(t *testing.T) {
	RequireDocker(t)
	for suite, version := range map[string]string{"bookworm": "nginx/1.22.", "sid": "nginx/1."} {
		t.Run(suite, func(t *testing.T) {
			img := NginxImage(t, suite)
			out := Docker(t, "run", "--rm", "--label", Label, img, "sh", "-c",
				"nginx -v 2>&1 && nginx -t 2>&1 && ls -A /etc/nginx/conf.d | wc -l && test -f /etc/ssl/certs/ca-certificates.crt && echo certs")
			if !strings.Contains(out, version) || !strings.Contains(out, "test is successful") {
				t.Errorf("nginx in %s: %s", img, out)
			}
			if !strings.HasSuffix(out, "0\ncerts") {
				t.Errorf("conf.d is not empty or CA certificates are missing in %s: %s", img, out)
			}
		})
	}
}

func TestGoImageHasGoAndCertificates(t *testing.T) {
	RequireDocker(t)
	img := GoImage(t)
	version, err := goEnv("GOVERSION")
	if err != nil {
		t.Fatal(err)
	}
	out := Docker(t, "run", "--rm", "--label", Label, img, "sh", "-c",
		"go env GOVERSION GOROOT GOTOOLCHAIN && test -s /etc/ssl/certs/ca-certificates.crt && echo certs")
	if want := version + "\n/usr/local/go\nlocal\ncerts"; out != want {
		t.Errorf("go in %s:\n%s\nwant\n%s", img, out, want)
	}
}

func TestBackendImageServesAndReportsHealth(t *testing.T) {
	RequireDocker(t)
	img := BackendImage(t)
	name := fmt.Sprintf("berth-testenv-backend-%d", time.Now().UnixNano())
	args := append([]string{"run", "-d", "--name", name}, LabelArgs()...)
	Docker(t, append(args, "-p", "127.0.0.1::8080", "-e", "NAME=b1", "-e", "PORTS=8080", "-e", "HEALTHY=0", img)...)
	t.Cleanup(func() { TryDocker("rm", "-f", name) })
	addr := Docker(t, "port", name, "8080/tcp")
	addr = strings.Split(addr, "\n")[0]
	Eventually(t, 10*time.Second, func() error {
		req, _ := http.NewRequest("GET", "http://"+addr+"/p", nil)
		req.Host = "h.test"
		req.Header.Set("X-Real-IP", "10.1.2.3")
		resp, body, err := fetchDirect(req)
		if err != nil {
			return err
		}
		if want := "name=b1 port=8080 host=h.test path=/p\n"; string(body) != want {
			return fmt.Errorf("body %q, want %q", body, want)
		}
		if resp.Header.Get("X-Backend") != "b1" || resp.Header.Get("Echo-X-Real-Ip") != "10.1.2.3" {
			return fmt.Errorf("headers %v", resp.Header)
		}
		return nil
	})
	Eventually(t, 15*time.Second, func() error {
		if s := Docker(t, "inspect", "--format", "{{.State.Health.Status}}", name); s != "unhealthy" {
			return fmt.Errorf("health %q, want unhealthy with HEALTHY=0", s)
		}
		return nil
	})
	start := time.Now()
	Docker(t, "stop", name)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("docker stop took %v: the backend does not exit on SIGTERM", d)
	}
}

func TestCleanupLeftoversKeepsLiveOwners(t *testing.T) {
	RequireDocker(t)
	mine := fmt.Sprintf("berth-testenv-net-%d", time.Now().UnixNano())
	args := append([]string{"network", "create"}, LabelArgs()...)
	Docker(t, append(args, mine)...)
	t.Cleanup(func() { TryDocker("network", "rm", mine) })
	dead := mine + "-dead"
	// PID 0 is never a live test process.
	Docker(t, "network", "create", "--label", Label, "--label", OwnerLabelKey+"=0", dead)
	t.Cleanup(func() { TryDocker("network", "rm", dead) })
	CleanupLeftovers(t)
	if _, err := TryDocker("network", "inspect", mine); err != nil {
		t.Errorf("CleanupLeftovers removed this process's network: %v", err)
	}
	if _, err := TryDocker("network", "inspect", dead); err == nil {
		t.Errorf("CleanupLeftovers kept network %s of a dead process", dead)
	}
}

// fetchDirect sends req without a proxy, with a short timeout (the
// servers tested answer at once or are not up yet), and returns the
// response with its whole body.
func fetchDirect(req *http.Request) (*http.Response, string, error) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}
