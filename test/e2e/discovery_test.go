package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// TestFleetbootDiscovery is the Razor flow of issue 15: `fleetboot
// discovery build` makes the discovery initramfs from the test kernel's
// module tree and points the site's unknown machines at it. Two unknown VMs
// boot it at once: a BIOS one with 2 NICs, a 2 GiB disk and 1 GiB of
// memory, and a UEFI one with 1 NIC and no disk. `fleetboot discover`,
// their init, loads the virtio modules, takes an address by DHCP, collects
// the facts and posts them to the edge with its boot's token; the edge
// forwards them and both machines wait, discovered, with their facts in
// `host show --facts`. A policy matching the first (2 NICs, a disk, vendor
// QEMU) claims it: the edge's "what next?" says reboot, the VM reboots into
// the policy's image (marker), which reports done with its token; its next
// power-on boots from its disk through the edge's local script. The second,
// which no policy matches, is still discovered and in discovery at the end.
func TestFleetbootDiscovery(t *testing.T) {
	e := startFleetboot(t, fbOptions{dhcpMode: "full", images: []string{"img-a"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	mods, err := EnsureModuleTree(ctx, CacheDir(), e.assets.KernelVersion)
	if err != nil {
		t.Fatal(err)
	}
	// Leases of 30 s: a machine waiting discovered outlives several, and
	// its discovery system must renew them (the edge takes its callbacks
	// only from an address leased to it).
	e.cli(t, "site", "add", site, "--subnet", "10.77.0.0/24", "--range", "10.77.0.100-10.77.0.200", "--router", srvAddr, "--lease", "30s")
	out := filepath.Join(e.dir, "discovery")
	built := e.cli(t, "discovery", "build", "--kernel", e.assets.Kernel, "--modules", mods, "--out", out,
		"--site", site, "--cmdline", "console=ttyS0 panic=-1")
	t.Logf("discovery build:\n%s", built)
	for _, want := range []string{"virtio_net.ko", "virtio_blk.ko", "virtio_pci.ko", "efivarfs.ko", "registered image discovery", "site lab: unknown machines now boot discovery"} {
		if !strings.Contains(built, want) {
			t.Errorf("discovery build output lacks %q", want)
		}
	}
	img, err := os.Stat(filepath.Join(out, "discovery.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SIZE discovery initramfs %d bytes (%.1f MiB); test marker initramfs %d bytes", img.Size(), float64(img.Size())/(1<<20), fileSize(t, e.assets.Initrd))
	// The installer image a policy will assign: it reports done.
	e.cli(t, "image", "add", "img-install", "--kernel", e.assets.Kernel, "--initrd", e.assets.Initrd,
		"--cmdline", "console=ttyS0 panic=-1 fleetboot.mac={{mac}} fleetboot.image=img-install fleetboot.userdata={{template_url}} fleetboot.done={{callback}}")
	// Its install template, which the policy gives the machines it claims:
	// the installer fetches its user-data from the edge (NoCloud seed).
	tmpl := filepath.Join(e.dir, "razor.yaml")
	if err := os.WriteFile(tmpl, []byte("#cloud-config\nfqdn: {{quote .MAC}}\nruncmd:\n  - [echo, \"installed {{.Image}} at {{.Site}}\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.cli(t, "template", "add", "razor", "--kind", "cloud-init", "--file", tmpl)

	// The edge must have the site's new discovery image before the VMs
	// ask, and in its cache, as the image a policy assigns will be (the
	// edge prefetches it): the timings compare boots, not store fetches.
	e.waitScript(t, "52:54:00:00:00:01", "/artifacts/discovery/")
	e.warm(t, "discovery", "vmlinuz", "discovery.img")

	disk := filepath.Join(e.dir, "disk.img")
	if err := os.Truncate(createFile(t, disk), 2<<30); err != nil {
		t.Fatal(err)
	}
	vm := e.net.StartVM(t, e.dir, VMConfig{Firmware: BIOS, MemoryMB: 1024, ExtraNICs: 1, Disk: disk, Reboot: true})
	mac := vm.Config.MAC

	// The discovery system says on the console what it collected.
	line, err := vm.WaitConsole(bootLimit, regexp.MustCompile(`msg="facts collected"`))
	if err != nil {
		t.Fatalf("discovery system never collected facts: %v\nconsole:\n%s", err, vm.Console())
	}
	collected := time.Now()
	t.Logf("console: %s", line)

	// The facts at the coordinator: the machine waits, discovered.
	f := e.waitDiscovered(t, mac)
	t.Logf("TIMING discovery %s: power-on to facts collected %.1fs, to facts at the coordinator %.1fs",
		mac, collected.Sub(vm.Started).Seconds(), f.at.Sub(vm.Started).Seconds())
	if len(f.facts.NICs) != 2 || !slices.ContainsFunc(f.facts.NICs, func(n proto.NICFacts) bool { return n.MAC == mac && n.Link && n.Driver == "virtio_net" }) ||
		f.facts.BootMAC != mac || f.facts.Firmware != "bios" || f.facts.MemoryGiB != 1 || f.facts.CPUs != 1 || f.facts.DMI.Vendor != "QEMU" ||
		len(f.facts.Disks) != 1 || f.facts.Disks[0].Name != "vda" || f.facts.Disks[0].SizeGiB != 2 || f.facts.Kernel != e.assets.KernelVersion {
		t.Errorf("facts at the coordinator: %+v", f.facts)
	}
	// The second machine boots once the first is measured: alone, each
	// boot has the machine's CPU to itself.
	idle := e.net.StartVM(t, e.dir, VMConfig{Firmware: UEFI, MemoryMB: 512, Reboot: true})
	g := e.waitDiscovered(t, idle.Config.MAC)
	if len(g.facts.NICs) != 1 || len(g.facts.Disks) != 0 || g.facts.Firmware != "uefi" || g.facts.SecureBoot || g.facts.DMI.Vendor != "QEMU" {
		t.Errorf("facts of the UEFI machine at the coordinator: %+v", g.facts)
	}
	if got := e.discoveredMACs(t); !slices.Contains(got, mac) || !slices.Contains(got, idle.Config.MAC) {
		t.Errorf("host ls --state discovered: %v, want both machines", got)
	}

	// A policy matching the first machine's facts claims it; the
	// discovery system reboots into the policy's image.
	claimed := time.Now()
	added := e.cli(t, "policy", "add", "qemu-install", "--match", "facts.dmi.vendor=QEMU,facts.nics>=2,facts.disks[0].size_gib>=2",
		"--image", "img-install", "--template", "razor", "--site", site)
	if !strings.Contains(added, mac) || strings.Contains(added, idle.Config.MAC) {
		t.Errorf("policy add claimed the wrong machines:\n%s", added)
	}
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
	// Its init fetched its own cloud-init user-data, rendered for it.
	for _, want := range []string{"FLEETBOOT-USERDATA #cloud-config", fmt.Sprintf("FLEETBOOT-USERDATA fqdn: %q", mac),
		"FLEETBOOT-USERDATA   - [echo, \"installed img-install at " + site + "\"]"} {
		if _, err := vm.WaitConsole(bootLimit, regexp.MustCompile(regexp.QuoteMeta(want))); err != nil {
			t.Errorf("console lacks %q: %v\nconsole:\n%s", want, err, vm.Console())
		}
	}
	// The reference, in the same run on the same VM: its network boot of
	// the marker image (reboot to marker) against its network boot of the
	// discovery image (power-on to facts collected).
	rebootAt := lineAt(t, vm, `msg="assigned: rebooting"`)
	markerAt := lineAt(t, vm, MarkerPrefix)
	discoveryBoot, imageBoot := collected.Sub(vm.Started), markerAt.Sub(rebootAt)
	t.Logf("TIMING discovery %s: policy add to reboot %.1fs, to marker %.1fs; discovery boot (power-on to facts collected) %.1fs vs image boot (reboot to marker) %.1fs: ratio %.2f",
		mac, rebootAt.Sub(claimed).Seconds(), markerAt.Sub(claimed).Seconds(), discoveryBoot.Seconds(), imageBoot.Seconds(), discoveryBoot.Seconds()/imageBoot.Seconds())

	// The "installer" reports done with its token; the claimed host turns
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
	// Through the edge, which sent it to its disk; not by the firmware
	// passing the network by.
	if !slices.ContainsFunc(e.edgeLines(mac), regexp.MustCompile(`msg=script .*decision=local`).MatchString) {
		t.Errorf("the edge never told %s to boot locally; its lines:\n%s", mac, strings.Join(e.edgeLines(mac), "\n"))
	}
	if !strings.Contains(vm2.Console(), "fleetboot: booting from local disk") {
		t.Errorf("console shows no local boot script:\n%s", vm2.Console())
	}

	// The machine no policy matches still waits, discovered, asking.
	if got := e.discoveredMACs(t); slices.Contains(got, mac) || !slices.Contains(got, idle.Config.MAC) {
		t.Errorf("host ls --state discovered: %v, want only %s", got, idle.Config.MAC)
	}
	if strings.Contains(idle.Console(), `msg="assigned: rebooting"`) {
		t.Errorf("the unmatched machine rebooted:\n%s", idle.Console())
	}
	// Two renewals take it past the end of its first lease; the edge
	// still takes its questions (it refuses any from an address it has
	// not leased to the machine, and logs that).
	for deadline := time.Now().Add(bootLimit); strings.Count(idle.Console(), `msg="lease renewed"`) < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("the waiting machine did not renew its lease twice:\n%s", idle.Console())
		}
		time.Sleep(time.Second)
	}
	if slices.ContainsFunc(e.edgeLines(idle.Config.MAC), func(l string) bool { return strings.Contains(l, "callback refused") }) {
		t.Errorf("the edge refused the waiting machine:\n%s", strings.Join(e.edgeLines(idle.Config.MAC), "\n"))
	}
	select {
	case <-idle.proc.Exited():
		t.Errorf("the unmatched machine's QEMU exited:\n%s", idle.Console())
	default:
	}
}

// discoveredFacts is a machine's facts as the coordinator has them.
type discoveredFacts struct {
	facts proto.Facts
	at    time.Time // the coordinator's first report
}

// waitDiscovered waits until `host show MAC --facts` has the machine
// discovered with its facts.
func (e *fbEnv) waitDiscovered(t *testing.T, mac string) discoveredFacts {
	t.Helper()
	deadline := time.Now().Add(bootLimit)
	for {
		out, err := e.command("host", "show", mac, "--facts", "-o", "json").Output()
		var fr proto.FactsReply
		if err == nil && json.Unmarshal(out, &fr) == nil && fr.State == proto.StateDiscovered && fr.Discovered != nil && len(fr.Facts) > 0 {
			var d discoveredFacts
			if err := json.Unmarshal(fr.Facts, &d.facts); err != nil {
				t.Fatalf("facts of %s: %v: %s", mac, err, fr.Facts)
			}
			d.at = fr.Discovered.First
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never discovered at the coordinator: %v %s", mac, err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// warm fetches an image's files from the edge, so its cache has them.
func (e *fbEnv) warm(t *testing.T, image string, files ...string) {
	t.Helper()
	client := e.srv.HTTPClient(2 * time.Minute)
	for _, f := range files {
		resp, err := client.Get("http://" + edgeHTTP + "/artifacts/" + image + "/" + f)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("warming %s/%s: %s %v", image, f, resp.Status, err)
		}
	}
}

// discoveredMACs lists `host ls --state discovered`.
func (e *fbEnv) discoveredMACs(t *testing.T) []string {
	t.Helper()
	var ds []proto.Discovered
	if err := json.Unmarshal([]byte(e.cli(t, "host", "ls", "--state", "discovered", "-o", "json")), &ds); err != nil {
		t.Fatal(err)
	}
	var macs []string
	for _, d := range ds {
		macs = append(macs, d.MAC)
	}
	return macs
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

// lineAt is when the VM's console printed the first line matching re.
func lineAt(t *testing.T, vm *VM, re string) time.Time {
	t.Helper()
	r := regexp.MustCompile(re)
	for _, l := range vm.ConsoleLines() {
		if r.MatchString(l.Text) {
			return l.At
		}
	}
	t.Fatalf("%s: no console line matches %s", vm.Config.Name, re)
	return time.Time{}
}
