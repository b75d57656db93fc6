package cli_test

import (
	binenc "encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetboot/fleetboot/proto"
)

// fakeBzImage is a file with an x86 setup header naming a kernel release.
func fakeBzImage(t *testing.T, dir string) string {
	t.Helper()
	img := make([]byte, 0x1000)
	copy(img[0x202:], "HdrS")
	binenc.LittleEndian.PutUint16(img[0x20e:], 0x800)
	copy(img[0xa00:], "6.1.0-99-test (builder) #1\x00")
	p := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func tinyStatic(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := writeFile(t, dir, "main.go", "package main\nfunc main() {}\n")
	bin := filepath.Join(dir, "tiny")
	cmd := exec.Command("go", "build", "-o", bin, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestDiscoveryBuild: the initramfs is written, uploaded and registered as
// an image whose command line names the edge, and the site's unknown
// machines are pointed at it; bad input is refused with nothing changed.
func TestDiscoveryBuild(t *testing.T) {
	url := startCoordinator(t, "dir://"+t.TempDir())
	env := []string{"FLEETBOOT_NATS=" + url}
	if r := run(t, env, "site", "add", "lab", "--subnet", "10.0.0.0/24"); r.code != 0 {
		t.Fatalf("site add: %s", r.stderr)
	}
	dir := t.TempDir()
	kernel := fakeBzImage(t, dir)
	mods := t.TempDir()
	writeFile(t, mods, "virtio_net.ko", "not really a module")
	bin := tinyStatic(t)
	out := filepath.Join(dir, "out")

	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{name: "no kernel", args: []string{"--out", out}, err: "--kernel and --out are required"},
		{name: "kernel missing", args: []string{"--kernel", filepath.Join(dir, "nope"), "--out", out}, err: "not a readable file"},
		{name: "site that does not exist", args: []string{"--kernel", kernel, "--out", out, "--binary", bin, "--site", "nowhere"}, err: "site nowhere"},
		{name: "site without registering", args: []string{"--kernel", kernel, "--out", out, "--site", "lab", "--no-register"}, err: "--site needs the image registered"},
		{name: "dynamic binary", args: []string{"--kernel", kernel, "--out", out, "--binary", "/bin/sh"}, err: "dynamically linked"},
		{name: "cmdline with a newline", args: []string{"--kernel", kernel, "--out", out, "--cmdline", "a\nb"}, err: "--cmdline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, env, append([]string{"discovery", "build"}, tc.args...)...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.err) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
				t.Errorf("exit %d, stderr %q; want one line with %q", r.code, r.stderr, tc.err)
			}
		})
	}
	if r := run(t, env, "image", "show", "discovery"); r.code == 0 {
		t.Fatalf("a refused build registered the image:\n%s", r.stdout)
	}

	r := run(t, env, "discovery", "build", "--kernel", kernel, "--out", out, "--modules", mods, "--binary", bin, "--site", "lab")
	if r.code != 0 {
		t.Fatalf("discovery build: %d %s", r.code, r.stderr)
	}
	for _, want := range []string{"discovery.img", "kernel 6.1.0-99-test", "modules from " + mods + ": 1 (virtio_net.ko)", "not found", "registered image discovery", "site lab: unknown machines now boot discovery"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	for _, f := range []string{"discovery.img", "vmlinuz"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	var im proto.Image
	r = run(t, env, "image", "show", "discovery", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &im); err != nil {
		t.Fatalf("image show: %v %s", err, r.stderr)
	}
	if im.Cmdline != "fleetboot.edge={{edge}} console=tty0 console=ttyS0,115200" || len(im.Artifacts) != 2 {
		t.Errorf("image %+v", im)
	}
	var s proto.Site
	r = run(t, env, "site", "show", "lab", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("site show: %v %s", err, r.stderr)
	}
	if s.Unknown != proto.UnknownDiscover || s.DiscoveryImage != "discovery" || len(s.Networks) != 1 || s.Networks[0].Subnet != "10.0.0.0/24" {
		t.Errorf("site %+v: want unknown discover with image discovery, its network kept", s)
	}
}

func TestDiscoverRefusesOutsideInit(t *testing.T) {
	r := run(t, nil, "discover")
	if r.code == 0 || !strings.Contains(r.stderr, "PID 1") {
		t.Errorf("discover outside init: exit %d %q", r.code, r.stderr)
	}
	r = run(t, nil, "discover", "--facts")
	var f proto.Facts
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &f) != nil || f.CPUs < 1 {
		t.Errorf("discover --facts: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
}
