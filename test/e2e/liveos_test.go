package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/coordinator/timeline"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// liveMemoryMB is a LiveOS VM's memory: livenet downloads the ISO into
// RAM, next to the unpacked ~20 MB initramfs.
const liveMemoryMB = 1024

// ensureLiveOS is EnsureLiveOS for a test, with the build time logged.
func ensureLiveOS(t testing.TB, a Assets) LiveOS {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	lo, err := EnsureLiveOS(ctx, CacheDir(), a)
	if err != nil {
		t.Fatal(err)
	}
	cache := "warm"
	if lo.Built {
		cache = "cold"
	}
	t.Logf("TIMING liveos fixture (%s cache): %.1fs (%s)", cache, time.Since(start).Seconds(), filepath.Dir(lo.ISO))
	return lo
}

// TestEnsureLiveOS checks the LiveOS fixture with readers independent of
// its build: the ISO holds LiveOS/squashfs.img (xorriso), the squashfs
// holds the init and the build ID (unsquashfs), and dracut's initramfs has
// what a network live boot needs (lsinitrd) and no FLEETBOOT string at all,
// so a marker on a console can only come from the live root.
func TestEnsureLiveOS(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: the kernel download and dracut are not short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, err := EnsureAssets(ctx, CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	lo := ensureLiveOS(t, a)
	if lo.Kernel != a.Kernel || lo.KernelVersion != a.KernelVersion {
		t.Errorf("LiveOS kernel %s (%s), want the test kernel %s (%s)", lo.Kernel, lo.KernelVersion, a.Kernel, a.KernelVersion)
	}
	dir := t.TempDir()
	sq := filepath.Join(dir, "squashfs.img")
	if out, err := exec.CommandContext(ctx, "xorriso", "-osirrox", "on", "-indev", lo.ISO, "-extract", "/LiveOS/squashfs.img", sq).CombinedOutput(); err != nil {
		t.Fatalf("xorriso: the ISO has no LiveOS/squashfs.img: %v\n%s", err, out)
	}
	list, err := exec.CommandContext(ctx, "unsquashfs", "-l", sq).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs -l: %v\n%s", err, list)
	}
	for _, want := range []string{"squashfs-root/sbin/init", "squashfs-root/bin/busybox", "squashfs-root/proc", "squashfs-root/sys", "squashfs-root/dev", "squashfs-root/run"} {
		if !strings.Contains(string(list), want+"\n") {
			t.Errorf("squashfs lacks %s:\n%s", want, list)
		}
	}
	id, err := exec.CommandContext(ctx, "unsquashfs", "-cat", sq, "etc/fleetboot-live-id").Output()
	if err != nil || strings.TrimSpace(string(id)) != lo.ID {
		t.Errorf("squashfs etc/fleetboot-live-id = %q (%v), want %s", id, err, lo.ID)
	}
	files, err := exec.CommandContext(ctx, "lsinitrd", lo.Initrd).CombinedOutput()
	if err != nil {
		t.Fatalf("lsinitrd: %v\n%s", err, files)
	}
	for _, want := range []string{"livenetroot", "dmsquash-live-root", "/dhclient", "virtio_net.ko", "squashfs.ko", "isofs.ko", "overlay.ko", "loop.ko"} {
		if !strings.Contains(string(files), want) {
			t.Errorf("initramfs lacks %s", want)
		}
	}
	// The pitfall FIRMWARE-FACTS.md names: with systemd-networkd in the
	// initramfs livenet never fetches the ISO.
	if strings.Contains(string(files), "systemd-networkd") {
		t.Errorf("initramfs has systemd-networkd (network-legacy is wanted)")
	}
	if bytes.Contains(gunzipFile(t, lo.Initrd), []byte("FLEETBOOT")) {
		t.Errorf("dracut's initramfs contains FLEETBOOT: the marker could come from it")
	}
}

