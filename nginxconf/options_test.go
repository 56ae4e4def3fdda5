package nginxconf

import (
	"strings"
	"testing"
)

// The renderer's own guard: an option value that slipped past validation
// upstream leaves out its site with a reason, and the other sites render.
func TestRenderRefusesUnsafeOptionValuesPerSite(t *testing.T) {
	good := Site{Host: "good.example.com", Locations: []Location{{Path: "/", Backends: []string{"10.0.0.2:80"}}}}
	cases := map[string]Site{
		"HSTS value":      {Host: "a.example.com", HSTS: `max-age=1" always; include /etc/passwd; #`, Locations: good.Locations},
		"basic-auth line": {Host: "b.example.com", Locations: []Location{{Path: "/", Backends: []string{"10.0.0.3:80"}, BasicAuth: []string{"alice:plaintext"}}}},
		"snippet":         {Host: "c.example.com", ServerSnippet: "} server { listen 81;", Locations: good.Locations},
		"allow":           {Host: "d.example.com", Locations: []Location{{Path: "/", Backends: []string{"10.0.0.4:80"}, Allow: []string{"all; allow 0.0.0.0/0"}}}},
		"body size":       {Host: "e.example.com", Locations: []Location{{Path: "/", Backends: []string{"10.0.0.5:80"}, MaxBodySize: "1m; return 200"}}},
		"scheme":          {Host: "f.example.com", Locations: []Location{{Path: "/", Backends: []string{"10.0.0.6:80"}, Scheme: "ftp"}}},
		"redirect target": {Host: "g.example.com", RedirectTo: "evil.example.com$request_uri"},
	}
	for what, bad := range cases {
		files, errs := Render(Config{Webroot: "/var/www/acme", Sites: []Site{good, bad}})
		if len(errs) != 1 || !strings.Contains(errs[0].Error(), bad.Host) {
			t.Errorf("%s: errors %v, want one naming %s", what, errs, bad.Host)
		}
		if files[FileName(bad.Host)] != nil || files[FileName(good.Host)] == nil {
			t.Errorf("%s: the bad site was rendered or the good one was not", what)
		}
	}
}

func TestWildcardHostsGetSafeFileAndUpstreamNames(t *testing.T) {
	files, errs := Render(Config{Webroot: "/w", Sites: []Site{
		{Host: "*.example.com", Locations: []Location{{Path: "/", Backends: []string{"10.0.0.2:80"}}}},
		{Host: "example.*", Locations: []Location{{Path: "/", Backends: []string{"10.0.0.3:80"}}}},
	}})
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	for _, name := range []string{"berth-_.example.com.conf", "berth-example._.conf"} {
		data := files[name]
		if data == nil || !Owned(name) {
			t.Fatalf("no owned file %s in %v", name, len(files))
		}
		if strings.Contains(string(data), "upstream berth-*") {
			t.Fatalf("%s has a '*' in an upstream name", name)
		}
	}
}

func TestSnippetBracesInQuotesOrCommentsDoNotCount(t *testing.T) {
	for snippet, ok := range map[string]bool{
		`return 200 "}";`:             true,
		"add_header X-A b; # }":       true,
		`location /x { return 204; }`: true,
		"} server {":                  false,
		`if ($host) { return 403;`:    false,
		`add_header X "unterminated;`: false,
	} {
		if err := checkSnippet(snippet); (err == nil) != ok {
			t.Errorf("checkSnippet(%q) = %v, want ok=%v", snippet, err, ok)
		}
	}
}
