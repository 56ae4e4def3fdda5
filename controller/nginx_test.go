package controller

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
)

func labelledNginx(id string, nets ...string) Container {
	c := Container{ID: id, Name: id, Running: true, Labels: map[string]string{"proxy.nginx": "true"}, Networks: map[string]string{}}
	for i, n := range nets {
		c.Networks[n] = "172.30.0." + string(rune('1'+i))
	}
	return c
}

func TestNginxCandidatesPreferTheOneSharingANetworkWithBerth(t *testing.T) {
	self := Container{ID: "berth1234", Name: "berth", Running: true, Networks: map[string]string{"pair-a": "10.0.0.2"}}
	a, b := labelledNginx("nginx-a", "pair-a"), labelledNginx("nginx-b", "pair-b")
	stopped := labelledNginx("nginx-old", "pair-a")
	stopped.Running = false
	cs := []Container{self, a, b, stopped}
	if got := NginxCandidates(cs, "", "berth1234"); len(got) != 1 || got[0].ID != "nginx-a" {
		t.Fatalf("candidates %v, want only nginx-a (shares pair-a with berth)", got)
	}
	if got := NginxCandidates(cs, "", ""); len(got) != 2 {
		t.Fatalf("outside a container: candidates %v, want both running labelled ones", got)
	}
	if got := NginxCandidates(cs, "nginx-b", "berth1234"); len(got) != 1 || got[0].ID != "nginx-b" {
		t.Fatalf("BERTH_NGINX_CONTAINER must win: %v", got)
	}
}

func TestALabelledContainerThatIsNotNginxIsNeverValidatedOrSignalled(t *testing.T) {
	impostor := labelledNginx("impostor", "front")
	c, eng := newTestController(t, svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80), impostor)
	eng.notNginx = map[string]bool{"impostor": true}
	passAt(c, 0)
	if eng.signals != 1 || eng.signalled[0] != testNginx.ID {
		t.Fatalf("signalled %v, want only the real nginx", eng.signalled)
	}
	// The real nginx goes away: the impostor still gets nothing.
	eng.containers = []Container{svc("a", 3, map[string]string{"proxy.host": "a.test"}, 80), impostor}
	passAt(c, 1)
	if eng.signals != 1 {
		t.Fatalf("the impostor was signalled: %v", eng.signalled)
	}
}

func TestWhenStillAmbiguousTheNginxInUseIsKept(t *testing.T) {
	c, eng := newTestController(t, svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80))
	passAt(c, 0)
	eng.containers = append(eng.containers, labelledNginx("second", "front"))
	eng.containers = append(eng.containers, svc("b", 3, map[string]string{"proxy.host": "b.test"}, 80))
	if again := passAt(c, 1); again != 0 {
		t.Fatal("a second labelled nginx must not make passes fail")
	}
	for _, id := range eng.signalled {
		if id != testNginx.ID {
			t.Fatalf("signalled %v, want only the nginx in use", eng.signalled)
		}
	}
	if eng.signals != 2 {
		t.Fatalf("%d reloads, want 2", eng.signals)
	}
	// A fresh berth that never used either cannot choose.
	if _, _, err := newController(eng, c.opts).nginx.Find(context.Background(), eng.containers, quietLog()); err == nil || !strings.Contains(err.Error(), "BERTH_NGINX_CONTAINER") {
		t.Fatalf("Find = %v, want an ambiguity error naming the setting", err)
	}
}

func TestSelfIDReadsTheContainerIDFromProc(t *testing.T) {
	id := strings.Repeat("ab12", 16)
	mountinfo := "1234 1200 0:50 /var/lib/docker/containers/" + id + "/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
	if got := SelfID(mountinfo, "", "myhost"); got != id {
		t.Fatalf("SelfID from mountinfo = %q", got)
	}
	if got := SelfID("", "0::/system.slice/docker-"+id+".scope\n", ""); got != id {
		t.Fatalf("SelfID from cgroup = %q", got)
	}
	if got := SelfID("", "0::/\n", "0123456789ab"); got != "0123456789ab" {
		t.Fatalf("SelfID from hostname = %q", got)
	}
	if got := SelfID("", "0::/\n", "laptop"); got != "" {
		t.Fatalf("SelfID outside a container = %q", got)
	}
}

// The forwarder must not outlive a broken stream: synctest fails the test
// if a goroutine is still blocked when the bubble ends.
func TestEventForwarderStopsWhenTheStreamBreaks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		msgs, errs := make(chan string), make(chan error, 1)
		out, outErr := forwardEvents(context.Background(), msgs, errs, func(s string) string { return "got " + s })
		msgs <- "start"
		if got := <-out; got != "got start" {
			t.Fatalf("forwarded %q", got)
		}
		errs <- context.DeadlineExceeded
		if err := <-outErr; err != context.DeadlineExceeded {
			t.Fatalf("error %v", err)
		}
		synctest.Wait()
	})
}

func TestServedSerialReportsTheCertificateNginxServesForTheName(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the check hangs up after the handshake
	srv.StartTLS()
	defer srv.Close()
	n := NewNginx(nil, "", "", "")
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	n.addrs, n.httpsPort = []string{"127.0.0.2", "127.0.0.1"}, port
	got, err := n.ServedSerial(context.Background(), "example.com")
	want := srv.Certificate().SerialNumber.Text(16)
	if err != nil || got != want {
		t.Fatalf("ServedSerial = %q, %v; want %q", got, err, want)
	}
}

// A labelled container berth cannot even exec in (a socket proxy that
// allows exec only in nginx) must not make every pass fail.
func TestACandidateThatCannotBeAskedDoesNotStopTheOthers(t *testing.T) {
	c, eng := newTestController(t, svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80), labelledNginx("guarded", "front"))
	eng.execErr = map[string]error{"guarded": errors.New("403 Forbidden")}
	if again := passAt(c, 0); again != 0 || eng.signals != 1 {
		t.Fatalf("pass with an unaskable candidate: retry %v, %d reloads; want served", again, eng.signals)
	}
	eng.execErr["nginx"] = errors.New("connection refused") // Docker itself failing
	fresh := newController(eng, c.opts)
	if again := passAt(fresh, 1); again == 0 {
		t.Fatal("with no candidate confirmed because Docker fails, the pass must be retried with backoff")
	}
}
