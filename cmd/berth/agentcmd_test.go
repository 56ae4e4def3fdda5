package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAgentRefusesToStartWithoutASecret(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, file := range map[string]string{"missing": filepath.Join(dir, "missing"), "empty": empty} {
		var stderr bytes.Buffer
		code := run([]string{"agent", "--agent-secret-file", file, "--conf-dir", t.TempDir()}, io.Discard, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), "secret") || !strings.Contains(stderr.String(), file) {
			t.Errorf("%s secret: exit %d, stderr %q; want 1 and an error naming the secret file", name, code, stderr.String())
		}
	}
}

func TestAgentSettingsComeFromTheEnvironment(t *testing.T) {
	t.Setenv("BERTH_AGENT_ADDR", "127.0.0.1:9999")
	t.Setenv("BERTH_AGENT_SECRET_FILE", "/s")
	s, err := parseAgentSettings([]string{"--conf-dir", "/c"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr != "127.0.0.1:9999" || s.SecretFile != "/s" || s.ConfDir != "/c" || s.Webroot != "/var/www/acme" {
		t.Fatalf("settings %+v", s)
	}
	if _, err := parseAgentSettings([]string{"extra"}, io.Discard); err == nil {
		t.Fatal("a positional argument was accepted")
	}
}
