package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ARM64Assets are the files an arm64 VM boots through GRUB: Debian's
// signed network GRUB for arm64, Debian's arm64 cloud kernel and an
// initramfs with arm64 busybox whose /init prints the marker as the amd64
// one does. The packages come from the arm64 dpkg architecture
// (test/deps.sh adds it) with `apt-get download`, unpacked with `dpkg-deb
// -x`, never installed.
type ARM64Assets struct {
	// GRUB is grub-efi-arm64-signed's grubnetaa64.efi.signed: network
	// GRUB with prefix /grub (it reads /grub/grub.cfg over TFTP) and no
	// http module.
	GRUB          string
	KernelVersion string // e.g. 6.1.0-56-cloud-arm64
	Kernel        string // an uncompressed arm64 Image with an EFI stub
	Initrd        string // gzip'd newc initramfs
}

// Packages and members of the arm64 chain.
const (
	arm64GRUBPackage    = "grub-efi-arm64-signed:arm64"
	arm64GRUBMember     = "usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed"
	arm64BusyboxPackage = "busybox-static:arm64"
)

// EnsureARM64Assets returns the arm64 chain's files, fetching and building
// what the cache (cache/arm64) lacks. Every file is written to a temporary
// name and renamed, so concurrent runs do not see half a file.
func EnsureARM64Assets(ctx context.Context, cache string) (ARM64Assets, error) {
	var a ARM64Assets
	dir := filepath.Join(cache, "arm64")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return a, fmt.Errorf("e2e: arm64: %w", err)
	}
	var err error
	if a.GRUB, err = ensureDebMember(ctx, dir, arm64GRUBPackage, arm64GRUBMember); err != nil {
		return a, err
	}
	busybox, err := ensureDebMember(ctx, dir, arm64BusyboxPackage, "bin/busybox")
	if err != nil {
		return a, err
	}
	var kdir string
	if a.KernelVersion, kdir, err = ensureARM64Kernel(ctx, dir); err != nil {
		return a, err
	}
	a.Kernel = filepath.Join(kdir, "vmlinuz")
	if a.Initrd, err = ensureARM64Initrd(dir, kdir, busybox); err != nil {
		return a, err
	}
	return a, nil
}

// ensureARM64Kernel finds a cached arm64 cloud kernel, or fetches the one
// linux-image-cloud-arm64:arm64 depends on, keeping the kernel and the
// virtio modules the initramfs loads (dir/kernel/<version>).
func ensureARM64Kernel(ctx context.Context, dir string) (string, string, error) {
	// Offline re-runs use whatever is cached.
	if m, _ := filepath.Glob(filepath.Join(dir, "kernel", "*", "vmlinuz")); len(m) > 0 {
		d := filepath.Dir(m[len(m)-1])
		return filepath.Base(d), d, nil
	}
	ver, err := arm64KernelVersion(ctx)
	if err != nil {
		return "", "", err
	}
	kdir := filepath.Join(dir, "kernel", ver)
	// The arm64 cloud kernel has virtio, virtio_pci and virtio_net as
	// modules too, under the same names as amd64's.
	if err := fetchKernel(ctx, dir, "linux-image-"+ver+":arm64", ver, kdir); err != nil {
		return "", "", err
	}
	return ver, kdir, nil
}

// arm64KernelVersion is the ABI the arm64 cloud kernel meta-package
// depends on now (it moves with every kernel update), as
// cloudKernelVersion finds amd64's.
func arm64KernelVersion(ctx context.Context) (string, error) {
	depends := func() ([]byte, error) {
		return exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-cloud-arm64:arm64").CombinedOutput()
	}
	out, err := depends()
	if err != nil || !strings.Contains(string(out), "Depends: linux-image-") {
		if uout, uerr := exec.CommandContext(ctx, "apt-get", "update").CombinedOutput(); uerr != nil {
			return "", fmt.Errorf("e2e: arm64 kernel: apt-get update: %w: %s", uerr, uout)
		}
		if out, err = depends(); err != nil {
			return "", fmt.Errorf("e2e: arm64 kernel: apt-cache depends (is the arm64 dpkg architecture added? test/deps.sh): %w: %s", err, out)
		}
	}
	for _, l := range strings.Split(string(out), "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(l), "Depends: linux-image-")
		if !ok {
			continue
		}
		v = strings.TrimSuffix(v, ":arm64")
		if strings.HasSuffix(v, "-cloud-arm64") {
			return v, nil
		}
	}
	return "", fmt.Errorf("e2e: arm64 kernel: no linux-image dependency in %q", out)
}

// ensureARM64Initrd builds the arm64 marker initramfs: arm64 busybox, the
// amd64 initramfs's /init (initScript, the same marker line), the kernel's
// virtio modules, and dev/console and dev/null, so /init has a console
// from its first line. It is named by its content's digest.
func ensureARM64Initrd(dir, kdir, busybox string) (string, error) {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return "", fmt.Errorf("e2e: arm64 initrd: %w", err)
	}
	return writeInitrd(dir, "initrd-arm64", bb, kdir, map[string]cpioEntry{
		"dev/console": {Mode: cpioChar | 0o600, RdevMajor: 5, RdevMinor: 1},
		"dev/null":    {Mode: cpioChar | 0o666, RdevMajor: 1, RdevMinor: 3},
	})
}
