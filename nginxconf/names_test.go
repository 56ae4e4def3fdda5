package nginxconf

import (
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestFileNameKeepsShortNamesAndBoundsLongOnes(t *testing.T) {
	if got := FileName("app.example.com"); got != "berth-app.example.com.conf" {
		t.Errorf("FileName(app.example.com) = %q, want today's name", got)
	}
	fits := strings.Repeat("a", maxFileName-len(FilePrefix)-len(FileSuffix))
	if got := FileName(fits); got != FilePrefix+fits+FileSuffix {
		t.Errorf("a %d-character host that fits got %q, want its plain name", len(fits), got)
	}
	// The controller finds rejected files in nginx -t output with this.
	quarantine := regexp.MustCompile(`^berth-[A-Za-z0-9._-]+\.conf$`)
	long := []string{fits + "a", host253, host253[:252] + "e", strings.Repeat("x", 200) + "." + strings.Repeat("y", 52)}
	seen := map[string]string{}
	for _, h := range long {
		name := FileName(h)
		if len(name) > maxFileName || len(name) > 255 || !Owned(name) || name == DefaultFile || !quarantine.MatchString(name) {
			t.Errorf("FileName(%d characters) = %q (%d bytes): want at most %d bytes, Owned, not the default file", len(h), name, len(name), maxFileName)
		}
		if !strings.Contains(name, "_") {
			t.Errorf("FileName(%d characters) = %q has no '_', so a valid host's plain name could equal it", len(h), name)
		}
		if !strings.HasPrefix(name, FilePrefix+h[:100]) {
			t.Errorf("FileName(%d characters) = %q does not start with the host", len(h), name)
		}
		if FileName(h) != name {
			t.Errorf("FileName(%q) is not deterministic", h)
		}
		if other, dup := seen[name]; dup {
			t.Errorf("hosts %q and %q share the file %q", other, h, name)
		}
		seen[name] = h
	}
}

func TestLongestFileNamesCanBeWritten(t *testing.T) {
	dir := t.TempDir()
	files := Files{}
	for _, n := range []int{maxFileName - len(FilePrefix) - len(FileSuffix), maxFileName - len(FilePrefix) - len(FileSuffix) + 1, 253} {
		files[FileName(strings.Repeat("a", n))] = []byte("# " + strconv.Itoa(n) + "\n")
	}
	if _, err := Apply(dir, Files{}, files); err != nil {
		t.Fatalf("writing the longest site files: %v", err)
	}
	if got, err := ReadOwned(dir); err != nil || len(got) != len(files) {
		t.Fatalf("read back %d files (%v), want %d", len(got), err, len(files))
	}
}

func TestRenderNamesEverySiteFileWithFileName(t *testing.T) {
	hosts := []string{"a.test", host253}
	var sites []Site
	for _, h := range hosts {
		sites = append(sites, Site{Host: h, Locations: []Location{{Path: "/", Backends: []string{"10.0.0.1:80"}}}})
	}
	files := render(t, Config{Webroot: "/w", Sites: sites})
	for _, h := range hosts {
		if _, ok := files[FileName(h)]; !ok {
			t.Errorf("no file %q for %d-character host among %d files", FileName(h), len(h), len(files))
		}
	}
}

func TestRenderRejectsBadTrustedProxies(t *testing.T) {
	for _, v := range []string{"", "example.com", "10.0.0.0/33", "10.0.0.1;", "10.0.0.0/8 all", "fe80::1%eth0", "300.1.1.1", "::/129"} {
		files, errs := Render(Config{Webroot: "/w", TrustedProxies: []string{"10.0.0.0/8", v},
			Sites: []Site{{Host: "a.test", Locations: []Location{{Path: "/"}}}}})
		if len(errs) != 1 || !strings.Contains(errs[0].Error(), `"`+v+`"`) {
			t.Errorf("trusted proxy %q: want one error naming it, got %v", v, errs)
		}
		if len(files) != 0 {
			t.Errorf("trusted proxy %q: rendered %d files, want none (the running config stays)", v, len(files))
		}
	}
}

func TestHashSizesLetNginxBuildItsHash(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randomHost := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[rng.IntN(36)]
		}
		return string(b)
	}
	for _, count := range []int{0, 1, 5, 30, 31, 32, 33, 100, 1000, 5000} {
		for _, length := range []int{1, 20, 45, 46, 47, 60, 63, 120, 253, -1} {
			if length > 0 && length < 3 && count > 36 {
				continue // not that many distinct names this short
			}
			var hosts []string
			for seen := map[string]bool{}; len(hosts) < count; {
				n := length
				if n < 0 {
					n = 1 + rng.IntN(253) // mixed lengths
				}
				if h := randomHost(n); !seen[h] { // sites have distinct hosts
					seen[h] = true
					hosts = append(hosts, h)
				}
			}
			bucket, maxSize, needed := hashSizes(hosts)
			if !needed && (bucket != defaultHashBucketSize || maxSize != defaultHashMaxSize) {
				t.Errorf("%d names of length %d: not needed but sizes %d/%d differ from nginx's defaults", count, length, bucket, maxSize)
			}
			if err := nginxHashInit(append(hosts, "_"), bucket, maxSize); err != "" {
				t.Errorf("%d names of length %d with bucket %d, max %d (written: %v): %s", count, length, bucket, maxSize, needed, err)
			}
		}
	}
}

