package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// refusalWait bounds the wait for a marker that must not come once GRUB
// has refused the kernel: a deadline for an absence, not a timing check.
const refusalWait = 30 * time.Second

// ensureSecureBootAssets is EnsureAssets plus the Secure Boot chain.
func ensureSecureBootAssets(t *testing.T) (Assets, SecureBootAssets) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	a, err := EnsureAssets(ctx, CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	sb, err := EnsureSecureBootAssets(ctx, CacheDir(), a)
	if err != nil {
		t.Fatal(err)
	}
	return a, sb
}

// TestSecureBootAssets checks the fixtures without booting: shim, GRUB and
// the test kernel are signed, the -unsigned kernel is not (a test that
// meant to boot a refused kernel would otherwise pass for the wrong reason).
func TestSecureBootAssets(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: package downloads are not short")
	}
	_, sb := ensureSecureBootAssets(t)
	for name, want := range map[string]bool{sb.Shim: true, sb.GRUB: true, sb.Kernel: true, sb.UnsignedKernel: false} {
		got, err := PESigned(name)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s: signed=%v, want %v", name, got, want)
		}
	}
}

// TestReferenceSecureBoot is the Azure LiveOS seed's chain against the
// reference server: dnsmasq (DHCP, TFTP, enable-ra) serves shim →
// Debian's signed network GRUB → grub.cfg → kernel + initrd, all over
// TFTP, to OVMF with Secure Boot enforced. The signed kernel boots to the
// marker and reports Secure Boot on; the unsigned one is refused by GRUB
// (through shim's verifier) and nothing boots.
func TestReferenceSecureBoot(t *testing.T) {
	t.Parallel()
	RequireRoot(t)
	if testing.Short() {
		t.Skip("short mode: VM boots take tens of seconds")
	}
	for _, f := range []string{OVMFCodeSecBoot, OVMFVarsMS} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("Secure Boot OVMF (Debian ovmf) is needed, test/deps.sh installs it: %v", err)
		}
	}
	a, sb := ensureSecureBootAssets(t)

	t.Run("signed", func(t *testing.T) {
		e, vm := startSecureBootRef(t, a, sb, sb.Kernel)
		m, err := vm.WaitMarker(bootLimit)
		if err != nil {
			t.Fatal(err)
		}
		if err := vm.CheckMarker(m, "console=ttyS0", "fleetboot.ref=1"); err != nil {
			t.Error(err)
		}
		if err := vm.CheckSecureBoot(); err != nil {
			t.Error(err)
		}
		reqs := tftpRequests(e.DHCP.Output(), e.Dir)
		t.Logf("TFTP requests, in order:\n\t%s", strings.Join(reqs, "\n\t"))
		var wantSent []string
		for _, r := range ShimGRUBRequests {
			if !r.Optional {
				wantSent = append(wantSent, "sent "+r.Path)
			}
		}
		if err := inOrder(reqs, wantSent); err != nil {
			t.Error(err)
		}
		t.Logf("TIMING reference secureboot shim-grub-tftp: power-on to marker %.1fs (%s)", m.Elapsed.Seconds(), milestones(vm, e))
	})

	t.Run("unsigned-refused", func(t *testing.T) {
		e, vm := startSecureBootRef(t, a, sb, sb.UnsignedKernel)
		line, err := vm.WaitKernelRefused(bootLimit)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("refusal: %q after %.1fs", line, time.Since(vm.Started).Seconds())
		if m, err := vm.WaitMarker(refusalWait); err == nil {
			t.Fatalf("the unsigned kernel booted under Secure Boot: %s", m.Line)
		}
		if console := vm.Console(); EFIStubRE.MatchString(console) {
			t.Errorf("the unsigned kernel's EFI stub ran:\n%s", lastLines(StripANSI(console), 40))
		}
		reqs := tftpRequests(e.DHCP.Output(), e.Dir)
		t.Logf("TFTP requests, in order:\n\t%s", strings.Join(reqs, "\n\t"))
		// GRUB downloads the whole kernel before it verifies it; the
		// refusal is that nothing follows the download.
		if err := inOrder(reqs, []string{"sent grub/grub.cfg", "sent vmlinuz"}); err != nil {
			t.Error(err)
		}
		if i := indexOf(reqs, "sent vmlinuz"); i >= 0 && i < len(reqs)-1 {
			t.Errorf("TFTP requests after the refused kernel: %v", reqs[i+1:])
		}
		t.Logf("TIMING reference secureboot unsigned kernel: power-on to refusal (%s)", milestones(vm, e))
	})
}

// startSecureBootRef starts the reference (dnsmasq with bootx64.efi for
// UEFI x64 and a TFTP root laid out by SecureBootTFTPRoot, serving kernel)
// and one Secure Boot VM with OVMF's own PXE client.
func startSecureBootRef(t *testing.T, a Assets, sb SecureBootAssets, kernel string) (*Reference, *VM) {
	t.Helper()
	dir := LogDir(t)
	root := filepath.Join(dir, "tftp")
	if err := SecureBootTFTPRoot(root, sb, kernel, RefCmdline); err != nil {
		t.Fatal(err)
	}
	dc := DnsmasqConfig{EFIFile: "bootx64.efi", TFTPRoot: root, EnableRA: true}
	e := StartReference(t, dir, a, dc, PlainScript)
	vm := e.Net.StartVM(t, e.Dir, VMConfig{Firmware: UEFISecureBoot, NoROM: true})
	return e, vm
}

