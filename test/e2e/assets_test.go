package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEnsureAssets(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: the kernel download is not short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, err := EnsureAssets(ctx, CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{a.Kernel, a.Initrd} {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Fatalf("asset %s missing or empty: %v", p, err)
		}
	}
	// The kernel is what the Secure Boot tests boot: it must carry a
	// signature (it is Debian's signed cloud kernel).
	if signed, err := PESigned(a.Kernel); err != nil || !signed {
		t.Errorf("kernel %s: signed=%v (%v), want signed", a.Kernel, signed, err)
	}
	// The archive must unpack with the system's cpio: an independent
	// reader of the newc format.
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Fatalf("cpio is needed (test/deps.sh installs it): %v", err)
	}
	cmd := exec.Command("cpio", "-t")
	cmd.Stdin = bytes.NewReader(gunzipFile(t, a.Initrd))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	list := string(out)
	for _, want := range []string{"init", "bin/busybox", "etc/udhcpc/default.script", filepath.Join("lib/modules", "virtio_net.ko")} {
		if !strings.Contains(list, want+"\n") {
			t.Errorf("initrd lacks %s; has:\n%s", want, list)
		}
	}
}

// gunzipFile is the content of a gzip-compressed file (an initramfs).
func gunzipFile(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return plain
}