func TestHashSizesAreWrittenOnlyWhenNginxDefaultsFail(t *testing.T) {
	if _, _, needed := hashSizes([]string{"app.example.com"}); needed {
		t.Error("one short name: sizes written, want nginx's defaults left alone")
	}
	name47 := strings.Repeat("a", 40) + ".ab.com"
	if err := nginxHashInit([]string{name47, "_"}, defaultHashBucketSize, defaultHashMaxSize); err == "" {
		t.Fatal("model of nginx accepts a 47-character name with its default bucket; the model is wrong")
	}
	if _, _, needed := hashSizes([]string{name47}); !needed {
		t.Error("a 47-character name: sizes not written, but nginx's defaults cannot hold it")
	}
}

// nginxHashInit models ngx_hash_init (src/core/ngx_hash.c, unchanged from
// nginx 1.22 to 1.30) on a 64-bit build with 64-byte cache lines: it
// returns what nginx would complain about, or "" when the hash is built
// within bucketSize.
func nginxHashInit(names []string, bucketSize, maxSize int) string {
	bucketSize = align(bucketSize, 64)
	for _, n := range names {
		if bucketSize < hashEntry(len(n))+8 {
			return "could not build server_names_hash, you should increase server_names_hash_bucket_size"
		}
	}
	room := bucketSize - 8
	start := max(len(names)/(room/16), 1)
	if maxSize > 10000 && len(names) > 0 && maxSize/len(names) < 100 {
		start = maxSize - 1000
	}
	keys := make([]uint64, len(names))
	for i, n := range names {
		for _, c := range []byte(n) {
			keys[i] = keys[i]*31 + uint64(c)
		}
	}
	for size := start; size <= maxSize; size++ {
		used := make([]int, size)
		fits := true
		for i, n := range names {
			k := keys[i] % uint64(size)
			used[k] += hashEntry(len(n))
			if used[k] > room {
				fits = false
				break
			}
		}
		if fits {
			return ""
		}
	}
	return "could not build optimal server_names_hash"
}

// A 253-character host with basic auth renders files that can all be
// written: the htpasswd files are shortened like the site file, suffix kept.
func TestLongHostWithBasicAuthCanBeWritten(t *testing.T) {
	login := "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="
	files, errs := Render(Config{Webroot: "/var/www/acme", Sites: []Site{{Host: host253, Locations: []Location{
		{Path: "/", Backends: []string{"10.0.0.1:80"}, BasicAuth: []string{login}},
		{Path: "/admin", Backends: []string{"10.0.0.2:80"}, BasicAuth: []string{login}},
	}}}})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var logins []string
	for name := range files {
		if len(name) > maxFileName || !Owned(name) {
			t.Errorf("file %q (%d bytes): want at most %d bytes and Owned", name, len(name), maxFileName)
		}
		if strings.HasSuffix(name, HtpasswdSuffix) {
			logins = append(logins, name)
		}
	}
	if len(logins) != 2 {
		t.Fatalf("got htpasswd files %q, want two", logins)
	}
	site := string(files[FileName(host253)])
	for _, name := range logins {
		if !strings.Contains(site, "auth_basic_user_file conf.d/"+name+";") {
			t.Errorf("the site does not reference %s", name)
		}
	}
	if _, err := Apply(t.TempDir(), Files{}, files); err != nil {
		t.Fatalf("writing the files of a 253-character host with basic auth: %v", err)
	}
}
