package controller

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/berthproxy/berth/internal/testenv"
)

func TestNginxProxyLabels(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		want  map[string]string
		warns []string // substrings, one per expected warning
	}{
		{"no VIRTUAL_HOST maps nothing", map[string]string{"VIRTUAL_PORT": "8080"}, nil, nil},
		{"VIRTUAL_HOST alone routes without a certificate, as nginx-proxy without the companion",
			map[string]string{"VIRTUAL_HOST": "a.example.com, b.example.com"},
			map[string]string{"proxy.host": "a.example.com,b.example.com", "proxy.acme": "off"}, nil},
		{"LETSENCRYPT_HOST naming every host turns certificates on",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "LETSENCRYPT_HOST": "a.example.com"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "on"}, nil},
		{"ACME_HOST, the companion's current name, wins over LETSENCRYPT_HOST",
			map[string]string{"VIRTUAL_HOST": "a.example.com,b.example.com", "ACME_HOST": "a.example.com,b.example.com", "LETSENCRYPT_HOST": "a.example.com"},
			map[string]string{"proxy.host": "a.example.com,b.example.com", "proxy.acme": "on"}, nil},
		{"a subset in LETSENCRYPT_HOST puts the other hosts on a nocert route with the same options",
			map[string]string{"VIRTUAL_HOST": "a.example.com,intranet.lan", "LETSENCRYPT_HOST": "A.example.com", "VIRTUAL_PORT": "3000"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "on", "proxy.port": "3000",
				"proxy.nocert.host": "intranet.lan", "proxy.nocert.acme": "off", "proxy.nocert.port": "3000"}, nil},
		{"LETSENCRYPT_HOST names outside VIRTUAL_HOST are a warning",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "LETSENCRYPT_HOST": "a.example.com,other.example.com"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "on"}, []string{"other.example.com"}},
		{"ACME_SINGLE_DOMAIN_CERTS=true asks for one certificate per host",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "ACME_HOST": "a.example.com", "ACME_SINGLE_DOMAIN_CERTS": "true"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "on", "proxy.cert-per-host": "on"}, nil},
		{"port and path are copied",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "VIRTUAL_PORT": " 8080 ", "VIRTUAL_PATH": "/api/"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off", "proxy.port": "8080", "proxy.path": "/api/"}, nil},
		{"VIRTUAL_DEST=/ with a VIRTUAL_PATH strips the prefix",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "VIRTUAL_PATH": "/app1/", "VIRTUAL_DEST": "/"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off", "proxy.path": "/app1/", "proxy.strip-path": "on"}, nil},
		{"VIRTUAL_DEST=/ without a path changes nothing",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "VIRTUAL_DEST": "/"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off"}, nil},
		{"another VIRTUAL_DEST is a warning",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "VIRTUAL_PATH": "/a", "VIRTUAL_DEST": "/b/"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off", "proxy.path": "/a"}, []string{"VIRTUAL_DEST"}},
		{"a regular-expression VIRTUAL_PATH goes through, so the label parser refuses the container rather than serve it at /",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "VIRTUAL_PATH": "~^/(a|b)/"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off", "proxy.path": "~^/(a|b)/"}, nil},
		{"VIRTUAL_PROTO https and grpc map onto proxy.scheme",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "VIRTUAL_PROTO": "GRPCS"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off", "proxy.scheme": "grpcs"}, nil},
		{"VIRTUAL_PROTO uwsgi is a warning",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "VIRTUAL_PROTO": "uwsgi"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off"}, []string{"uwsgi"}},
		{"VIRTUAL_PROTO fastcgi is a warning",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "VIRTUAL_PROTO": "fastcgi"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off"}, []string{"fastcgi"}},
		{"HTTPS_METHOD=redirect is berth's redirect",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "HTTPS_METHOD": "redirect"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off", "proxy.https": "redirect"}, nil},
		{"HTTPS_METHOD=noredirect serves both and, as nginx-proxy, sends no HSTS",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "HTTPS_METHOD": "noredirect"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off", "proxy.https": "both", "proxy.hsts": "off"}, nil},
		{"an HSTS value beside noredirect is ignored with a warning",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "HTTPS_METHOD": "noredirect", "HSTS": "max-age=60"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off", "proxy.https": "both", "proxy.hsts": "off"}, []string{"HSTS"}},
		{"HTTPS_METHOD=nohttp is only",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "HTTPS_METHOD": "nohttp"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off", "proxy.https": "only"}, nil},
		{"HTTPS_METHOD=nohttps is off",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "HTTPS_METHOD": "nohttps"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off", "proxy.https": "off"}, nil},
		{"an unknown HTTPS_METHOD goes through for the label parser to refuse",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "HTTPS_METHOD": "sometimes"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off", "proxy.https": "sometimes"}, nil},
		{"HSTS values and off are copied",
			map[string]string{"VIRTUAL_HOST": "a.example.com", "HSTS": "max-age=31536000; includeSubDomains; preload"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off", "proxy.hsts": "max-age=31536000; includeSubDomains; preload"}, nil},
		{"regular-expression hosts are dropped with a warning, wildcards kept",
			map[string]string{"VIRTUAL_HOST": "~^foo\\..*\\.nip\\.io,*.example.com,a.example.com,a.example.com"},
			map[string]string{"proxy.host": "*.example.com,a.example.com", "proxy.acme": "off"}, []string{"regular expression"}},
		{"VIRTUAL_HOST_MULTIPORTS is a warning",
			map[string]string{"VIRTUAL_HOST_MULTIPORTS": "a.example.com: {}"}, nil, []string{"VIRTUAL_HOST_MULTIPORTS"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, warns := NginxProxyLabels(tc.env)
			if !maps.Equal(got, tc.want) {
				t.Errorf("labels:\n got %v\nwant %v", got, tc.want)
			}
			if len(warns) != len(tc.warns) {
				t.Fatalf("warnings: got %q, want %d matching %q", warns, len(tc.warns), tc.warns)
			}
			for i, w := range tc.warns {
				if !strings.Contains(warns[i], w) {
					t.Errorf("warning %d: %q does not mention %q", i, warns[i], w)
				}
			}
		})
	}
}

func TestMergeNginxProxy(t *testing.T) {
	env := map[string]string{"VIRTUAL_HOST": "a.example.com", "VIRTUAL_PORT": "3000"}
	tests := []struct {
		name     string
		labels   map[string]string
		env      map[string]string
		want     map[string]string
		wantWarn string // substring; "" means no warning
	}{
		{"a container without nginx-proxy variables keeps its labels", map[string]string{"proxy.host": "b.example.com"},
			map[string]string{"PATH": "/bin"}, map[string]string{"proxy.host": "b.example.com"}, ""},
		{"env alone becomes labels", nil, env,
			map[string]string{"proxy.host": "a.example.com", "proxy.port": "3000", "proxy.acme": "off"}, ""},
		{"other proxy.* labels are added over the env labels, and win",
			map[string]string{"proxy.max-body-size": "1g", "proxy.port": "4000"}, env,
			map[string]string{"proxy.host": "a.example.com", "proxy.port": "4000", "proxy.acme": "off", "proxy.max-body-size": "1g"}, ""},
		{"proxy.host and VIRTUAL_HOST: the labels alone, one warning",
			map[string]string{"proxy.host": "b.example.com"}, env,
			map[string]string{"proxy.host": "b.example.com"}, "label proxy.host is set"},
		{"a named route's host counts as proxy.host",
			map[string]string{"proxy.web.host": "b.example.com"}, env,
			map[string]string{"proxy.web.host": "b.example.com"}, "label proxy.web.host is set"},
		{"env warnings come back as one warning", nil,
			map[string]string{"VIRTUAL_HOST": "a.example.com", "VIRTUAL_PROTO": "uwsgi", "VIRTUAL_PATH": "/a", "VIRTUAL_DEST": "/x"},
			map[string]string{"proxy.host": "a.example.com", "proxy.acme": "off", "proxy.path": "/a"}, "VIRTUAL_DEST"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := maps.Clone(tc.labels)
			got, warn := MergeNginxProxy(tc.labels, tc.env)
			if !maps.Equal(got, tc.want) {
				t.Errorf("labels:\n got %v\nwant %v", got, tc.want)
			}
			if (warn == "") != (tc.wantWarn == "") || !strings.Contains(warn, tc.wantWarn) {
				t.Errorf("warning %q, want one containing %q", warn, tc.wantWarn)
			}
			if !maps.Equal(tc.labels, before) {
				t.Errorf("the container's labels were modified: %v", tc.labels)
			}
		})
	}
}

func TestNginxProxySourceNamesTheVariable(t *testing.T) {
	for label, want := range map[string]string{"proxy.hsts": "HSTS", "proxy.nocert.port": "VIRTUAL_PORT",
		"proxy.strip-path": "VIRTUAL_DEST", "proxy.max-body-size": "", "other": ""} {
		if got := NginxProxySource(label); got != want {
			t.Errorf("NginxProxySource(%q) = %q, want %q", label, got, want)
		}
	}
}

func TestEnvMapKeepsOnlyNginxProxyVariables(t *testing.T) {
	got := envMap([]string{"PATH=/bin", "DB_PASSWORD=secret", "VIRTUAL_HOST=a.example.com", "HSTS=off", "VIRTUAL_HOST=b.example.com", "VIRTUAL_PATH"})
	want := map[string]string{"VIRTUAL_HOST": "b.example.com", "HSTS": "off", "VIRTUAL_PATH": ""}
	if !maps.Equal(got, want) {
		t.Errorf("envMap = %v, want %v", got, want)
	}
	if keys := slices.Collect(maps.Keys(envMap([]string{"PATH=/bin"}))); len(keys) != 0 {
		t.Errorf("no nginx-proxy variables should give an empty map, got %v", keys)
	}
}

// On the real engine: with ReadEnv the adapter reads the nginx-proxy
// variables of a container that has no proxy.host label, and nothing else
// of its environment; without ReadEnv it reads none.
func TestDockerEngineReadsNginxProxyEnv(t *testing.T) {
	testenv.SkipShort(t, "uses the Docker engine")
	testenv.RequireDocker(t)
	img := testenv.BackendImage(t)
	// Started: a container created and never started is not read at all.
	args := append([]string{"run", "-d"}, testenv.LabelArgs()...)
	args = append(args, "-e", "VIRTUAL_HOST=np.example.com", "-e", "VIRTUAL_PORT=8080", "-e", "DB_PASSWORD=secret", img)
	id := strings.TrimSpace(testenv.Docker(t, args...))
	t.Cleanup(func() { testenv.TryDocker("rm", "-f", "-v", id) })

	d, err := NewDockerEngine()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	find := func() Container {
		t.Helper()
		cs, err := d.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.ID == id {
				return c
			}
		}
		t.Fatalf("container %s not listed", shortID(id))
		return Container{}
	}
	if c := find(); c.Env != nil {
		t.Errorf("without ReadEnv the environment should not be read, got %v", c.Env)
	}
	d.ReadEnv = true
	want := map[string]string{"VIRTUAL_HOST": "np.example.com", "VIRTUAL_PORT": "8080"}
	if c := find(); !maps.Equal(c.Env, want) {
		t.Errorf("Env = %v, want %v", c.Env, want)
	}
	if c := find(); !maps.Equal(c.Env, want) { // from the cache
		t.Errorf("cached Env = %v, want %v", c.Env, want)
	}
}
