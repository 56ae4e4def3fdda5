package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/http2"
)

func TestUploadBodyIsReadWholeAndCounted(t *testing.T) {
	req := httptest.NewRequest(http.MethodPost, "http://ignored/upload", bytes.NewReader(make([]byte, 5<<20)))
	req.Host = "app.test"
	rec := httptest.NewRecorder()
	handler("web", "80").ServeHTTP(rec, req)
	if want := "name=web port=80 host=app.test path=/upload bytes=5242880\n"; rec.Body.String() != want {
		t.Errorf("body %q, want %q", rec.Body.String(), want)
	}
}

func TestSlowPathWaitsItsDuration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		req := httptest.NewRequest(http.MethodGet, "http://ignored/api/sleep/3s", nil)
		req.Host = "slow.test"
		rec := httptest.NewRecorder()
		start := time.Now()
		handler("web", "80").ServeHTTP(rec, req)
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("answered after %v, want 3s", got)
		}
		if want := "name=web port=80 host=slow.test path=/api/sleep/3s slept=3s\n"; rec.Body.String() != want {
			t.Errorf("body %q, want %q", rec.Body.String(), want)
		}
	})
}

func TestSlowPathEndsWhenTheClientGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "http://ignored/sleep/1m", nil)
		rec := httptest.NewRecorder()
		start := time.Now()
		handler("web", "80").ServeHTTP(rec, req)
		if got := time.Since(start); got != time.Second {
			t.Errorf("returned after %v, want 1s (when the request ended)", got)
		}
		if rec.Body.Len() != 0 {
			t.Errorf("body %q after the client left, want none", rec.Body.String())
		}
	})
}

func TestBadSleepDurationIsRefusedByName(t *testing.T) {
	for _, path := range []string{"/sleep/soon", "/sleep/-1s", "/sleep/10h"} {
		rec := httptest.NewRecorder()
		handler("web", "80").ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://ignored"+path, nil))
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), strings.TrimPrefix(path, "/sleep/")) {
			t.Errorf("GET %s = %d %q, want 400 naming the duration", path, rec.Code, rec.Body.String())
		}
	}
}

func TestPlanListensOnPortsAndGRPCPorts(t *testing.T) {
	for _, c := range []struct {
		ports, all, grpc string
		want             []listener
	}{
		{"", "", "", []listener{{"80", false}}},
		{"8080, 9090", "", "", []listener{{"8080", false}, {"9090", false}}},
		{"", "1", "", []listener{{"80", true}}},
		{"", "", "50051", []listener{{"50051", true}}},
		{"80,50051", "", "50051,50052", []listener{{"80", false}, {"50051", true}, {"50052", true}}},
	} {
		if got := plan(c.ports, c.all, c.grpc); !reflect.DeepEqual(got, c.want) {
			t.Errorf("plan(PORTS=%q, GRPC=%q, GRPC_PORTS=%q) = %v, want %v", c.ports, c.all, c.grpc, got, c.want)
		}
	}
}

// h2cClient speaks cleartext HTTP/2 with prior knowledge, as nginx's
// grpc_pass does to a grpc:// backend.
func h2cClient() *http.Client {
	return &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
}

func TestGRPCCallOverH2CGetsOneMessageAndStatusZero(t *testing.T) {
	srv := httptest.NewServer(grpcHandler("rpc", "50051", handler("rpc", "50051")))
	defer srv.Close()
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/berth.Echo/Hello", bytes.NewReader(grpcFrame([]byte("hi"))))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	resp, err := h2cClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/grpc" {
		t.Fatalf("answer %s %d %q, want HTTP/2 200 application/grpc", resp.Proto, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if len(body) < 5 || body[0] != 0 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5 {
		t.Fatalf("body %q is not one uncompressed length-prefixed message", body)
	}
	if got, want := string(body[5:]), "name=rpc port=50051 path=/berth.Echo/Hello"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
	if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
		t.Errorf("trailer grpc-status %q, want 0 (trailers %v)", got, resp.Trailer)
	}
}

func TestGRPCPortStillAnswersPlainHTTP(t *testing.T) {
	srv := httptest.NewServer(grpcHandler("rpc", "50051", handler("rpc", "50051")))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.HasPrefix(string(body), "name=rpc port=50051 ") {
		t.Errorf("GET on a gRPC port = %d %q, want the echo line", resp.StatusCode, body)
	}
	// gRPC over HTTP/1.1 is what a proxy_pass in place of grpc_pass sends.
	resp, err = http.Post(srv.URL+"/berth.Echo/Hello", "application/grpc", bytes.NewReader(grpcFrame(nil)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("gRPC over HTTP/1.1 = %d, want 400", resp.StatusCode)
	}
}
