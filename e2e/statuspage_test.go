package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chromiumTimeout bounds one headless Chromium run (a cold start takes a
// few seconds on this machine).
const chromiumTimeout = 60 * time.Second

// chromiumFlags keep headless Chromium to the page it is given: no
// sandbox (tests run as root), and none of its background traffic.
var chromiumFlags = []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
	"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-default-apps", "--disable-extensions", "--disable-domain-reliability", "--no-pings",
	"--metrics-recording-only", "--hide-scrollbars"}

// findChromium returns Debian's chromium. A missing browser fails the test
// in CI (.ci/run installs it) and skips it elsewhere.
func findChromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed; .ci/run installs Debian's chromium package")
	}
	t.Skip("chromium is not installed (apt-get install chromium); skipping the status page test")
	return ""
}

func chromium(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chromiumTimeout)
	defer cancel()
	all := append(append(append([]string{}, chromiumFlags...), "--user-data-dir="+t.TempDir()), args...)
	cmd := exec.CommandContext(ctx, bin, all...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// checkStatusPage loads the status page in headless Chromium and checks
// that the DOM it built shows the hosts and certificates, and that the
// page pulled in nothing from elsewhere. With BERTH_STATUS_SCREENSHOT=FILE
// it also saves a screenshot (docs/status.png is made that way).
func checkStatusPage(t *testing.T, url string, want []string) {
	bin := findChromium(t)
	dom := chromium(t, bin, "--dump-dom", url)
	for _, w := range append([]string{`<table id="hosts">`, `<table id="certificates">`, `<table id="skipped">`, `<table id="reloads">`, "days left"}, want...) {
		if !strings.Contains(dom, w) {
			t.Errorf("the status page's DOM lacks %q:\n%s", w, dom)
		}
	}
	for _, bad := range []string{"<script", "<link", "@import", "src=\"http"} {
		if strings.Contains(dom, bad) {
			t.Errorf("the status page loads something (%q)", bad)
		}
	}
	if shot := os.Getenv("BERTH_STATUS_SCREENSHOT"); shot != "" {
		abs, _ := filepath.Abs(shot)
		chromium(t, bin, "--window-size=1200,820", "--screenshot="+abs, url)
		t.Logf("screenshot of the status page in %s", abs)
	}
}
