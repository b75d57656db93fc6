package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEnsureRevisions: the rollout test's initramfs images differ where
// they should (read back with the system's cpio, an independent reader):
// each good one holds its revision number, the broken one an /init that
// exits; and building them again gives the same files.
func TestEnsureRevisions(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: the kernel download is not short")
	}
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Fatalf("cpio is needed (test/deps.sh installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, err := EnsureAssets(ctx, CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := EnsureRevisions(CacheDir(), filepath.Dir(a.Kernel))
	if err != nil {
		t.Fatal(err)
	}
	extract := func(initrd, file string) string {
		t.Helper()
		cmd := exec.Command("cpio", "-i", "--quiet", "--to-stdout", file)
		cmd.Stdin = bytes.NewReader(gunzipFile(t, initrd))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: cpio -i %s: %v", initrd, file, err)
		}
		return string(out)
	}
	for i, initrd := range r.Good {
		if got, want := strings.TrimSpace(extract(initrd, "etc/fleetboot-rev")), string(rune('1'+i)); got != want {
			t.Errorf("%s: etc/fleetboot-rev %q, want %q", initrd, got, want)
		}
		if !strings.Contains(extract(initrd, "init"), "FLEETBOOT-REV") {
			t.Errorf("%s: its /init does not print the revision", initrd)
		}
	}
	if got := extract(r.Broken, "init"); got != brokenInit {
		t.Errorf("%s: /init is\n%s\nwant the broken one", r.Broken, got)
	}
	again, err := EnsureRevisions(CacheDir(), filepath.Dir(a.Kernel))
	if err != nil || again != r {
		t.Errorf("built again: %+v, %v; want the cached %+v", again, err, r)
	}
}
