package e2e

import (
	"context"
	"debug/pe"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// SecureBootAssets are the files of Debian's Secure Boot network chain
// (shim → GRUB → kernel + initrd, all over TFTP), fetched with `apt-get
// download` and unpacked with `dpkg-deb -x` into the cache, never
// installed: installing runs grub-install and initramfs hooks on the host.
type SecureBootAssets struct {
	// Shim is shim-signed's shimx64.efi.signed (signed by Microsoft's UEFI
	// CA, so OVMF_VARS_4M.ms.fd trusts it). Serve it as bootx64.efi; it
	// fetches grubx64.efi from the same TFTP directory.
	Shim string
	// GRUB is grub-efi-amd64-signed's grubnetx64.efi.signed: network GRUB
	// with prefix /grub (it reads /grub/grub.cfg) and no http module.
	// Serve it as grubx64.efi.
	GRUB string
	// Kernel is the test kernel of Assets: Debian's cloud kernel is the
	// signed one ("Debian Secure Boot Signer"), so the test initrd and its
	// modules fit it as they are.
	Kernel string
	// UnsignedKernel is the same kernel version from the -unsigned
	// package: no signature, which shim's verifier refuses.
	UnsignedKernel string
	Initrd         string
}

// Packages and the file each contributes. The versions are apt's
// candidates; a cached file is reused as is (offline re-runs).
const (
	shimPackage = "shim-signed"
	shimMember  = "usr/lib/shim/shimx64.efi.signed"
	grubPackage = "grub-efi-amd64-signed"
	grubMember  = "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
)

// EnsureSecureBootAssets returns the Secure Boot chain's files for the
// test assets a (from EnsureAssets), fetching what the cache lacks. Each
// file's signature state is checked, so a fixture that is not what the
// test assumes fails here rather than as a confusing boot.
func EnsureSecureBootAssets(ctx context.Context, cache string, a Assets) (SecureBootAssets, error) {
	sb := SecureBootAssets{Kernel: a.Kernel, Initrd: a.Initrd}
	dir := filepath.Join(cache, "secureboot")
	var err error
	if sb.Shim, err = ensureDebMember(ctx, dir, shimPackage, shimMember); err != nil {
		return sb, err
	}
	if sb.GRUB, err = ensureDebMember(ctx, dir, grubPackage, grubMember); err != nil {
		return sb, err
	}
	unsignedPkg := "linux-image-" + a.KernelVersion + "-unsigned"
	if sb.UnsignedKernel, err = ensureDebMember(ctx, dir, unsignedPkg, "boot/vmlinuz-"+a.KernelVersion); err != nil {
		return sb, err
	}
	for _, c := range []struct {
		path   string
		signed bool
	}{{sb.Shim, true}, {sb.GRUB, true}, {sb.Kernel, true}, {sb.UnsignedKernel, false}} {
		got, err := PESigned(c.path)
		if err != nil {
			return sb, err
		}
		if got != c.signed {
			return sb, fmt.Errorf("e2e: secure boot: %s: signed=%v, the test needs signed=%v", c.path, got, c.signed)
		}
	}
	return sb, nil
}

// ensureDebMember returns dir/<pkg>/<base name of member>, downloading pkg
// with apt-get and unpacking it with dpkg-deb -x when it is not cached.
func ensureDebMember(ctx context.Context, dir, pkg, member string) (string, error) {
	dst := filepath.Join(dir, pkg, filepath.Base(member))
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", fmt.Errorf("e2e: %s: %w", pkg, err)
	}
	work, err := os.MkdirTemp(dir, "dl-")
	if err != nil {
		return "", fmt.Errorf("e2e: %s: %w", pkg, err)
	}
	defer os.RemoveAll(work)
	if err := aptDownload(ctx, work, pkg); err != nil {
		return "", err
	}
	debs, _ := filepath.Glob(filepath.Join(work, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("e2e: %s: expected one .deb in %s, found %d", pkg, work, len(debs))
	}
	x := filepath.Join(work, "x")
	if out, err := runIn(ctx, work, "dpkg-deb", "-x", debs[0], x); err != nil {
		return "", fmt.Errorf("e2e: %s: dpkg-deb -x: %w: %s", pkg, err, out)
	}
	data, err := os.ReadFile(filepath.Join(x, member))
	if err != nil {
		return "", fmt.Errorf("e2e: %s: %w", pkg, err)
	}
	return dst, writeAtomic(dst, data)
}

// aptDownload runs `apt-get download pkg` in dir, refreshing the package
// lists once if the package is unknown (a fresh machine has none).
func aptDownload(ctx context.Context, dir, pkg string) error {
	out, err := runIn(ctx, dir, "apt-get", "download", pkg)
	if err == nil {
		return nil
	}
	if uout, uerr := runIn(ctx, dir, "apt-get", "update"); uerr != nil {
		return fmt.Errorf("e2e: apt-get download %s: %w: %s; apt-get update: %v: %s", pkg, err, out, uerr, uout)
	}
	if out, err := runIn(ctx, dir, "apt-get", "download", pkg); err != nil {
		return fmt.Errorf("e2e: apt-get download %s: %w: %s", pkg, err, out)
	}
	return nil
}

// PESigned reports whether the PE image at path (an EFI binary or a kernel
// with an EFI stub) carries an Authenticode signature: a non-empty
// certificate table. It says nothing of who signed it; the boot does.
func PESigned(path string) (bool, error) {
	f, err := pe.Open(path)
	if err != nil {
		return false, fmt.Errorf("e2e: pe %s: %w", path, err)
	}
	defer f.Close()
	var dirs []pe.DataDirectory
	switch h := f.OptionalHeader.(type) {
	case *pe.OptionalHeader64:
		dirs = h.DataDirectory[:h.NumberOfRvaAndSizes]
	case *pe.OptionalHeader32:
		dirs = h.DataDirectory[:h.NumberOfRvaAndSizes]
	default:
		return false, fmt.Errorf("e2e: pe %s: no optional header", path)
	}
	if len(dirs) <= pe.IMAGE_DIRECTORY_ENTRY_SECURITY {
		return false, nil
	}
	return dirs[pe.IMAGE_DIRECTORY_ENTRY_SECURITY].Size > 0, nil
}

// SecureBootTFTPRoot lays out the Azure seed's TFTP tree in root, the way
// shim and Debian's network GRUB ask for it (../shared/SECUREBOOT-FACTS.md):
//
//	bootx64.efi     shim (the DHCP boot file)
//	grubx64.efi     GRUB, fetched by shim from shim's own directory
//	grub/grub.cfg   read by GRUB from its embedded prefix /grub
//	vmlinuz         kernel (signed or not)
//	initrd.gz       the test initramfs
//
// grub.cfg boots kernel and initrd over TFTP (the signed GRUB has no http
// module) with cmdline.
func SecureBootTFTPRoot(root string, sb SecureBootAssets, kernel, cmdline string) error {
	if err := os.MkdirAll(filepath.Join(root, "grub"), 0o755); err != nil {
		return fmt.Errorf("e2e: tftp root: %w", err)
	}
	for src, dst := range map[string]string{
		sb.Shim:   "bootx64.efi",
		sb.GRUB:   "grubx64.efi",
		kernel:    "vmlinuz",
		sb.Initrd: "initrd.gz",
	} {
		if err := copyFile(src, filepath.Join(root, dst)); err != nil {
			return err
		}
	}
	cfg := GRUBConfig("/vmlinuz", cmdline, "/initrd.gz")
	if err := os.WriteFile(filepath.Join(root, "grub", "grub.cfg"), []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("e2e: tftp root: %w", err)
	}
	return nil
}

// GRUBConfig is a grub.cfg that boots kernel with cmdline and initrds at
// once, with paths relative to GRUB's root (the TFTP server it came from).
func GRUBConfig(kernel, cmdline string, initrds ...string) string {
	return fmt.Sprintf("set timeout=0\nlinux %s %s\ninitrd %s\nboot\n", kernel, cmdline, strings.Join(initrds, " "))
}

// ShimGRUBRequests are the files shim and Debian's network GRUB ask a TFTP
// server for, in order, with the boot file bootx64.efi and the layout of
// SecureBootTFTPRoot (observed against dnsmasq by TestReferenceSecureBoot).
// The optional ones may be missing: both go on without them.
var ShimGRUBRequests = []struct {
	Path     string
	Optional bool
}{
	{"bootx64.efi", false}, // OVMF: a tsize probe it aborts (error 8), then the file
	{"revocations_sku.efi", true},
	{"revocations_sbat.efi", true},
	{"shim_certificate_0.efi", true},
	{"grubx64.efi", false}, // shim, from its own directory
	{"grub/x86_64-efi/command.lst", true},
	{"grub/x86_64-efi/fs.lst", true},
	{"grub/x86_64-efi/crypto.lst", true},
	{"grub/x86_64-efi/terminal.lst", true},
	{"grub/grub.cfg", false}, // GRUB's embedded prefix is /grub
	{"vmlinuz", false},       // then whatever grub.cfg names
	{"initrd.gz", false},
}

// Console lines of a Secure Boot boot.
var (
	// The EFI stub's and the kernel's own reports that the firmware
	// enforces Secure Boot (not just that it has keys).
	efiStubSecureBootRE   = regexp.MustCompile(`EFI stub: UEFI Secure Boot is enabled`)
	kernelSecureBootRE    = regexp.MustCompile(`secureboot: Secure boot enabled`)
	kernelSecureBootOffRE = regexp.MustCompile(`secureboot: Secure boot disabled`)
	// BadShimSignatureRE is what Debian's GRUB prints when shim's
	// verifier rejects the kernel; "you need to load the kernel first"
	// follows for initrd and boot, then the grub> prompt.
	BadShimSignatureRE = regexp.MustCompile(`error: bad shim signature`)
	// EFIStubRE is any line of the kernel's EFI stub: the kernel ran.
	EFIStubRE = regexp.MustCompile(`EFI stub: `)
	ansiRE    = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)
)

