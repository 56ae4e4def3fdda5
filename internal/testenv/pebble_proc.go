package testenv

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is a child process whose output is kept in memory.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error // set before done is closed
}

func startProcess(name, bin string, env []string, args ...string) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// Killed with the test binary, even when it dies without cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exitErr returns an error if the process has exited.
func (p *process) exitErr() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v", p.name, p.err)
	default:
		return nil
	}
}

func (p *process) stop() {
	p.cmd.Process.Kill() // fails only if it has exited already
	<-p.done
}

func (p *process) tail() string {
	return p.name + " output (last lines):\n" + lastLines(p.out.String(), tailLines)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freeLoopbackPorts returns n distinct TCP ports that were free on
// 127.0.0.1 a moment ago.
func freeLoopbackPorts(n int) ([]int, error) {
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// waitUntil polls cond until it returns nil. It gives up when alive returns
// an error (a process or container died) or after timeout, returning cond's
// last error.
func waitUntil(timeout time.Duration, alive, cond func() error) error {
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if dead := alive(); dead != nil {
			return fmt.Errorf("%w (last check: %v)", dead, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v: %w", timeout, err)
		}
		<-ticker.C
	}
}

// expectDNSAnswer asks the DNS server at addr over TCP (as Pebble's VA
// does) for an arbitrary name, and wants exactly the address want.
func expectDNSAnswer(addr, want string) error {
	return expectDNSAnswerOver("tcp", addr, "probe.berth.test.", want)
}

// expectDNSAnswerOver asks the DNS server at addr over network ("tcp" or
// "udp") for the addresses of name, and wants exactly want.
func expectDNSAnswerOver(network, addr, name, want string) error {
	ctx, cancel := context.WithTimeout(context.Background(), dnsQueryTimeout)
	defer cancel()
	ips, err := resolverAt(network, addr).LookupIPAddr(ctx, name)
	if err != nil {
		return fmt.Errorf("DNS server %s over %s: %w", addr, network, err)
	}
	if len(ips) != 1 || ips[0].IP.String() != want {
		return fmt.Errorf("DNS server %s answers %v for %s, want only %s", addr, ips, name, want)
	}
	return nil
}

// lookupTXT asks the DNS server at addr (over UDP, then TCP if the answer
// is truncated) for the TXT records of name. A name that does not exist or
// has no TXT records gives none and no error.
func lookupTXT(addr, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dnsQueryTimeout)
	defer cancel()
	txts, err := resolverAt("", addr).LookupTXT(ctx, name)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return nil, nil
	}
	return txts, err
}

// dnsQueryTimeout bounds one question to a test DNS server on loopback,
// which answers in milliseconds.
const dnsQueryTimeout = 2 * time.Second

// resolverAt is a resolver that sends every question to the DNS server at
// addr, over network, or over what the resolver asks for if network is "".
func resolverAt(network, addr string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, asked, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, cmp.Or(network, asked), addr)
		},
	}
}
