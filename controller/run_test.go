package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The loop's timing, on synctest's clock: these tests take no real time.

func runInBubble(t *testing.T, eng *fakeEngine, opts Options) (*Controller, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	c := newController(eng, opts)
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	synctest.Wait()
	return c, cancel
}

func TestRunAppliesASingleChangeAtOnceAndPacesABurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		eng := &fakeEngine{containers: []Container{testNginx}, confDir: dir, events: make(chan string), eventErrs: make(chan error)}
		runInBubble(t, eng, Options{ConfDir: dir, Webroot: "/w"})
		if n, _ := eng.counts(); n != 1 {
			t.Fatalf("%d reloads after the first pass, want 1", n)
		}
		time.Sleep(5 * time.Second)
		eng.set(svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80))
		eng.events <- "container start a"
		time.Sleep(coalesceDelay + time.Millisecond)
		synctest.Wait()
		if n, _ := eng.counts(); n != 2 {
			t.Fatalf("%d reloads %v after a lone change, want it applied at once", n, coalesceDelay)
		}
		// A burst: 30 containers, 100 ms apart.
		cs := []Container{svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80)}
		for i := range 30 {
			name := fmt.Sprintf("b%02d", i)
			cs = append(cs, svc(name, 10+i, map[string]string{"proxy.host": name + ".test"}, 80))
			eng.set(cs...)
			eng.events <- "container start"
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(burstGap + time.Second)
		synctest.Wait()
		n, _ := eng.counts()
		if n-2 > 4 {
			t.Fatalf("a 3 s burst cost %d reloads, want at most 4", n-2)
		}
		files, _ := os.ReadDir(dir)
		if len(files) != 33 { // default + error pages + a + 30
			t.Fatalf("%d files after the burst went quiet, want every change applied", len(files))
		}
	})
}

func TestRunResubscribesWithBackoffWhenTheEventStreamBreaks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		eng := &fakeEngine{containers: []Container{testNginx}, confDir: dir, events: make(chan string), eventErrs: make(chan error, 1)}
		runInBubble(t, eng, Options{ConfDir: dir, Webroot: "/w"})
		eng.set(svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80)) // missed while the stream is down
		eng.eventErrs <- errors.New("unexpected EOF")
		time.Sleep(backoff(1) - time.Millisecond)
		synctest.Wait()
		if _, subs := eng.counts(); subs != 1 {
			t.Fatalf("resubscribed before the backoff: %d subscriptions", subs)
		}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		if _, subs := eng.counts(); subs != 2 {
			t.Fatalf("after the backoff: %d subscriptions, want 2", subs)
		}
		time.Sleep(minGap) // single changes reload at most once a second
		synctest.Wait()
		if n, _ := eng.counts(); n != 2 {
			t.Fatalf("%d reloads, want 2: the pass after resubscribing applies the change missed meanwhile", n)
		}
	})
}

// fakeCerts is the unit-layer certificate manager.
type fakeCerts struct {
	mu      sync.Mutex
	certs   map[string]CertFiles
	inUse   [][]string
	changed chan struct{}
}

func (f *fakeCerts) Certs() map[string]CertFiles {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.certs
}
func (f *fakeCerts) Want([]CertRequest, []string) {}
func (f *fakeCerts) InUse(files []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inUse = append(f.inUse, files)
}
func (f *fakeCerts) Changed() <-chan struct{} { return f.changed }
func (f *fakeCerts) store(host, version string) {
	f.mu.Lock()
	f.certs = map[string]CertFiles{host: {Chain: "/c/.berth/" + host + "/" + version + "/fullchain.pem", Key: "/c/.berth/" + host + "/" + version + "/privkey.pem"}}
	f.mu.Unlock()
	f.changed <- struct{}{}
}

func TestRunLoadsARenewedCertificateIntoNginx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		eng := &fakeEngine{containers: []Container{testNginx, svc("a", 2, map[string]string{"proxy.host": "a.test"}, 80)}, confDir: dir}
		certs := &fakeCerts{changed: make(chan struct{})}
		runInBubble(t, eng, Options{ConfDir: dir, Webroot: "/w", Certs: certs})
		for i, v := range []string{"v1", "v2"} {
			time.Sleep(10 * time.Second) // renewals come far apart
			certs.store("a.test", v)
			synctest.Wait()
			if n, _ := eng.counts(); n != 2+i {
				t.Fatalf("certificate %s: %d reloads, want %d", v, n, 2+i)
			}
			conf, _ := os.ReadFile(filepath.Join(dir, "berth-a.test.conf"))
			if !strings.Contains(string(conf), "/"+v+"/fullchain.pem;") {
				t.Fatalf("certificate %s is not in the config:\n%s", v, conf)
			}
			certs.mu.Lock()
			last := certs.inUse[len(certs.inUse)-1]
			certs.mu.Unlock()
			if !slices.Equal(last, []string{"/c/.berth/a.test/" + v + "/fullchain.pem", "/c/.berth/a.test/" + v + "/privkey.pem"}) {
				t.Fatalf("files reported in use %v", last)
			}
		}
	})
}
