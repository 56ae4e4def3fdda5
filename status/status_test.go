package status

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

// fixture is a day in berth's life: one served host with a certificate,
// one skipped container, one failing name.
func fixture() (ControllerPart, CertPart) {
	p := ControllerPart{
		Pass:   Pass{Number: 7, Time: now, Seconds: 0.03, ListedOK: true},
		Nginx:  Nginx{Container: "proxy-nginx-1", ID: "abc", Version: "1.22.1", Confirmed: true},
		Reload: &Reload{Time: now, Result: ReloadOK, Written: []string{"berth-app.example.com.conf"}},
		Hosts: []Host{{Host: "app.example.com", HTTPS: "redirect", Paths: []Path{{Path: "/",
			Backends: []Backend{{Container: "app-1", Address: "172.18.0.3:8080", Health: HealthHealthy, Ready: true}}}}}},
		Containers: []Container{
			{Name: "app-1", ID: "0123456789abcdef", State: "running", Health: "healthy",
				Labels:   SafeLabels(map[string]string{"proxy.host": "app.example.com", "proxy.port": "8080", "proxy.basic-auth": "bob:$apr1$secret", "com.other": "x"}),
				Networks: []string{"front"}, SharedNetworks: []string{"front"},
				Routes: []Route{{Hosts: []string{"app.example.com"}, Path: "/", Port: 8080, PortReason: "set by proxy.port",
					Network: "front", NetworkReason: "the first network shared with nginx", Address: "172.18.0.3:8080", HTTPS: "redirect", ACME: true, Ready: true}}},
			{Name: "broken-1", ID: "fedcba9876543210", State: "running", Labels: map[string]string{"proxy.host": "broken.example.com", "proxy.port": "http"},
				Networks: []string{"back"}},
		},
		Skipped: []Problem{{Container: "broken-1", Label: "proxy.port", Value: "http", Reason: "not a port number; container not routed"}},
	}
	c := CertPart{
		Certificates: []Certificate{{Name: "app.example.com", Names: []string{"app.example.com"}, Issuer: "Pebble Intermediate CA",
			Serial: "1f", NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(30 * 24 * time.Hour), NextRenewal: now.Add(20 * 24 * time.Hour)}},
		Failing: []Failing{{Name: "gone.example.com", Failures: 2, LastError: "urn:ietf:params:acme:error:connection", NextAttempt: now.Add(time.Hour)}},
	}
	return p, c
}

type fixedCerts CertPart

func (f fixedCerts) CertStatus(time.Time) CertPart { return CertPart(f) }

func snapshot(t *testing.T) Snapshot {
	t.Helper()
	p, c := fixture()
	b := NewBoard("test", fixedCerts(c))
	b.Stream(true, false)
	b.Publish(p)
	return b.Snapshot(now)
}

func TestSnapshotLinksHostsToTheirCertificateAndLastReload(t *testing.T) {
	s := snapshot(t)
	if got := s.Hosts[0].Certificate; got != "app.example.com" {
		t.Errorf("host certificate = %q, want app.example.com", got)
	}
	if s.Nginx.LastReload == nil || s.Nginx.LastReload.Result != ReloadOK {
		t.Errorf("nginx.last_reload = %+v, want the ok reload", s.Nginx.LastReload)
	}
	if !s.Healthy {
		t.Errorf("not healthy: %s", s.HealthReason)
	}
	if s.Counters.Reloads[ReloadOK] != 1 || s.Counters.Reloads[ReloadRejected] != 0 || s.Counters.Passes.Count != 1 {
		t.Errorf("counters = %+v", s.Counters)
	}
}

