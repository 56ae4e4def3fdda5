package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

func TestFlagsWinOverEnvironmentWhichWinsOverDefaults(t *testing.T) {
	t.Setenv("BERTH_CONF_DIR", "/env/conf")
	t.Setenv("BERTH_WEBROOT", "/env/www")
	t.Setenv("BERTH_RESYNC", "2m")
	s, err := parseSettings("run", []string{"--webroot", "/flag/www"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.ConfDir != "/env/conf" || s.Webroot != "/flag/www" || s.StateDir != "/var/lib/berth" || s.Resync != 2*time.Minute {
		t.Fatalf("settings %+v", s)
	}
}

func TestBadSettingsAreUsageErrorsNamingTheSetting(t *testing.T) {
	cases := map[string][]string{
		"BERTH_RESYNC":     {"run", "--resync", "soon"},
		"BERTH_LOG_LEVEL":  {"run", "--log-level", "loud"},
		"BERTH_LOG_FORMAT": {"render", "--log-format", "xml"},
		"unknown command":  {"frobnicate"},
		"not defined":      {"run", "--no-such-flag"},
	}
	for want, args := range cases {
		var stderr bytes.Buffer
		if code := run(args, io.Discard, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("%v: stderr %q does not mention %q", args, stderr.String(), want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"run", "--help"}, {"render", "-h"}} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 0 || !strings.Contains(out.String()+errOut.String(), "Usage") {
			t.Errorf("%v: exit %d, output %q", args, code, out.String()+errOut.String())
		}
	}
	var out bytes.Buffer
	if code := run([]string{"version"}, &out, io.Discard); code != 0 || !strings.HasPrefix(out.String(), "berth ") {
		t.Errorf("version: %d %q", code, out.String())
	}
}

func TestRunRefusesAMissingConfDir(t *testing.T) {
	var stderr bytes.Buffer
	code := run([]string{"run", "--conf-dir", t.TempDir() + "/missing", "--webroot", t.TempDir()}, io.Discard, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "BERTH_CONF_DIR") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}
