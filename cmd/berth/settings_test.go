package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/controller"
)

func TestLabelDefaultsComeFromEnvironmentAndFlagsAndReachTheController(t *testing.T) {
	t.Setenv("BERTH_MAX_BODY_SIZE", "10M")
	t.Setenv("BERTH_PROXY_READ_TIMEOUT", "60s")
	t.Setenv("BERTH_HSTS", "off")
	s, err := parseSettings("run", []string{"--proxy-connect-timeout", "3s", "--snippets", "on"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := controller.Defaults{MaxBodySize: "10m", ConnectTimeout: "3s", ReadTimeout: "60s", HSTS: "off", Snippets: true}
	if got := s.controllerOptions().Defaults; got != want {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
}

func TestLabelDefaultsAreTheDocumentedOnes(t *testing.T) {
	s, err := parseSettings("run", nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := controller.Defaults{MaxBodySize: "0", HSTS: controller.DefaultHSTS}
	if s.Defaults != want {
		t.Fatalf("defaults %+v, want %+v", s.Defaults, want)
	}
}

func TestBadLabelDefaultsNameTheSetting(t *testing.T) {
	for env, v := range map[string]string{"BERTH_MAX_BODY_SIZE": "lots", "BERTH_PROXY_SEND_TIMEOUT": "1y",
		"BERTH_HSTS": "always", "BERTH_SNIPPETS": "yes", "BERTH_PROXY_CONNECT_TIMEOUT": "5 s"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, v)
			if _, err := parseSettings("run", nil, io.Discard); err == nil || !strings.Contains(err.Error(), env) {
				t.Fatalf("err=%v, want one naming %s", err, env)
			}
		})
	}
}

func TestSnippetsOnIsWarnedAboutAtStart(t *testing.T) {
	for _, on := range []bool{true, false} {
		var buf bytes.Buffer
		log := logrus.New()
		log.SetOutput(&buf)
		settings{Defaults: controller.Defaults{Snippets: on}}.warnAtStart(logrus.NewEntry(log))
		if got := strings.Contains(buf.String(), "anyone who can label a container controls nginx"); got != on {
			t.Fatalf("snippets %v: log %q", on, buf.String())
		}
	}
}