func TestHealthNeedsTheEventStreamAndAConfirmedNginx(t *testing.T) {
	p, c := fixture()
	b := NewBoard("test", fixedCerts(c))
	if s := b.Snapshot(now); s.Healthy {
		t.Error("healthy before the first pass")
	}
	b.Publish(p)
	if s := b.Snapshot(now); s.Healthy || !strings.Contains(s.HealthReason, "event") {
		t.Errorf("healthy without the event stream: %q", s.HealthReason)
	}
	b.Stream(true, false)
	p.Nginx = Nginx{Error: "nginx container not running"}
	b.Publish(p)
	if s := b.Snapshot(now); s.Healthy || !strings.Contains(s.HealthReason, "not running") {
		t.Errorf("healthy without nginx: %q", s.HealthReason)
	}
	b.Stream(false, false)
	b.Stream(true, true)
	if s := b.Snapshot(now); s.Counters.Reconnects != 1 {
		t.Errorf("reconnects = %d, want 1", s.Counters.Reconnects)
	}
}

func TestReloadHistoryIsBoundedNewestFirst(t *testing.T) {
	p, _ := fixture()
	b := NewBoard("test", nil)
	for i := range MaxReloads + 5 {
		p.Reload = &Reload{Time: now.Add(time.Duration(i) * time.Second), Result: ReloadRejected}
		b.Publish(p)
	}
	s := b.Snapshot(now)
	if len(s.Reloads) != MaxReloads || !s.Reloads[0].Time.Equal(now.Add((MaxReloads+4)*time.Second)) {
		t.Errorf("reloads: %d, newest %v", len(s.Reloads), s.Reloads[0].Time)
	}
	if s.Counters.Reloads[ReloadRejected] != MaxReloads+5 {
		t.Errorf("rejected = %d", s.Counters.Reloads[ReloadRejected])
	}
}

func TestWhyExplainsASkippedContainer(t *testing.T) {
	lines, err := Why(snapshot(t), "broken-1")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(lines, "\n")
	for _, want := range []string{`Labels read: proxy.host="broken.example.com", proxy.port="http".`,
		`Skipped: label proxy.port="http": not a port number`, "nginx (proxy-nginx-1) shares none of them", "no host is served"} {
		if !strings.Contains(text, want) {
			t.Errorf("why broken-1 lacks %q:\n%s", want, text)
		}
	}
}

func TestWhyExplainsARoutedContainerPortNetworkAndCertificate(t *testing.T) {
	lines, err := Why(snapshot(t), "0123456789ab")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(lines, "\n")
	for _, want := range []string{"Port 8080: set by proxy.port.", "Network front: the first network shared with nginx.",
		"Backend 172.18.0.3:8080 gets traffic.", "issued by Pebble Intermediate CA", "(30 days left)"} {
		if !strings.Contains(text, want) {
			t.Errorf("why app-1 lacks %q:\n%s", want, text)
		}
	}
}