// bootLive boots a LiveOS VM, waits for the live root's marker and checks
// it names the VM and the image's command line with root=live: pointing at
// the edge's copy of the ISO, and that the console tells dracut's boot in
// order (CheckLiveRoot). It returns the VM, stopped.
func (e *fbEnv) bootLive(t *testing.T, cfg VMConfig, image string) *VM {
	t.Helper()
	iso, _ := e.image(t, image).Artifact(proto.RoleISO)
	cfg.MemoryMB = liveMemoryMB
	vm := e.net.StartVM(t, e.dir, cfg)
	defer vm.Stop()
	m, err := vm.WaitMarker(liveBootLimit)
	if err != nil {
		t.Fatalf("%v\n%s", err, lastLines(StripANSI(vm.Console()), 60))
	}
	want := append([]string{"root=live:http://" + edgeHTTP + "/artifacts/" + image + "/" + iso.Name,
		"fleetboot.image=" + image, "fleetboot.mac=" + vm.Config.MAC}, strings.Fields(LiveCmdline)...)
	if err := vm.CheckMarker(m, want...); err != nil {
		t.Error(err)
	}
	if err := vm.CheckLiveRoot(e.live); err != nil {
		t.Error(err)
	}
	t.Logf("TIMING fleetboot %s %s: power-on to marker %.1fs (%s)", t.Name(), cfg.Firmware, m.Elapsed.Seconds(), vm.LiveMilestones())
	return vm
}

// checkLiveISO asserts the MAC's events have dracut's download of the
// image's ISO: served whole from the edge's cache (a hit: the edge
// prefetched it), after the kernel and initrd, named by the edge from its
// lease (dracut's URL carries no ?mac=).
func (e *fbEnv) checkLiveISO(t *testing.T, mac, image string) {
	t.Helper()
	iso, _ := e.image(t, image).Artifact(proto.RoleISO)
	var got []string
	waitfor.Within(t, 30*time.Second, "the ISO download of "+mac, func() error {
		events, err := e.events(mac)
		if err != nil {
			return err
		}
		got = got[:0]
		for _, ev := range events {
			if ev.Kind == proto.EventArtifactEnd && ev.Detail["file"] == iso.Name {
				got = append(got, fmt.Sprintf("%s cache=%s status=%s bytes=%s", ev.Detail["file"], ev.Detail["cache"], ev.Detail["status"], ev.Detail["bytes"]))
			}
		}
		want := []string{fmt.Sprintf("%s cache=hit status=complete bytes=%d", iso.Name, iso.Size)}
		if !slices.Equal(got, want) {
			return fmt.Errorf("ISO downloads %q, want %q", got, want)
		}
		return nil
	})
	t.Logf("%s fetched %s", mac, strings.Join(got, "; "))
}

// dracutSteps are a LiveOS boot's steps after the kernel started: dracut's
// own DHCP (a new boot in the timeline: the kernel asks for its address),
// then the ISO.
func dracutSteps(iso string) []string {
	return []string{proto.EventDHCPDiscover, proto.EventDHCPOffer, proto.EventDHCPRequest, proto.EventDHCPAck,
		proto.EventArtifactStart + " " + iso, proto.EventArtifactEnd + " " + iso}
}

// checkLiveTimeline asserts `host timeline` tells the MAC's LiveOS boot as
// two boots, each with no problem diagnosed: the firmware's, whose steps
// are firmware (nil: not compared; the Secure Boot chain's TFTP steps are
// checked by checkSecureBootTFTP), and dracut's (dracutSteps). With
// settled it waits for both boots to be over first, so the rules that hold
// back on a boot still running have had their say.
func (e *fbEnv) checkLiveTimeline(t *testing.T, mac, image string, firmware []string, settled bool) {
	t.Helper()
	iso, _ := e.image(t, image).Artifact(proto.RoleISO)
	limit := 30 * time.Second
	if settled {
		limit = settleWait
	}
	var all []string
	waitfor.Within(t, limit, "timeline of "+mac, func() error {
		boots, err := e.timelineOf(mac)
		if err != nil {
			return err
		}
		all = all[:0]
		var net []timeline.Boot
		for _, b := range boots {
			all = append(all, fmt.Sprintf("boot at %s: %v; diagnoses %s", b.Start.Format("15:04:05.000"), bootSteps(b), describe(b.Diagnoses)))
			if slices.ContainsFunc(bootSteps(b), func(s string) bool { return strings.HasPrefix(s, proto.EventDHCPDiscover) }) {
				net = append(net, b)
			}
		}
		if len(net) < 2 {
			return fmt.Errorf("%d boots with DHCP, want the firmware's and dracut's:\n%s", len(net), strings.Join(all, "\n"))
		}
		fw, dr := net[len(net)-2], net[len(net)-1]
		// Logged: the stp rule takes a DISCOVER with a small secs for a
		// client that has just begun (dhclient's first says 0).
		all = append(all, "dracut's first DISCOVER secs="+dr.Steps[0].Event.Detail["secs"])
		if settled && (fw.InProgress || dr.InProgress) {
			return fmt.Errorf("boots still in progress:\n%s", strings.Join(all, "\n"))
		}
		if firmware != nil {
			if d := cmp.Diff(firmware, bootSteps(fw)); d != "" {
				return fmt.Errorf("firmware boot steps (-want +got):\n%s", d)
			}
		}
		if d := cmp.Diff(dracutSteps(iso.Name), bootSteps(dr)); d != "" {
			return fmt.Errorf("dracut boot steps (-want +got):\n%s", d)
		}
		for _, b := range []timeline.Boot{fw, dr} {
			for _, d := range b.Diagnoses {
				if d.Level == timeline.LevelProblem {
					return fmt.Errorf("problem diagnosed in a boot that worked: %s", describe(b.Diagnoses))
				}
			}
		}
		return nil
	})
	t.Logf("timeline of %s:\n\t%s", mac, strings.Join(all, "\n\t"))
}

