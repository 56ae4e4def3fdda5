package status

import (
	"bytes"
	"html/template"
	"strings"
	"time"
)

// The status page (GET / with BERTH_HTTP_ADDR): server-rendered, read-only,
// and self-contained so it works offline and behind strict networks: no
// script at all, no font or style from elsewhere, only inline CSS.
var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"clock":   clock,
	"days":    func(t, now time.Time) int { return DaysLeft(t, now) },
	"join":    func(xs []string) string { return strings.Join(xs, ", ") },
	"soon":    func(t, now time.Time) bool { return t.Sub(now) < 14*24*time.Hour },
	"cert":    func(s Snapshot, name string) *Certificate { return certNamed(s.Certificates, name) },
	"line":    func(s string) string { return oneLine(s, 200) },
	"problem": problemLine,
	"health":  healthText,
}).Parse(pageHTML))

// healthText says in words what a backend's health means for traffic.
func healthText(b Backend) string {
	h := b.Health
	if h == HealthNone {
		h = "up (no health check)"
	}
	if !b.Ready {
		h += ", no traffic"
	}
	return h
}

// RenderPage renders the status page for s.
func RenderPage(s Snapshot) ([]byte, error) {
	var buf bytes.Buffer
	if err := page.Execute(&buf, s); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

const pageHTML = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>berth status</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:1.5rem;color:#1d2329;background:#fafbfc}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.05rem;margin:1.6rem 0 .4rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #dde1e5;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600}code{font:12px ui-monospace,monospace}
.ok{color:#176b2c;font-weight:600}.bad{color:#b3261e;font-weight:600}.warn{color:#8a5a00;font-weight:600}
.muted{color:#66707a}
</style></head>
<body>
<h1>berth status</h1>
<p id="summary">
{{if .Healthy}}<span class="ok">healthy</span>{{else}}<span class="bad">unhealthy</span>: {{.HealthReason}}{{end}}
· nginx {{with .Nginx}}{{if .Container}}<code>{{.Container}}</code>{{if .Version}} {{.Version}}{{end}}{{else}}none{{end}}{{end}}
· Docker events {{if .Docker.Watching}}watched{{else}}<span class="bad">not watched</span>{{end}}
· berth {{.Version}} · {{clock .Time}}
{{with .Pending}}<br><span class="warn">{{len .Changes}} file(s) wait for the reload pacer until {{clock .Until}}</span>{{end}}
</p>

<h2>Hosts</h2>
{{if .Hosts}}<table id="hosts"><tr><th>Host</th><th>HTTPS</th><th>Path</th><th>Backends</th><th>Certificate</th></tr>
{{range $h := .Hosts}}<tr><td><code>{{$h.Host}}</code></td><td>{{$h.HTTPS}}</td>
<td>{{if $h.RedirectTo}}→ {{$h.RedirectTo}}{{end}}{{range $h.Paths}}<code>{{.Path}}</code><br>{{end}}</td>
<td>{{range $h.Paths}}{{range .Backends}}{{.Container}} <code>{{.Address}}</code> <span class="{{if .Ready}}ok{{else}}warn{{end}}">{{health .}}</span><br>{{else}}<span class="bad">none (503)</span><br>{{end}}{{end}}</td>
<td>{{with cert $ $h.Certificate}}{{.Name}}, {{days .NotAfter $.Time}} days left{{else}}<span class="muted">none</span>{{end}}{{if $h.CertificateMismatch}} <span class="bad">nginx serves another</span>{{end}}</td></tr>
{{end}}</table>{{else}}<p class="muted">No hosts served.</p>{{end}}

<h2>Certificates</h2>
{{if .Certificates}}<table id="certificates"><tr><th>Name</th><th>Names</th><th>Issuer</th><th>Not after</th><th>Days left</th><th>Next renewal</th></tr>
{{range .Certificates}}<tr><td><code>{{.Name}}</code></td><td>{{join .Names}}</td><td>{{.Issuer}}</td><td>{{clock .NotAfter}}</td>
<td class="{{if soon .NotAfter $.Time}}bad{{else}}ok{{end}}">{{days .NotAfter $.Time}}</td><td>{{clock .NextRenewal}}</td></tr>
{{end}}</table>{{else}}<p class="muted">No stored certificates.</p>{{end}}
{{if .Orders}}<p>Orders in flight: {{range .Orders}}<code>{{join .Names}}</code> since {{clock .Started}}; {{end}}</p>{{end}}
{{if .Failing}}<table id="failing"><tr><th>Failing name</th><th>Failures</th><th>Next attempt</th><th>Last error</th></tr>
{{range .Failing}}<tr><td><code>{{.Name}}</code></td><td>{{.Failures}}</td><td>{{clock .NextAttempt}}</td><td>{{line .LastError}}</td></tr>
{{end}}</table>{{end}}

<h2>Skipped containers</h2>
{{if .Skipped}}<table id="skipped"><tr><th>Container</th><th>Why</th></tr>
{{range .Skipped}}<tr><td><code>{{.Container}}</code></td><td>{{problem .}}</td></tr>
{{end}}</table>{{else}}<p class="muted">None.</p>{{end}}

<h2>Recent reloads</h2>
{{if .Reloads}}<table id="reloads"><tr><th>Time</th><th>Result</th><th>Files</th></tr>
{{range .Reloads}}<tr><td>{{clock .Time}}</td><td class="{{if eq .Result "ok"}}ok{{else}}bad{{end}}">{{.Result}}{{with .Error}}: {{line .}}{{end}}</td>
<td>{{join .Written}}{{if .Removed}} (removed {{join .Removed}}){{end}}</td></tr>
{{end}}</table>{{else}}<p class="muted">No reload since berth started.</p>{{end}}
</body></html>
`