func TestWhyExplainsHosts(t *testing.T) {
	s := snapshot(t)
	for name, want := range map[string]string{
		"App.Example.com":    "Path / goes to app-1 at 172.18.0.3:8080 (healthy, gets traffic).",
		"broken.example.com": "Host broken.example.com is not served, but container broken-1 asks for it.",
		"gone.example.com":   "The last order for gone.example.com failed (2 time(s)): urn:ietf:params:acme:error:connection.",
	} {
		lines, err := Why(s, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if text := strings.Join(lines, "\n"); !strings.Contains(text, want) {
			t.Errorf("why %s lacks %q:\n%s", name, want, text)
		}
	}
	if _, err := Why(s, "nobody"); err == nil {
		t.Error("why of an unknown name gave no error")
	}
}

func TestTableShowsHostsCertificatesAndSkipped(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTable(&buf, snapshot(t)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"proxy-nginx-1 (nginx 1.22.1), last reload 2026-12-02T12:00:00Z ok", "app.example.com", "app-1 172.18.0.3:8080 (healthy)",
		"30 days left", "broken-1", `label proxy.port="http"`, "gone.example.com", "health:  ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// Nothing secret leaves berth: the basic-auth hash is redacted in the
// JSON, the table and every explanation.
func TestNothingSecretIsShown(t *testing.T) {
	s := snapshot(t)
	data, _ := json.Marshal(s)
	var table bytes.Buffer
	_ = WriteTable(&table, s)
	why, _ := Why(s, "app-1")
	page, err := RenderPage(s)
	if err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"json": string(data), "table": table.String(), "why": strings.Join(why, "\n"), "page": string(page)} {
		if strings.Contains(text, "apr1") || strings.Contains(text, "secret") {
			t.Errorf("%s shows the basic-auth hash", name)
		}
	}
	if !strings.Contains(string(data), `"proxy.basic-auth":"(redacted)"`) {
		t.Errorf("json lacks the redacted label: %s", data)
	}
	if p := SafeProblem(Problem{Label: "proxy.api.basic-auth", Value: "x:y"}); p.Value != Redacted {
		t.Errorf("problem value not redacted: %q", p.Value)
	}
}

// The JSON field names are an interface: scripts read them.
func TestJSONFieldNamesAreStable(t *testing.T) {
	data, _ := json.Marshal(snapshot(t))
	for _, key := range []string{`"healthy":`, `"nginx":{"container":"proxy-nginx-1"`, `"last_reload":`, `"hosts":[{"host":"app.example.com","https":"redirect","certificate":"app.example.com"`,
		`"backends":[{"container":"app-1","address":"172.18.0.3:8080","health":"healthy","ready":true}]`, `"skipped":[{"container":"broken-1","label":"proxy.port"`,
		`"certificates":[{"name":"app.example.com","names":["app.example.com"],"issuer":"Pebble Intermediate CA"`, `"not_after":`, `"next_renewal":`,
		`"failing":[{"name":"gone.example.com","failures":2,"last_error":`, `"next_attempt":`, `"orders":[]`, `"counters":{"reloads":`} {
		if !bytes.Contains(data, []byte(key)) {
			t.Errorf("json lacks %s:\n%s", key, data)
		}
	}
}

func TestHistogramBuckets(t *testing.T) {
	h := NewHistogram([]float64{0.1, 1})
	for _, v := range []float64{0.05, 0.1, 0.5, 3} {
		h.Observe(v)
	}
	c := h.Cumulative()
	if c[0.1] != 2 || c[1] != 3 || h.Count != 4 || h.Sum != 3.65 {
		t.Errorf("cumulative %v count %d sum %v", c, h.Count, h.Sum)
	}
}

// The loop publishes, the watcher counts and readers snapshot at once
// (go test -race catches a missing lock).
func TestBoardIsSafeForConcurrentUse(t *testing.T) {
	p, c := fixture()
	b := NewBoard("test", fixedCerts(c))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			b.Publish(p)
			b.Event()
			b.Stream(true, true)
		}
	}()
	for range 200 {
		s := b.Snapshot(now)
		_, _ = json.Marshal(s)
	}
	<-done
	if s := b.Snapshot(now); s.Counters.Events != 200 || s.Counters.Passes.Count != 200 {
		t.Errorf("counters %+v", s.Counters)
	}
}

func TestWhySaysWhatHoldsAHostBack(t *testing.T) {
	p, c := fixture()
	p.Pending = &Pending{Until: now.Add(time.Second), Changes: []string{"berth-app.example.com.conf"}}
	p.Hosts[0].Paths[0].Backends[0].Ready = false
	p.Hosts[0].Paths[0].Backends[0].Health = HealthStarting
	c.Certificates = nil
	c.Orders = []Order{{Name: "app.example.com", Names: []string{"app.example.com"}, Started: now}}
	b := NewBoard("test", fixedCerts(c))
	b.Publish(p)
	lines, err := Why(b.Snapshot(now), "app.example.com")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(lines, "\n")
	for _, want := range []string{"(starting, held back)", "An order for app.example.com is in flight since 2026-12-02T12:00:00Z.",
		"A change waits for the reload pacer until 2026-12-02T12:00:01Z."} {
		if !strings.Contains(text, want) {
			t.Errorf("why lacks %q:\n%s", want, text)
		}
	}
}

