package e2e

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// TestFleetbootDiscovery is the Razor flow of issue 15 as far as this
// branch goes: `fleetboot discovery build` makes the discovery initramfs
// from the test kernel's module tree and points the site's unknown machines
// at it. Two unknown VMs boot it at once: a BIOS one with 2 NICs, a disk and
// 1 GiB, and a UEFI one. `fleetboot discover`, their init, loads the virtio
// modules, takes an address by DHCP, collects the facts (checked on the
// console) and posts them to the edge with its boot's token; the edge takes
// them (callback.facts at the coordinator). An admin assigns the first an
// installer image with --once: the edge's "what next?" says reboot, the VM
// reboots into the image (marker), which reports done; its next power-on
// boots from its disk through the edge's local script. The second, never
// assigned, is still in discovery at the end.
func TestFleetbootDiscovery(t *testing.T) {
	e := startFleetboot(t, fbOptions{dhcpMode: "full", images: []string{"img-a"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	mods, err := EnsureModuleTree(ctx, CacheDir(), e.assets.KernelVersion)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(e.dir, "discovery")
	built := e.cli(t, "discovery", "build", "--kernel", e.assets.Kernel, "--modules", mods, "--out", out,
		"--site", site, "--cmdline", "console=ttyS0 panic=-1")
	t.Logf("discovery build:\n%s", built)
	for _, want := range []string{"virtio_net.ko", "virtio_blk.ko", "virtio_pci.ko", "registered image discovery", "site lab: unknown machines now boot discovery"} {
		if !strings.Contains(built, want) {
			t.Errorf("discovery build output lacks %q", want)
		}
	}
	img, err := os.Stat(filepath.Join(out, "discovery.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SIZE discovery initramfs %d bytes (%.1f MiB); test marker initramfs %d bytes", img.Size(), float64(img.Size())/(1<<20), fileSize(t, e.assets.Initrd))

	// The edge must have the site's new discovery image before the VM asks.
	e.waitScript(t, "52:54:00:00:00:01", "/artifacts/discovery/")

	disk := filepath.Join(e.dir, "disk.img")
	if err := os.Truncate(createFile(t, disk), 2<<30); err != nil {
		t.Fatal(err)
	}
	vm := e.net.StartVM(t, e.dir, VMConfig{Firmware: BIOS, MemoryMB: 1024, ExtraNICs: 1, Disk: disk, Reboot: true})
	mac := vm.Config.MAC
	// A second unknown machine, UEFI, that nobody assigns: it reports
	// and stays in discovery.
	idle := e.net.StartVM(t, e.dir, VMConfig{Firmware: UEFI, MemoryMB: 512, Reboot: true})

	// The discovery system on the console: what it collected.
	line, err := vm.WaitConsole(bootLimit, regexp.MustCompile(`msg="facts collected"`))
	if err != nil {
		t.Fatalf("discovery system never collected facts: %v\nconsole:\n%s", err, vm.Console())
	}
	collected := time.Since(vm.Started)
	t.Logf("console: %s", line)
	for _, want := range []string{"firmware=bios", "nics=2", "disks=1", "vendor=QEMU", "memory_gib=1"} {
		if !strings.Contains(line+" ", want+" ") {
			t.Errorf("facts line lacks %q: %s", want, line)
		}
	}
	// The edge took them from the discovery boot (token, lease) and
	// forwarded them: the callback.facts event reaches the coordinator.
	factsAt := e.waitFactsEvent(t, mac)
	t.Logf("TIMING discovery %s: power-on to facts collected %.1fs, to facts at the coordinator %.1fs",
		mac, collected.Seconds(), factsAt.Sub(vm.Started).Seconds())

	line, err = idle.WaitConsole(bootLimit, regexp.MustCompile(`msg="facts collected"`))
	if err != nil {
		t.Fatalf("UEFI discovery system never collected facts: %v\nconsole:\n%s", err, idle.Console())
	}
	t.Logf("console (UEFI): %s", line)
	for _, want := range []string{"firmware=uefi", "secure_boot=false", "nics=1", "disks=0", "vendor=QEMU"} {
		if !strings.Contains(line+" ", want+" ") {
			t.Errorf("UEFI facts line lacks %q: %s", want, line)
		}
	}
	e.waitFactsEvent(t, idle.Config.MAC)

	// The admin assigns it an installer image, once: the discovery system
	// reboots into it.
	e.cli(t, "image", "add", "img-install", "--kernel", e.assets.Kernel, "--initrd", e.assets.Initrd,
		"--cmdline", "console=ttyS0 panic=-1 fleetboot.mac={{mac}} fleetboot.image=img-install fleetboot.done={{callback}}")
	assigned := time.Now()
	e.setHost(t, mac, "--site", site, "--image", "img-install", "--once")
	m, err := vm.WaitMarker(bootLimit)
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, vm.Console())
	}
	if err := vm.CheckMarker(m, "fleetboot.image=img-install", "fleetboot.mac="+mac); err != nil {
		t.Error(err)
	}
	if !strings.Contains(vm.Console(), `msg="assigned: rebooting"`) {
		t.Error("console has no reboot by the discovery system")
	}
	t.Logf("TIMING discovery %s: host set to rebooted into img-install (marker) %.1fs; power-on to marker %.1fs",
		mac, time.Since(assigned).Seconds(), m.Elapsed.Seconds())

	// The "installer" reports done with its token; --once turns the host
	// to local boot.
	if line, err := vm.WaitConsole(bootLimit, regexp.MustCompile(`FLEETBOOT-DONE \S+`)); err != nil || !strings.Contains(line, "FLEETBOOT-DONE ok") {
		t.Fatalf("done callback: %q, %v", line, err)
	}
	e.checkEdgeSaw(t, mac, proto.EventCallbackFacts, proto.EventDiscoveryNext, proto.EventCallbackDone)
	vm.Stop()
	e.waitScript(t, mac, "sanboot")

	// What the installer left on the disk: a boot sector that prints a
	// line on the serial port. The next power-on boots it from the disk.
	if err := writeBootSector(disk, diskMarker); err != nil {
		t.Fatal(err)
	}
	vm2 := e.net.StartVM(t, e.dir, VMConfig{Name: vm.Config.Name + "-disk", MAC: mac, Firmware: BIOS, MemoryMB: 1024, Disk: disk})
	if _, err := vm2.WaitConsole(bootLimit, regexp.MustCompile(diskMarker)); err != nil {
		t.Fatalf("next power-on did not boot from the disk: %v\nconsole:\n%s", err, vm2.Console())
	}
	t.Logf("TIMING discovery %s: power-on to booted from disk %.1fs", mac, time.Since(vm2.Started).Seconds())
	// The unassigned machine is still in discovery, asking.
	if strings.Contains(idle.Console(), `msg="assigned: rebooting"`) {
		t.Errorf("the unassigned machine rebooted:\n%s", idle.Console())
	}
	select {
	case <-idle.proc.Exited():
		t.Errorf("the unassigned machine's QEMU exited:\n%s", idle.Console())
	default:
	}
	// Through the edge, which sent it to its disk; not by the firmware
	// passing the network by.
	if !slices.ContainsFunc(e.edgeLines(mac), regexp.MustCompile(`msg=script .*decision=local`).MatchString) {
		t.Errorf("the edge never told %s to boot locally; its lines:\n%s", mac, strings.Join(e.edgeLines(mac), "\n"))
	}
	if !strings.Contains(vm2.Console(), "fleetboot: booting from local disk") {
		t.Errorf("console shows no local boot script:\n%s", vm2.Console())
	}
}

// diskMarker is what the test's boot sector prints.
const diskMarker = "FLEETBOOT-DISK-BOOT"

// writeBootSector writes an MBR boot sector that prints msg on COM1 and
// halts, as an installed system would leave the disk bootable. Real mode,
// loaded at 0x7c00:
//
//	xor ax,ax; mov ds,ax; cld; mov si,0x7c16; mov dx,0x3f8
//	next: lodsb; test al,al; jz done; out dx,al; jmp next
//	done: hlt; jmp done
//	msg at 0x16
func writeBootSector(path, msg string) error {
	code := []byte{
		0x31, 0xc0, 0x8e, 0xd8, 0xfc, 0xbe, 0x16, 0x7c, 0xba, 0xf8, 0x03,
		0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8,
		0xf4, 0xeb, 0xfd,
	}
	sector := make([]byte, 512)
	copy(sector, code)
	copy(sector[len(code):], msg+"\r\n\x00")
	sector[510], sector[511] = 0x55, 0xaa
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteAt(sector, 0)
	return err
}

// waitScript waits until the edge renders mac's script with want in it.
func (e *fbEnv) waitScript(t *testing.T, mac, want string) {
	t.Helper()
	client := e.srv.HTTPClient(5 * time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://" + edgeHTTP + "/boot.ipxe?mac=" + mac + "&arch=x86_64&platform=" + probePlatform)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge script for %s never had %q", mac, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitFactsEvent waits for the coordinator's record of the edge taking
// mac's facts and returns when the edge took them.
func (e *fbEnv) waitFactsEvent(t *testing.T, mac string) time.Time {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		events, err := e.events(mac)
		for _, ev := range events {
			if ev.Kind == proto.EventCallbackFacts {
				if n, _ := strconv.Atoi(ev.Detail["bytes"]); n == 0 {
					t.Errorf("facts event without a body: %+v", ev)
				}
				t.Logf("facts event: %+v", ev)
				return ev.Time
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event for %s (err %v); events: %v", proto.EventCallbackFacts, mac, err, kindsOf(events))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func createFile(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