// CheckSecureBoot returns an error unless the VM's console shows the
// kernel booted with Secure Boot enforced: the EFI stub says so and the
// kernel reports "secureboot: Secure boot enabled".
func (vm *VM) CheckSecureBoot() error {
	if err := checkSecureBootConsole(vm.Console()); err != nil {
		return fmt.Errorf("e2e: %s: %w", vm.Config.Name, err)
	}
	return nil
}

func checkSecureBootConsole(console string) error {
	var missing []string
	for _, re := range []*regexp.Regexp{efiStubSecureBootRE, kernelSecureBootRE} {
		if !re.MatchString(console) {
			missing = append(missing, re.String())
		}
	}
	if kernelSecureBootOffRE.MatchString(console) {
		missing = append(missing, "not "+kernelSecureBootOffRE.String())
	}
	if len(missing) > 0 {
		return fmt.Errorf("console lacks %q:\n%s", missing, lastLines(StripANSI(console), 60))
	}
	return nil
}

// WaitKernelRefused waits up to limit for GRUB's refusal of the kernel
// under Secure Boot and returns the line, escape sequences removed.
func (vm *VM) WaitKernelRefused(limit time.Duration) (string, error) {
	line, err := vm.WaitConsole(limit, BadShimSignatureRE)
	if err != nil {
		return "", fmt.Errorf("e2e: %s: no Secure Boot refusal: %w", vm.Config.Name, err)
	}
	return strings.TrimSpace(StripANSI(line)), nil
}

// StripANSI removes the terminal escapes OVMF and GRUB mirror to serial.
func StripANSI(s string) string { return ansiRE.ReplaceAllString(s, "") }