func TestAHostsCertificateIsTheUsersOwnWhenItHasOne(t *testing.T) {
	certs := []Certificate{
		{Name: "app.example.com", Names: []string{"app.example.com"}, NotAfter: now.Add(80 * 24 * time.Hour)},
		{Name: "app.crt", Names: []string{"app.example.com"}, NotAfter: now.Add(10 * 24 * time.Hour), Source: "user"},
	}
	if got := certFor(certs, "app.example.com"); got == nil || got.Name != "app.crt" {
		t.Fatalf("certFor = %+v, want the user's own (berth serves it, however long berth's lasts)", got)
	}
}

func TestStatusAndWhySayAUserCertificateIsTheUsersOwn(t *testing.T) {
	p, c := fixture()
	c.Certificates = append(c.Certificates, Certificate{Name: "app.crt", Names: []string{"app.example.com"}, Issuer: "Corp CA",
		NotAfter: now.Add(10 * 24 * time.Hour), Source: "user"})
	b := NewBoard("test", fixedCerts(c))
	b.Stream(true, false)
	b.Publish(p)
	s := b.Snapshot(now)
	var buf bytes.Buffer
	if err := WriteTable(&buf, s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "app.crt, Corp CA, expires") || !strings.Contains(buf.String(), "your own, never renewed by berth") {
		t.Errorf("status table does not show the user's certificate for the host:\n%s", buf.String())
	}
	lines, err := Why(s, "app.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if text := strings.Join(lines, "\n"); !strings.Contains(text, "Your own certificate app.crt covers app.example.com") {
		t.Errorf("why lacks the user's certificate:\n%s", text)
	}
}

func TestAHostUnderAWildcardIsLinkedToTheWildcardCertificate(t *testing.T) {
	certs := []Certificate{{Name: "_.w.example.com", Names: []string{"*.w.example.com"}}, {Name: "own.w.example.com", Names: []string{"own.w.example.com"}}}
	for host, want := range map[string]string{"a.w.example.com": "_.w.example.com", "own.w.example.com": "own.w.example.com",
		"*.w.example.com": "_.w.example.com", "a.b.w.example.com": "", "*.x.w.example.com": ""} {
		got := ""
		if c := certFor(certs, host); c != nil {
			got = c.Name
		}
		if got != want {
			t.Errorf("certFor(%s) = %q, want %q", host, got, want)
		}
	}
}

func TestAUserWildcardWinsOverBerthsOwnCertificateForAHostItCovers(t *testing.T) {
	certs := []Certificate{
		{Name: "a.example.com", Names: []string{"a.example.com"}, NotAfter: now.Add(80 * 24 * time.Hour)},
		{Name: "_.example.com.crt", Names: []string{"*.example.com"}, NotAfter: now.Add(10 * 24 * time.Hour), Source: "user"},
		{Name: "own.crt", Names: []string{"own.example.com"}, NotAfter: now.Add(10 * 24 * time.Hour), Source: "user"},
		{Name: "own.example.com", Names: []string{"own.example.com"}, NotAfter: now.Add(80 * 24 * time.Hour)},
		{Name: "_.b.example.com", Names: []string{"*.b.example.com"}, NotAfter: now.Add(80 * 24 * time.Hour)},
		{Name: "b.example.com", Names: []string{"b.example.com"}, NotAfter: now.Add(80 * 24 * time.Hour)},
	}
	for host, want := range map[string]string{"a.example.com": "_.example.com.crt", "own.example.com": "own.crt",
		"b.example.com": "_.example.com.crt", "x.b.example.com": "_.b.example.com", "*.example.com": "_.example.com.crt"} {
		got := ""
		if c := certFor(certs, host); c != nil {
			got = c.Name
		}
		if got != want {
			t.Errorf("certFor(%s) = %q, want %q", host, got, want)
		}
	}
}