// dnsmasqTFTPRE matches dnsmasq's TFTP log: "sent PATH to ADDR" and "file
// PATH not found".
var dnsmasqTFTPRE = regexp.MustCompile(`dnsmasq-tftp\[\d+\]: (?:(sent) (\S+) to|file (\S+) (not found))`)

// tftpRequests are dnsmasq's completed and missing TFTP files, in order,
// as "sent PATH" or "not found PATH" with PATH relative to the TFTP root.
func tftpRequests(log, dir string) []string {
	root := filepath.Join(dir, "tftp")
	var out []string
	for _, m := range dnsmasqTFTPRE.FindAllStringSubmatch(log, -1) {
		verb, path := m[1], m[2]
		if verb == "" {
			verb, path = m[4], m[3]
		}
		path = strings.TrimLeft(strings.TrimPrefix(path, root), "/")
		out = append(out, verb+" "+path)
	}
	return out
}

// inOrder checks that want appears in got as a subsequence.
func inOrder(got, want []string) error {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	if i < len(want) {
		return fmt.Errorf("TFTP requests lack %q (in the order %v):\n\t%s", want[i], want, strings.Join(got, "\n\t"))
	}
	return nil
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// milestones are the seconds from power-on to each step of the chain, as
// the console and dnsmasq's log show them: logged, never asserted.
func milestones(vm *VM, e *Reference) string {
	type step struct {
		name string
		re   *regexp.Regexp
		from []Line
	}
	console, dns := vm.ConsoleLines(), e.DHCP.Lines()
	steps := []step{
		{"shim sent", regexp.MustCompile(`sent \S*/bootx64\.efi`), dns},
		{"grub sent", regexp.MustCompile(`sent \S*/grubx64\.efi`), dns},
		{"grub.cfg sent", regexp.MustCompile(`sent \S*/grub/grub\.cfg`), dns},
		{"kernel sent", regexp.MustCompile(`sent \S*/vmlinuz`), dns},
		{"initrd sent", regexp.MustCompile(`sent \S*/initrd\.gz`), dns},
		{"refused", BadShimSignatureRE, console},
		{"EFI stub", EFIStubRE, console},
		{"Secure boot enabled", kernelSecureBootRE, console},
		{"marker", markerRE, console},
	}
	var parts []string
	for _, s := range steps {
		for _, l := range s.from {
			if s.re.MatchString(l.Text) {
				parts = append(parts, fmt.Sprintf("%s %.1fs", s.name, l.At.Sub(vm.Started).Seconds()))
				break
			}
		}
	}
	return strings.Join(parts, ", ")
}

// TestTFTPRequests reads dnsmasq's TFTP log lines as they appeared in a
// Secure Boot run (paths under the test's tftp root).
func TestTFTPRequests(t *testing.T) {
	log := "dnsmasq-tftp[7]: error 8 User aborted the transfer received from 10.77.0.178\n" +
		"dnsmasq-tftp[7]: sent /d/tftp/bootx64.efi to 10.77.0.178\n" +
		"dnsmasq-dhcp[7]: 2829259400 requested options: 59:T2\n" +
		"dnsmasq-tftp[7]: file /d/tftp/revocations_sku.efi not found for 10.77.0.178\n" +
		"dnsmasq-tftp[7]: file /d/tftp/grub/x86_64-efi/fs.lst not found for 10.77.0.178\n" +
		"dnsmasq-tftp[7]: sent /d/tftp/grub/grub.cfg to 10.77.0.178\n"
	got := tftpRequests(log, "/d")
	want := []string{"sent bootx64.efi", "not found revocations_sku.efi", "not found grub/x86_64-efi/fs.lst", "sent grub/grub.cfg"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("tftpRequests = %q, want %q", got, want)
	}
	tests := []struct {
		name string
		want []string
		ok   bool
	}{
		{"subsequence", []string{"sent bootx64.efi", "sent grub/grub.cfg"}, true},
		{"wrong order", []string{"sent grub/grub.cfg", "sent bootx64.efi"}, false},
		{"missing", []string{"sent vmlinuz"}, false},
	}
	for _, tc := range tests {
		if err := inOrder(got, tc.want); (err == nil) != tc.ok {
			t.Errorf("%s: inOrder = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	if s := StripANSI("\x1b[0m\x1b[37m\x1b[40merror: bad shim signature."); s != "error: bad shim signature." {
		t.Errorf("StripANSI = %q", s)
	}
}

// TestCheckSecureBootConsole: the check passes only on a console where
// both the EFI stub and the kernel report Secure Boot on (lines as seen
// here with OVMF_VARS_4M.ms.fd, and with plain OVMF_VARS_4M.fd for "off").
func TestCheckSecureBootConsole(t *testing.T) {
	const stub = "EFI stub: UEFI Secure Boot is enabled.\r\n"
	const on = "[    0.000000] secureboot: Secure boot enabled\r\n"
	const off = "[    0.000000] secureboot: Secure boot disabled\r\n"
	tests := []struct {
		name    string
		console string
		ok      bool
	}{
		{"enforced", "Fetching Netboot Image grubx64.efi\r\n" + stub + on, true},
		{"disabled", off, false},
		{"stub only", stub, false},
		{"kernel only", on, false},
		{"nothing booted", "error: bad shim signature.\r\n", false},
	}
	for _, tc := range tests {
		if err := checkSecureBootConsole(tc.console); (err == nil) != tc.ok {
			t.Errorf("%s: checkSecureBootConsole = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
