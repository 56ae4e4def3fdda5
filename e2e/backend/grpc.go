package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// grpcContentType marks a gRPC request; "application/grpc+proto" and the
// like are gRPC too.
const grpcContentType = "application/grpc"

// grpcHandler serves a port in gRPC mode: cleartext HTTP/2 (h2c, what
// nginx's grpc_pass speaks to a grpc:// backend) beside HTTP/1.1. A POST
// with a gRPC content type gets a gRPC answer; everything else gets
// plain's answer, so health checks and routing tests still work.
func grpcHandler(name, port string, plain http.Handler) http.Handler {
	return h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !isGRPC(r.Header.Get("Content-Type")) {
			plain.ServeHTTP(w, r)
			return
		}
		answerGRPC(w, r, name, port)
	}), &http2.Server{})
}

func isGRPC(contentType string) bool {
	return contentType == grpcContentType || strings.HasPrefix(contentType, grpcContentType+"+") ||
		strings.HasPrefix(contentType, grpcContentType+";")
}

// answerGRPC answers any unary call with one uncompressed, length-prefixed
// message, the raw bytes "name=$NAME port=<port> path=<method path>", and
// the trailer grpc-status: 0. A test can then tell that nginx's grpc_pass
// reached this backend without a protobuf library. gRPC over HTTP/1 is
// refused as grpc-go refuses it, so a proxy_pass where grpc_pass belongs
// shows.
func answerGRPC(w http.ResponseWriter, r *http.Request, name, port string) {
	if r.ProtoMajor != 2 {
		http.Error(w, "gRPC requires HTTP/2", http.StatusBadRequest)
		return
	}
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		http.Error(w, fmt.Sprintf("read gRPC request: %v", err), http.StatusBadRequest)
		return
	}
	h := w.Header()
	h.Set("Content-Type", grpcContentType)
	h.Set("X-Backend", name)
	echoHeaders(h, r.Header)
	h.Set("Trailer", "Grpc-Status, Grpc-Message")
	w.WriteHeader(http.StatusOK)
	w.Write(grpcFrame([]byte(fmt.Sprintf("name=%s port=%s path=%s", name, port, r.URL.Path))))
	h.Set("Grpc-Status", "0")
	h.Set("Grpc-Message", "")
}

// grpcFrame is msg as one gRPC length-prefixed message: a zero compression
// flag, the length as 4 bytes big-endian, then the bytes.
func grpcFrame(msg []byte) []byte {
	return slices.Concat([]byte{0}, binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg)
}

// listener is one port the backend listens on, and whether it is in gRPC mode.
type listener struct {
	port string
	grpc bool
}

// plan returns the ports to listen on: those in ports (default "80") and
// those in grpcList, each once, in that order. A port is in gRPC mode when
// grpcAll is "1" or grpcList names it.
func plan(ports, grpcAll, grpcList string) []listener {
	if strings.TrimSpace(ports) == "" && strings.TrimSpace(grpcList) == "" {
		ports = "80"
	}
	grpc := splitPorts(grpcList)
	var out []listener
	for _, p := range slices.Concat(splitPorts(ports), grpc) {
		if !slices.ContainsFunc(out, func(l listener) bool { return l.port == p }) {
			out = append(out, listener{port: p, grpc: grpcAll == "1" || slices.Contains(grpc, p)})
		}
	}
	return out
}

// splitPorts splits a comma-separated list, dropping blanks.
func splitPorts(list string) []string {
	var out []string
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
