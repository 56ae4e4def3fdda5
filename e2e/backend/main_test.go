package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHandlerNamesBackendPortHostAndPath(t *testing.T) {
	req := httptest.NewRequest(http.MethodGet, "http://ignored/a/b?q=1", nil)
	req.Host = "app.test"
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Real-IP", "10.0.0.7")
	rec := httptest.NewRecorder()
	handler("web", "8080").ServeHTTP(rec, req)

	if want := "name=web port=8080 host=app.test path=/a/b\n"; rec.Body.String() != want {
		t.Errorf("body %q, want %q", rec.Body.String(), want)
	}
	for k, want := range map[string]string{
		"X-Backend":              "web",
		"Echo-X-Forwarded-Proto": "https",
		"Echo-X-Real-Ip":         "10.0.0.7",
		"Echo-X-Forwarded-For":   "",
	} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
}

func TestHealthcheckFollowsHEALTHY(t *testing.T) {
	t.Setenv("HEALTHY", "")
	if got := subcommand("healthcheck"); got != 0 {
		t.Errorf("healthcheck without HEALTHY = %d, want 0", got)
	}
	t.Setenv("HEALTHY", "0")
	if got := subcommand("healthcheck"); got != 1 {
		t.Errorf("healthcheck with HEALTHY=0 = %d, want 1", got)
	}
}
