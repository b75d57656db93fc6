package initramfs

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// readCPIO parses a newc archive back: name -> entry.
func readCPIO(t *testing.T, data []byte) map[string]Entry {
	t.Helper()
	out := map[string]Entry{}
	for off := 0; ; {
		if len(data) < off+110 || string(data[off:off+6]) != "070701" {
			t.Fatalf("no newc header at %d", off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(data[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return uint32(v)
		}
		mode, size, rmaj, rmin, nsize := field(1), int(field(6)), field(9), field(10), int(field(11))
		name := string(data[off+110 : off+110+nsize-1])
		off = align4(off + 110 + nsize)
		if name == "TRAILER!!!" {
			return out
		}
		out[name] = Entry{Mode: mode, Data: data[off : off+size], Major: rmaj, Minor: rmin}
		off = align4(off + size)
	}
}

func align4(n int) int { return (n + 3) &^ 3 }

func TestWriteCPIORoundTrip(t *testing.T) {
	in := map[string]Entry{
		"dev":         {Mode: TypeDir | 0o755},
		"dev/console": {Mode: TypeChar | 0o600, Major: 5, Minor: 1},
		"init":        {Mode: TypeFile | 0o755, Data: []byte("odd length")},
		"link":        {Mode: TypeSymlink | 0o777, Data: []byte("init")},
		"x":           {Mode: TypeFile | 0o644, Data: []byte{}},
	}
	var b bytes.Buffer
	if err := WriteCPIO(&b, in); err != nil {
		t.Fatal(err)
	}
	got := readCPIO(t, b.Bytes())
	if d := cmp.Diff(in, got, cmp.Comparer(bytes.Equal)); d != "" {
		t.Errorf("round trip (-in +out):\n%s", d)
	}
	// cpio(1), an independent reader of the format, reads it as well.
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Fatalf("cpio is needed (test/deps.sh installs it): %v", err)
	}
	cmd := exec.Command("cpio", "-t")
	cmd.Stdin = bytes.NewReader(b.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "dev/console") {
		t.Errorf("cpio -t: %v\n%s", err, out)
	}
}

// staticBinary builds a tiny static program.
func staticBinary(t *testing.T) string { return tinyBinary(t, "exe") }

// tinyBinary builds an empty Go program with CGO off: static with
// buildmode exe, dynamically linked (an ELF interpreter) with pie.
func tinyBinary(t *testing.T, buildmode string) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tiny")
	cmd := exec.Command("go", "build", "-buildmode="+buildmode, "-o", bin, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestBuild(t *testing.T) {
	bin := staticBinary(t)
	mods := writeFiles(t, map[string]string{
		"modules.dep": "kernel/drivers/virtio/virtio.ko:\n" +
			"kernel/drivers/virtio/virtio_ring.ko:\n" +
			"kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n" +
			"kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n" +
			"kernel/drivers/net/net_failover.ko:\n" +
			"kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko\n" +
			"kernel/sound/snd.ko:\n",
		"kernel/drivers/virtio/virtio.ko":       "virtio",
		"kernel/drivers/virtio/virtio_ring.ko":  "ring",
		"kernel/drivers/virtio/virtio_pci.ko":   "pci",
		"kernel/drivers/net/virtio_net.ko":      "net",
		"kernel/drivers/net/net_failover.ko":    "failover",
		"kernel/drivers/block/virtio_blk.ko.xz": "blk",
		"kernel/sound/snd.ko":                   "sound",
		"modules.builtin":                       "kernel/drivers/net/ethernet/intel/e1000/e1000.ko\nkernel/fs/ext4/ext4.ko\n",
	})
	res, err := Build(Config{Binary: bin, ModulesDir: mods, Modules: []string{"virtio_pci", "virtio-net", "virtio_blk", "e1000", "nvme"}})
	if err != nil {
		t.Fatal(err)
	}
	wantMods := []string{"virtio_ring.ko", "virtio.ko", "virtio_pci.ko", "net_failover.ko", "virtio_net.ko", "virtio_blk.ko.xz"}
	if d := cmp.Diff(wantMods, res.Modules); d != "" {
		t.Errorf("modules, dependencies first (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"e1000"}, res.Builtin); d != "" {
		t.Errorf("built in (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"nvme"}, res.Missing); d != "" {
		t.Errorf("missing (-want +got):\n%s", d)
	}
	zr, err := gzip.NewReader(bytes.NewReader(res.Image))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	got := readCPIO(t, raw)
	binData, _ := os.ReadFile(bin)
	if !bytes.Equal(got["init"].Data, binData) || got["init"].Mode != TypeFile|0o755 {
		t.Errorf("init is not the binary (mode %o)", got["init"].Mode)
	}
	if c := got["dev/console"]; c.Mode != TypeChar|0o600 || c.Major != 5 || c.Minor != 1 {
		t.Errorf("dev/console %+v", c)
	}
	var names []string
	for n := range got {
		if strings.HasPrefix(n, ModuleDir+"/") {
			names = append(names, strings.TrimPrefix(n, ModuleDir+"/"))
		}
	}
	if len(names) != len(wantMods) {
		t.Errorf("modules in the archive: %v", names)
	}
	if _, ok := got["lib/modules/snd.ko"]; ok {
		t.Error("a module nobody asked for is in")
	}
	// Reproducible: the same input, the same bytes.
	again, err := Build(Config{Binary: bin, ModulesDir: mods, Modules: []string{"virtio_pci", "virtio-net", "virtio_blk", "e1000", "nvme"}})
	if err != nil || !bytes.Equal(again.Image, res.Image) {
		t.Errorf("second build differs (err %v)", err)
	}
}

func TestFindModulesFlatDir(t *testing.T) {
	dir := writeFiles(t, map[string]string{"virtio_net.ko": "n", "sub/virtio_blk.ko": "b", "README": "x"})
	files, missing, err := FindModules(dir, []string{"virtio_blk", "virtio_net", "nvme"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "sub/virtio_blk.ko"), filepath.Join(dir, "virtio_net.ko")}
	if d := cmp.Diff(want, files); d != "" {
		t.Errorf("files (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"nvme"}, missing); d != "" {
		t.Errorf("missing (-want +got):\n%s", d)
	}
	if _, _, err := FindModules(t.TempDir(), []string{"x"}); err == nil {
		t.Error("a directory without modules: no error")
	}
}

// TestBuildRefusesDynamicBinary: a binary with an ELF interpreter (a Go
// PIE, built here so the test does not depend on what the machine has) is
// refused with the fix named.
func TestBuildRefusesDynamicBinary(t *testing.T) {
	p := tinyBinary(t, "pie")
	if err := checkStatic(p); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Fatalf("checkStatic(PIE): %v, want dynamically linked", err)
	}
	_, err := Build(Config{Binary: p})
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("Build(PIE): %v, want a dynamic-binary refusal", err)
	}
	if err := checkStatic(staticBinary(t)); err != nil {
		t.Errorf("checkStatic(static): %v", err)
	}
}

func TestKernelVersion(t *testing.T) {
	img := make([]byte, 0x1000)
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x20e:], 0x800)
	copy(img[0xa00:], "6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\x00")
	dir := t.TempDir()
	p := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	if v, err := KernelVersion(p); err != nil || v != "6.1.0-28-cloud-amd64" {
		t.Errorf("bzImage: %q, %v", v, err)
	}
	other := filepath.Join(dir, "Image")
	if err := os.WriteFile(other, make([]byte, 0x1000), 0o644); err != nil {
		t.Fatal(err)
	}
	if v, err := KernelVersion(other); err != nil || v != "" {
		t.Errorf("not a bzImage: %q, %v", v, err)
	}
}

// TestFindModulesModinfo: without modules.dep (a kernel package unpacked,
// depmod never run) dependencies come from each module's .modinfo section.
func TestFindModulesModinfo(t *testing.T) {
	objcopy, err := exec.LookPath("objcopy")
	if err != nil {
		t.Fatalf("objcopy is needed (test/deps.sh installs binutils): %v", err)
	}
	dir := t.TempDir()
	tiny := staticBinary(t)
	mod := func(name, modinfo string) {
		info := filepath.Join(dir, name+".modinfo")
		if err := os.WriteFile(info, []byte(modinfo), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(objcopy, "--add-section", ".modinfo="+info, tiny, filepath.Join(dir, "kernel", name+".ko")).CombinedOutput()
		if err != nil {
			t.Fatalf("objcopy: %v\n%s", err, out)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "kernel"), 0o755); err != nil {
		t.Fatal(err)
	}
	mod("virtio_net", "license=GPL\x00depends=net_failover,virtio_ring\x00intree=Y\x00")
	mod("net_failover", "depends=failover\x00")
	mod("failover", "depends=\x00")
	mod("virtio_ring", "license=GPL\x00")
	files, missing, err := FindModules(filepath.Join(dir, "kernel"), []string{"virtio_net"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, filepath.Base(f))
	}
	if d := cmp.Diff([]string{"failover.ko", "net_failover.ko", "virtio_ring.ko", "virtio_net.ko"}, got); d != "" || len(missing) != 0 {
		t.Errorf("files, dependencies first (-want +got):\n%s\nmissing %v", d, missing)
	}
}
