package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Firmware is what the VM boots with.
type Firmware string

const (
	// BIOS is SeaBIOS with QEMU's NIC option ROM, which is iPXE on Debian.
	BIOS Firmware = "bios"
	// UEFI is OVMF. With NoROM it uses OVMF's own PXE client (client arch
	// 7); without, QEMU's virtio ROM (an iPXE EFI driver) boots instead.
	UEFI Firmware = "uefi"
	// UEFISecureBoot is OVMF with Secure Boot enforced: the secboot code
	// (which needs q35 with SMM and secure pflash) and a per-VM copy of
	// the variable store with Microsoft's keys enrolled, so Microsoft-signed
	// shim runs and anything unsigned is refused. Use NoROM: QEMU's iPXE
	// option ROM is unsigned.
	UEFISecureBoot Firmware = "uefi-secureboot"
	// UEFIARM64 is an arm64 VM (qemu-system-aarch64, machine virt, CPU
	// max) with Debian's AAVMF build of EDK2 (qemu-efi-aarch64), whose own
	// PXE client asks as client arch 11. Use NoROM.
	UEFIARM64 Firmware = "uefi-arm64"
)

// OVMF firmware files from Debian's ovmf package.
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	// OVMFCodeSecBoot and OVMFVarsMS are the Secure Boot pair.
	OVMFCodeSecBoot = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	OVMFVarsMS      = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
	// AAVMFFirmware is the arm64 firmware image from qemu-efi-aarch64,
	// booted with -bios (no variable store to copy).
	AAVMFFirmware = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"
)

// VMConfig describes one test VM.
type VMConfig struct {
	Name     string
	MAC      string // colon form; random locally administered if empty
	Firmware Firmware
	NoROM    bool // romfile= on the NIC: no iPXE option ROM
	MemoryMB int  // 512 if zero
	// Kernel and Initrd, when set, are booted by QEMU itself (-kernel,
	// -initrd) instead of the firmware's boot order: see UndionlyChain.
	Kernel string
	Initrd string
	// BootIndex, when set, puts the NIC in the firmware's boot order
	// (bootindex=N on the device).
	BootIndex int
	// Args are extra QEMU arguments, after the harness's own (e.g.
	// -fw_cfg entries that switch firmware features off).
	Args []string
	// ExtraNICs are more virtio NICs (no option ROM) on the same network.
	ExtraNICs int
	// Disk is a raw disk image attached as a virtio disk.
	Disk string
	// Reboot lets the guest reboot (without it QEMU exits on reboot).
	Reboot bool
}

// VM is a running QEMU (TCG: /dev/kvm is not trusted on these machines).
type VM struct {
	Config  VMConfig
	Tap     string
	Args    []string
	Started time.Time
	proc    *Proc
}

// Marker is the line the test initramfs prints when userspace is reached.
type Marker struct {
	MAC     string
	Cmdline string
	Line    string
	Elapsed time.Duration // from QEMU start to the marker: logged, never asserted
}

var (
	markerRE     = regexp.MustCompile(`FLEETBOOT-MARKER mac=(\S*) cmdline=(.*)$`)
	noBootableRE = regexp.MustCompile(`No bootable device`)
)

// RandomMAC returns a locally administered unicast MAC (52:54:00 is QEMU's
// prefix; the rest is random).
func RandomMAC() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
}

// StartVM runs a VM on the network with its serial console captured to
// dir/<name>.log; it is killed by PID when the test ends.
func (n *Network) StartVM(t testing.TB, dir string, cfg VMConfig) *VM {
	t.Helper()
	if cfg.MAC == "" {
		cfg.MAC = RandomMAC()
	}
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 512
	}
	if cfg.Name == "" {
		cfg.Name = "vm-" + strings.ReplaceAll(cfg.MAC, ":", "")
	}
	tap := n.AddTap(t)
	nic := "virtio-net-pci,netdev=n0,mac=" + cfg.MAC
	if cfg.NoROM {
		nic += ",romfile="
	}
	if cfg.BootIndex > 0 {
		nic += fmt.Sprintf(",bootindex=%d", cfg.BootIndex)
	}
	args := []string{
		"-name", cfg.Name,
		"-accel", "tcg",
		"-m", fmt.Sprint(cfg.MemoryMB),
		"-smp", "1",
		// -nographic makes SeaBIOS and iPXE print on the serial port too.
		"-nographic", "-monitor", "none", "-serial", "stdio",
		"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
		"-device", nic,
	}
	if !cfg.Reboot {
		args = append(args, "-no-reboot")
	}
	for i := 1; i <= cfg.ExtraNICs; i++ {
		args = append(args, "-netdev", fmt.Sprintf("tap,id=n%d,ifname=%s,script=no,downscript=no", i, n.AddTap(t)),
			"-device", fmt.Sprintf("virtio-net-pci,netdev=n%d,mac=%s,romfile=", i, RandomMAC()))
	}
	if cfg.Disk != "" {
		args = append(args, "-drive", "file="+cfg.Disk+",if=virtio,format=raw")
	}
	if cfg.Kernel != "" {
		args = append(args, "-kernel", cfg.Kernel)
		if cfg.Initrd != "" {
			args = append(args, "-initrd", cfg.Initrd)
		}
	}
	qemu := "qemu-system-x86_64"
	switch cfg.Firmware {
	case UEFIARM64:
		qemu = "qemu-system-aarch64"
		// pauth-impdef: TCG computes pointer authentication codes with a
		// cheap implementation-defined hash instead of QARMA, which the
		// arm64 kernel runs on every function entry; the kernel's boot to
		// the marker took 4 s instead of 20-90 s here.
		args = append(args, "-machine", "virt", "-cpu", "max,pauth-impdef=on", "-bios", AAVMFFirmware)
	case BIOS, "":
		args = append(args, "-machine", "pc", "-boot", "order=n")
	case UEFI:
		args = append(args, "-machine", "q35")
		args = append(args, ovmfDrives(t, dir, cfg.Name, OVMFCode, OVMFVars)...)
	case UEFISecureBoot:
		// S3 off as libvirt does for Secure Boot OVMF; SMM and secure
		// pflash keep the variable store out of the guest OS's reach.
		args = append(args, "-machine", "q35,smm=on",
			"-global", "driver=cfi.pflash01,property=secure,value=on",
			"-global", "ICH9-LPC.disable_s3=1")
		args = append(args, ovmfDrives(t, dir, cfg.Name, OVMFCodeSecBoot, OVMFVarsMS)...)
	default:
		t.Fatalf("e2e: unknown firmware %q", cfg.Firmware)
	}
	args = append(args, cfg.Args...)
	vm := &VM{Config: cfg, Tap: tap, Args: args, Started: time.Now()}
	cmd := nsCommand(context.Background(), n.Switch, qemu, args...)
	vm.proc = StartProc(t, dir, cfg.Name, cmd)
	t.Logf("e2e: started %s (pid %d, %s, mac %s): %s %s", cfg.Name, vm.proc.PID(), cfg.Firmware, cfg.MAC, qemu, strings.Join(args, " "))
	return vm
}

