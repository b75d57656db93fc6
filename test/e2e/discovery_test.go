package e2e

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// TestFleetbootDiscovery is the Razor flow (issue 15) as far as this branch
// goes: `fleetboot discovery build` makes the discovery initramfs from the
// test kernel and points the site's unknown machines at it; an unknown VM
// (2 NICs, a disk, 1 GiB) network-boots it, `fleetboot discover` as its
// init loads the virtio modules, takes an address by DHCP, collects its
// facts and posts them to the edge with its boot's token, which forwards
// them to the coordinator; an admin assigns the MAC an image, the edge's
// "what next?" says reboot, and the VM reboots into the image (the marker).
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

	// The discovery system on the console: what it collected.
	line, err := vm.WaitConsole(bootLimit, regexp.MustCompile(`msg="facts collected"`))
	if err != nil {
		t.Fatalf("discovery system never collected facts: %v\nconsole:\n%s", err, vm.Console())
	}
	collected := time.Since(vm.Started)
	t.Logf("console: %s", line)
	for _, want := range []string{"firmware=bios", "nics=2", "disks=1", "vendor=QEMU", "memory_gib=1 "} {
		if !strings.Contains(line+" ", want) {
			t.Errorf("facts line lacks %q: %s", want, line)
		}
	}
	// The edge took them from the discovery boot (token, lease) and
	// forwarded them: the callback.facts event reaches the coordinator.
	factsAt := e.waitFactsEvent(t, mac)
	t.Logf("TIMING discovery %s: power-on to facts collected %.1fs, to facts at the coordinator %.1fs",
		mac, collected.Seconds(), factsAt.Sub(vm.Started).Seconds())

	// The admin assigns it; the discovery system reboots into the image.
	assigned := time.Now()
	e.setHost(t, mac, "--site", site, "--image", "img-a")
	m, err := vm.WaitMarker(bootLimit)
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, vm.Console())
	}
	if err := vm.CheckMarker(m, "fleetboot.image=img-a", "fleetboot.mac="+mac); err != nil {
		t.Error(err)
	}
	if !strings.Contains(vm.Console(), `msg="assigned: rebooting"`) {
		t.Error("console has no reboot by the discovery system")
	}
	e.checkEdgeSaw(t, mac, proto.EventCallbackFacts, proto.EventDiscoveryNext)
	t.Logf("TIMING discovery %s: host set to rebooted into img-a (marker) %.1fs; power-on to marker %.1fs",
		mac, time.Since(assigned).Seconds(), m.Elapsed.Seconds())
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
