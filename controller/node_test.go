package controller

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/berthproxy/berth/nginxconf"
)

// Two files nginx rejects in one push: both are held and every other file
// lands in the same call, with one reload.
func TestNodeConvergeHoldsEveryRejectedFileAndLandsTheRestAtOnce(t *testing.T) {
	dir := t.TempDir()
	eng := &fakeEngine{containers: []Container{testNginx}, confDir: dir}
	eng.validate = func(dir string) (int, string) {
		for _, bad := range []string{"berth-bad1.test.conf", "berth-bad2.test.conf"} {
			if _, err := os.Stat(filepath.Join(dir, bad)); err == nil {
				return 1, fmt.Sprintf("nginx: [emerg] unknown directive in %s/%s:1", dir, bad)
			}
		}
		return 0, "ok"
	}
	node := NewNode(eng, NewNginx(eng, "", "", ""), dir)
	desired := nginxconf.Files{nginxconf.DefaultFile: []byte("#\n"), "berth-bad1.test.conf": []byte("x"),
		"berth-good.test.conf": []byte("g"), "berth-bad2.test.conf": []byte("y")}
	out, err := node.Converge(context.Background(), desired, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if !out.Changed || !slices.Equal(out.Held, []string{"berth-bad1.test.conf", "berth-bad2.test.conf"}) || out.Rejection == "" {
		t.Fatalf("outcome %+v; want changed, both bad files held, nginx's message", out)
	}
	files, _ := nginxconf.ReadOwned(dir)
	if files["berth-good.test.conf"] == nil || files[nginxconf.DefaultFile] == nil || len(files) != 2 {
		t.Fatalf("on disk: %v; want the default server and good.test only", slices.Sorted(maps.Keys(files)))
	}
	if eng.signals != 1 {
		t.Fatalf("%d reloads, want 1", eng.signals)
	}
	out, err = node.Converge(context.Background(), desired, quietLog())
	if err != nil || out.Changed || len(out.Held) != 2 || eng.signals != 1 {
		t.Fatalf("same files again: %+v, %v, %d reloads; want unchanged, still held, no reload", out, err, eng.signals)
	}
}
