package cli_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/fleetboot/fleetboot/edge"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// A host set with --once boots its image until the installer reports done
// to the edge; the coordinator then flips it to local boot, and the edge
// serves the exit-to-disk script — Razor's and Foreman's build mode.
func TestOnceInstallCallbackFlipsToLocal(t *testing.T) {
	storeDir, url, env := labWithHost(t, "inst", "52:54:00:00:0a:01", "--once")
	base := startLabEdge(t, url, storeDir)
	script := func() string {
		resp, err := http.Get(base + "/boot.ipxe?mac=52:54:00:00:0a:01&arch=x86_64&platform=efi")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitfor.True(t, "the install script", func() bool { return strings.Contains(script(), "/artifacts/inst/vmlinuz") })
	postDone := func(query string) int {
		t.Helper()
		resp, err := http.Post(base+"/api/v1/done?mac=52:54:00:00:0a:01"+query, "application/json", strings.NewReader(`{"ok":true}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	// Anyone on the boot network can post; without the token the script
	// carried, the edge refuses and the host keeps its install.
	for _, forged := range []string{"", "&token=forged"} {
		if code := postDone(forged); code != http.StatusForbidden {
			t.Fatalf("done callback with token %q: HTTP %d, want 403", forged, code)
		}
	}
	if r := run(t, env, "host", "show", "52:54:00:00:0a:01", "-o", "json"); !strings.Contains(r.stdout, `"state": "boot"`) {
		t.Fatalf("a forged done callback changed the host:\n%s", r.stdout)
	}

	// The installer posts with the token from its kernel command line.
	m := regexp.MustCompile(` fleetboot\.token=([A-Za-z0-9_-]+)`).FindStringSubmatch(script())
	if m == nil {
		t.Fatalf("no fleetboot.token= in the script:\n%s", script())
	}
	if code := postDone("&token=" + m[1]); code/100 != 2 {
		t.Fatalf("done callback: HTTP %d", code)
	}
	r := run(t, env, "host", "show", "52:54:00:00:0a:01", "-o", "json")
	if !strings.Contains(r.stdout, `"state": "local"`) || strings.Contains(r.stdout, `"once": true`) {
		t.Errorf("after done the host is:\n%s", r.stdout)
	}
	waitfor.True(t, "the exit-to-disk script", func() bool {
		s := script()
		return strings.Contains(s, "exit") && !strings.Contains(s, "/artifacts/inst/vmlinuz")
	})
}

// labWithHost starts a coordinator with a dir:// store, site lab, an image
// and one host booting it (host set MAC --image IMAGE, plus extra flags).
func labWithHost(t *testing.T, image, mac string, hostFlags ...string) (storeDir, url string, env []string) {
	t.Helper()
	storeDir = t.TempDir()
	url = startCoordinator(t, "dir://"+storeDir)
	env = []string{"FLEETBOOT_NATS=" + url}
	files := t.TempDir()
	for _, args := range [][]string{
		{"site", "add", "lab", "--subnet", "10.0.0.0/24"},
		{"image", "add", image, "--kernel", writeFile(t, files, "vmlinuz", "k"), "--initrd", writeFile(t, files, "initrd.img", "i")},
		append([]string{"host", "set", mac, "--image", image}, hostFlags...),
	} {
		if r := run(t, env, args...); r.code != 0 {
			t.Fatalf("%v: %s", args, r.stderr)
		}
	}
	return storeDir, url, env
}

// startLabEdge runs edge e1 of site lab in the test, HTTP only, against the
// coordinator at url and the store in storeDir, until the test ends; it
// returns the edge's HTTP base URL.
func startLabEdge(t *testing.T, url, storeDir string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- edge.Run(ctx, edge.Config{
			Name: "e1", Site: "lab", NATSURL: url, StateDir: t.TempDir(), CacheDir: t.TempDir(), CacheSize: 1 << 30,
			Store: artifactstore.Config{URL: "dir://" + storeDir}, HTTPListen: "127.0.0.1:0",
			Ready: func(a edge.Addrs) { ready <- a.HTTP },
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case a := <-ready:
		return "http://" + a
	case err := <-done:
		t.Fatalf("edge: %v", err)
		return ""
	}
}