// ovmfDrives are the pflash drives for OVMF's code (read-only) and a
// writable per-VM copy of its variable store in dir.
func ovmfDrives(t testing.TB, dir, name, code, varsTemplate string) []string {
	t.Helper()
	vars := filepath.Join(dir, name+"-"+filepath.Base(varsTemplate))
	if err := copyFile(varsTemplate, vars); err != nil {
		t.Fatal(err)
	}
	return []string{
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + code,
		"-drive", "if=pflash,format=raw,unit=1,file=" + vars,
	}
}

// UndionlyChain is a BIOS VM that boots the classic chain PXE ROM →
// undionly.kpxe over TFTP from server → iPXE's own DHCP → the server's
// script. QEMU here has no classic PXE ROM (its NIC ROM is already iPXE,
// which a server gives the script at once), so the VM's "PXE ROM" is iPXE
// loaded by QEMU directly (ipxe.lkrn, NIC without option ROM) running a
// fixed script, written to dir: configure the NIC as firmware does (ifconf:
// DHCP and IPv6 autoconfiguration, so each of the chain's two iPXE
// instances waits for IPv6 on a segment without adverts), then load
// undionly.kpxe from server whatever the DHCP reply named. It boots the
// same way against any server, fleetboot's edge or the reference.
func UndionlyChain(t testing.TB, dir, server string) VMConfig {
	t.Helper()
	script := filepath.Join(dir, "pxe-rom.ipxe")
	body := fmt.Sprintf("#!ipxe\nifconf net0 || ifconf net0\nchain tftp://%s/undionly.kpxe\n", server)
	if err := os.WriteFile(script, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return VMConfig{Firmware: BIOS, NoROM: true, Kernel: filepath.Join(IPXEDir, "ipxe.lkrn"), Initrd: script}
}

// Console is the serial output so far.
func (vm *VM) Console() string { return vm.proc.Output() }

// ConsoleLines are the complete console lines so far, each with the time
// it arrived.
func (vm *VM) ConsoleLines() []Line { return vm.proc.Lines() }

// ConsolePath is the file the serial output is written to.
func (vm *VM) ConsolePath() string { return vm.proc.LogPath }

// Stop kills QEMU.
func (vm *VM) Stop() { vm.proc.Stop() }

// WaitMarker waits up to limit for the marker of the test initramfs (or of
// the LiveOS's init).
func (vm *VM) WaitMarker(limit time.Duration) (Marker, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	line, err := vm.proc.WaitFor(ctx, markerRE)
	if err != nil {
		return Marker{}, fmt.Errorf("e2e: %s: no marker: %w", vm.Config.Name, err)
	}
	m := markerRE.FindStringSubmatch(line)
	return Marker{MAC: m[1], Cmdline: strings.TrimSpace(m[2]), Line: line, Elapsed: time.Since(vm.Started)}, nil
}

// WaitNoBootableDevice waits for SeaBIOS to report that nothing is left to
// boot (what a BIOS machine shows once iPXE exits to a missing local disk).
func (vm *VM) WaitNoBootableDevice(limit time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if _, err := vm.proc.WaitFor(ctx, noBootableRE); err != nil {
		return 0, fmt.Errorf("e2e: %s: %w", vm.Config.Name, err)
	}
	return time.Since(vm.Started), nil
}

// WaitConsole waits for a console line matching re.
func (vm *VM) WaitConsole(limit time.Duration, re *regexp.Regexp) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	return vm.proc.WaitFor(ctx, re)
}

// CheckMarker compares a marker with the VM's own MAC and the expected
// command-line words; it returns a description of every difference.
func (vm *VM) CheckMarker(m Marker, wantWords ...string) error {
	var problems []string
	if !strings.EqualFold(m.MAC, vm.Config.MAC) {
		problems = append(problems, fmt.Sprintf("marker mac %q, want %q", m.MAC, vm.Config.MAC))
	}
	words := strings.Fields(m.Cmdline)
	for _, w := range wantWords {
		found := false
		for _, got := range words {
			if got == w {
				found = true
				break
			}
		}
		if !found {
			problems = append(problems, fmt.Sprintf("cmdline %q lacks %q", m.Cmdline, w))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("e2e: %s: %s", vm.Config.Name, strings.Join(problems, "; "))
	}
	return nil
}