// TestReferenceLiveOS boots the same LiveOS from the reference servers
// (dnsmasq, Go's file server) through QEMU's iPXE ROM on BIOS: the time
// fleetboot's f-liveos-iso is compared with, and proof that the fixture
// boots whatever serves it.
func TestReferenceLiveOS(t *testing.T) {
	t.Parallel()
	// The script names the files Serve adds below.
	script := func(base string, _ *http.Request) string {
		return "#!ipxe\nkernel " + base + "/vmlinuz initrd=live-initrd.img root=live:" + base + "/files/live.iso " + LiveCmdline +
			" fleetboot.ref=1 fleetboot.mac=${net0/mac}\ninitrd --name live-initrd.img " + base + "/files/live-initrd.img\nboot\n"
	}
	e := startRef(t, DnsmasqConfig{NoPXEDHCP: true, EnableRA: true}, script)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, err := EnsureAssets(ctx, CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	lo := ensureLiveOS(t, a)
	e.Serve("live-initrd.img", lo.Initrd)
	iso := e.Serve("live.iso", lo.ISO)
	vm := e.Net.StartVM(t, e.Dir, VMConfig{Firmware: BIOS, MemoryMB: liveMemoryMB})
	m, err := vm.WaitMarker(liveBootLimit)
	if err != nil {
		t.Fatalf("%v\n%s", err, lastLines(vm.Console(), 60))
	}
	if err := vm.CheckMarker(m, "root=live:"+iso, "fleetboot.ref=1", "fleetboot.mac="+vm.Config.MAC); err != nil {
		t.Error(err)
	}
	if err := vm.CheckLiveRoot(lo); err != nil {
		t.Error(err)
	}
	t.Logf("TIMING reference liveos bios-ipxe-rom: power-on to marker %.1fs (%s)", m.Elapsed.Seconds(), vm.LiveMilestones())
	reqs := e.HTTP.Lines()
	for _, want := range []string{"GET /files/live-initrd.img 200", "GET /files/live.iso 200"} {
		if n := strings.Count(reqs, want); n != 1 {
			t.Errorf("http log has %q %s times, want once:\n%s", want, strconv.Itoa(n), reqs)
		}
	}
}

// TestCheckLiveConsole: the check passes only for dracut's mount, its
// switch_root, the live init's line (this build's ID, pid 1) and the
// marker, in that order.
func TestCheckLiveConsole(t *testing.T) {
	const (
		mounted  = "[   39.187486] dracut: Mounted root filesystem LiveOS_rootfs"
		switched = "[   44.872021] dracut: Switching root"
		live     = "FLEETBOOT-LIVEROOT id=abc pid=1 root=LiveOS_rootfs / overlay rw 0 0"
		marker   = "FLEETBOOT-MARKER mac=52:54:00:12:34:56 cmdline=root=live:http://10.77.0.1:8080/artifacts/img-live/live.iso"
	)
	tests := []struct {
		name  string
		lines []string
		ok    bool
	}{
		{"live boot", []string{"Linux version 6.1", mounted, switched, live, marker}, true},
		{"marker from the initramfs", []string{"Linux version 6.1", marker}, false},
		{"no switch root", []string{mounted, live, marker}, false},
		{"another build's root", []string{mounted, switched, strings.Replace(live, "id=abc", "id=def", 1), marker}, false},
		{"not pid 1", []string{mounted, switched, strings.Replace(live, "pid=1", "pid=42", 1), marker}, false},
		{"marker before the live root", []string{mounted, switched, marker, live}, false},
		{"switch before mount", []string{switched, mounted, live, marker}, false},
	}
	for _, tc := range tests {
		var lines []Line
		for _, l := range tc.lines {
			lines = append(lines, Line{Text: l})
		}
		if err := checkLiveConsole(lines, "abc"); (err == nil) != tc.ok {
			t.Errorf("%s: checkLiveConsole = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
