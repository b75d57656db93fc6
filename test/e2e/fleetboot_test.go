//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// These scenarios (issue 6, a–h) drive the built fleetboot binary as a user
// runs it: MinIO, the coordinator and the edge are separate processes inside
// the test's server namespace, VMs boot on the bridge. They are behind the
// e2e build tag until the edge agent is wired into the binary.

const (
	site     = "lab"
	srvAddr  = "10.77.0.1"
	edgeHTTP = srvAddr + ":8080"
	natsURL  = "nats://127.0.0.1:4222"
)

// fbEnv is one running fleetboot deployment inside a test network.
type fbEnv struct {
	t      *testing.T
	bin    string
	dir    string
	net    *Network
	srv    *Host
	minio  *MinIO
	coord  *Proc
	edge   *Proc
	assets Assets
}

// buildFleetboot builds the binary the way a user does.
func buildFleetboot(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "fleetboot")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/fleetboot/fleetboot/cmd/fleetboot")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build fleetboot: %v\n%s", err, out)
	}
	return bin
}

// startFleetboot brings up MinIO, the coordinator and an edge in dhcpMode
// (full or proxy) on a fresh network. With proxy, a plain dnsmasq on its own
// host hands out the addresses.
func startFleetboot(t *testing.T, dhcpMode string) *fbEnv {
	t.Helper()
	RequireRoot(t)
	if testing.Short() {
		t.Skip("short mode: VM boots take tens of seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	assets, err := EnsureAssets(ctx, CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	e := &fbEnv{t: t, dir: LogDir(t), assets: assets}
	e.bin = buildFleetboot(t, t.TempDir())
	e.net = NewNetwork(t, "10.77.0.0/24")
	e.srv = e.net.AddHost(t, "srv", srvAddr, "")
	// A router sending IPv6 RAs, as on most LANs: without it every iPXE
	// instance waits ~12 s for IPv6 autoconfiguration.
	rtr := e.net.AddHost(t, "rtr", "10.77.0.254", "fd77::fe/64")
	StartRouterAdverts(t, rtr, e.dir)
	e.minio = StartMinIO(t, e.srv, e.dir)

	cmd := e.command("coordinator", "--data", filepath.Join(e.dir, "coordinator"),
		"--nats-listen", "127.0.0.1:4222", "--store", e.minio.StoreURL("fleetboot"))
	e.coord = StartProc(t, e.dir, "coordinator", cmd)
	e.waitCLI(60*time.Second, "site", "ls")

	siteArgs := []string{"site", "add", site, "--subnet", "10.77.0.0/24", "--dhcp", dhcpMode}
	if dhcpMode == "proxy" {
		dh := e.net.AddHost(t, "dhcp", "10.77.0.2", "")
		StartDnsmasq(t, dh, e.dir, DnsmasqConfig{Iface: dh.Iface, RangeStart: "10.77.0.100", RangeEnd: "10.77.0.200"})
	} else {
		siteArgs = append(siteArgs, "--range", "10.77.0.100-10.77.0.200", "--router", srvAddr)
	}
	e.cli(siteArgs...)
	e.addImage("img-a", "", "fleetboot.image=img-a")
	e.addImage("img-b", "", "fleetboot.image=img-b")
	e.addImage("img-live", assets.ISO, "fleetboot.image=img-live fleetboot.iso_sha256="+assets.ISOSHA256)

	stateDir := filepath.Join(e.dir, "edge-state")
	cacheDir := filepath.Join(e.dir, "edge-cache")
	e.edge = StartProc(t, e.dir, "edge", e.command(edgeArgs(stateDir, cacheDir, dhcpMode)...))
	wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer wcancel()
	if err := WaitListening(wctx, e.srv.NS, "tcp", 8080); err != nil {
		t.Fatalf("edge http: %v\n%s", err, e.edge.Output())
	}
	port := 67
	if dhcpMode == "proxy" {
		port = 4011 // proxyDHCP; port 67 belongs to the site's server
	}
	if err := WaitListening(wctx, e.srv.NS, "udp", port); err != nil {
		t.Fatalf("edge dhcp: %v\n%s", err, e.edge.Output())
	}
	return e
}

// edgeArgs is the edge's command line, as DESIGN.md §3 gives it.
func edgeArgs(stateDir, cacheDir, dhcpMode string) []string {
	return []string{"edge", "run", "--coordinator", natsURL, "--site", site,
		"--interface", "eth0", "--state-dir", stateDir, "--cache-dir", cacheDir,
		"--http-listen", edgeHTTP, "--tftp-listen", srvAddr + ":69", "--dhcp", dhcpMode}
}

func (e *fbEnv) command(args ...string) *exec.Cmd {
	cmd := e.srv.Command(context.Background(), e.bin, args...)
	cmd.Env = append(append(os.Environ(), e.minio.Env()...), "FLEETBOOT_NATS="+natsURL)
	return cmd
}

// cli runs a fleetboot client command in the server namespace and fails the
// test if it exits non-zero.
func (e *fbEnv) cli(args ...string) string {
	e.t.Helper()
	out, err := e.command(args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("fleetboot %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitCLI polls a read-only command until the coordinator answers it.
func (e *fbEnv) waitCLI(limit time.Duration, args ...string) {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		out, err := e.command(args...).CombinedOutput()
		if err == nil {
			return
		}
		select {
		case <-e.coord.Exited():
			e.t.Fatalf("coordinator exited:\n%s", e.coord.Output())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("coordinator not answering `fleetboot %s` after %s: %v\n%s", strings.Join(args, " "), limit, err, out)
		}
	}
}

func (e *fbEnv) addImage(name, iso, extra string) {
	e.t.Helper()
	args := []string{"image", "add", name, "--kernel", e.assets.Kernel, "--initrd", e.assets.Initrd,
		"--cmdline", "console=ttyS0 panic=-1 fleetboot.mac={{mac}} " + extra}
	if iso != "" {
		args = append(args, "--iso", iso)
	}
	e.cli(args...)
}

// boot starts a VM, waits for the marker and checks it names the VM's MAC
// and the image's command line.
func (e *fbEnv) boot(t *testing.T, cfg VMConfig, image string, words ...string) (*VM, Marker) {
	t.Helper()
	vm := e.net.StartVM(t, e.dir, cfg)
	m, err := vm.WaitMarker(bootLimit)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]string{"console=ttyS0", "fleetboot.image=" + image, "fleetboot.mac=" + vm.Config.MAC}, words...)
	if err := vm.CheckMarker(m, want...); err != nil {
		t.Error(err)
	}
	t.Logf("TIMING fleetboot %s: power-on to marker %.1fs", t.Name(), m.Elapsed.Seconds())
	vm.Stop()
	return vm, m
}

// checkEdgeSaw asserts the edge logged and recorded events for the MAC:
// the boot timeline an operator would read.
func (e *fbEnv) checkEdgeSaw(t *testing.T, mac string, wantEvents ...string) {
	t.Helper()
	if !strings.Contains(strings.ToLower(e.edge.Output()), mac) {
		t.Errorf("edge log never mentions %s", mac)
	}
	out, err := e.command("events", "--host", mac, "-o", "json").CombinedOutput()
	if err != nil {
		t.Errorf("fleetboot events --host %s: %v\n%s", mac, err, out)
		return
	}
	var events []map[string]any
	if err := json.Unmarshal(out, &events); err != nil {
		t.Errorf("fleetboot events -o json: %v\n%s", err, out)
		return
	}
	seen := map[string]bool{}
	for _, ev := range events {
		if k, ok := ev["kind"].(string); ok {
			seen[k] = true
		}
		if m, ok := ev["mac"].(string); ok && m != mac {
			t.Errorf("events --host %s returned an event for %s", mac, m)
		}
	}
	for _, k := range wantEvents {
		if !seen[k] {
			t.Errorf("no %q event for %s; got kinds %v", k, mac, keys(seen))
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestFleetboot runs the full-DHCP scenarios against one deployment; each
// subtest uses its own MACs.
func TestFleetboot(t *testing.T) {
	e := startFleetboot(t, "full")

	t.Run("a-bios-ipxe-rom", func(t *testing.T) {
		mac := RandomMAC()
		e.cli("host", "set", mac, "--image", "img-a", "--site", site)
		e.boot(t, VMConfig{MAC: mac, Firmware: BIOS}, "img-a")
		e.checkEdgeSaw(t, mac, "dhcp", "script", "artifact")
	})

	t.Run("b-bios-undionly-chain", func(t *testing.T) {
		// QEMU's BIOS ROM is already iPXE, so no VM sends a classic PXE
		// request; the harness's DHCP and TFTP clients play the firmware:
		// PXE ROM → undionly.kpxe over TFTP → iPXE asks again → HTTP.
		cli := e.net.AddHost(t, "cli", "10.77.0.50", "")
		checkPXEChain(t, cli, srvAddr, "http://"+edgeHTTP+"/")
		// And a BIOS VM still boots its image through the edge.
		mac := RandomMAC()
		e.cli("host", "set", mac, "--image", "img-a", "--site", site)
		vm, _ := e.boot(t, VMConfig{MAC: mac, Firmware: BIOS}, "img-a")
		if n := strings.Count(vm.Console(), "iPXE initialising devices"); n > 2 {
			t.Errorf("iPXE started %d times: chainload loop", n)
		}
		e.checkEdgeSaw(t, mac, "dhcp", "script")
	})

	t.Run("c-uefi-ovmf-pxe", func(t *testing.T) {
		mac := RandomMAC()
		e.cli("host", "set", mac, "--image", "img-b", "--site", site)
		_, m := e.boot(t, VMConfig{MAC: mac, Firmware: UEFI, NoROM: true}, "img-b")
		// The user wrote no initrd=: the edge must have, or the EFI stub
		// would not have found the initramfs that printed the marker.
		if !regexp.MustCompile(`(^| )initrd=\S+`).MatchString(m.Cmdline) {
			t.Errorf("cmdline %q has no initrd= added by the edge", m.Cmdline)
		}
		e.checkEdgeSaw(t, mac, "dhcp", "tftp", "script", "artifact")
	})

	t.Run("d-two-vms-two-images", func(t *testing.T) {
		macA, macB := RandomMAC(), RandomMAC()
		e.cli("host", "set", macA, "--image", "img-a", "--site", site)
		e.cli("host", "set", macB, "--image", "img-b", "--site", site)
		var wg sync.WaitGroup
		for _, c := range []struct{ mac, image string }{{macA, "img-a"}, {macB, "img-b"}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				vm := e.net.StartVM(t, e.dir, VMConfig{MAC: c.mac, Firmware: BIOS})
				m, err := vm.WaitMarker(bootLimit)
				if err != nil {
					t.Error(err)
					return
				}
				if err := vm.CheckMarker(m, "fleetboot.image="+c.image, "fleetboot.mac="+c.mac); err != nil {
					t.Error(err)
				}
				t.Logf("TIMING fleetboot %s %s: power-on to marker %.1fs", t.Name(), c.mac, m.Elapsed.Seconds())
				vm.Stop()
			}()
		}
		wg.Wait()
	})

	t.Run("e-reassign-without-restart", func(t *testing.T) {
		mac := RandomMAC()
		pid := e.edge.PID()
		e.cli("host", "set", mac, "--image", "img-a", "--site", site)
		e.boot(t, VMConfig{MAC: mac, Firmware: BIOS, Name: "e-first"}, "img-a")
		e.cli("host", "set", mac, "--image", "img-b")
		e.boot(t, VMConfig{MAC: mac, Firmware: BIOS, Name: "e-second"}, "img-b")
		select {
		case <-e.edge.Exited():
			t.Fatalf("edge exited during reassignment")
		default:
		}
		if e.edge.PID() != pid {
			t.Fatalf("edge restarted")
		}
	})

	t.Run("f-liveos-iso", func(t *testing.T) {
		mac := RandomMAC()
		e.cli("host", "set", mac, "--image", "img-live", "--site", site)
		_, m := e.boot(t, VMConfig{MAC: mac, Firmware: BIOS}, "img-live", "fleetboot.iso_sha256="+e.assets.ISOSHA256)
		// The marker itself proves the ISO downloaded whole with the right
		// digest; also check it came from this edge.
		want := fmt.Sprintf("root=live:http://%s/", edgeHTTP)
		if !strings.Contains(m.Cmdline, want) {
			t.Errorf("cmdline %q lacks %s…", m.Cmdline, want)
		}
	})

	t.Run("g-local-disk-exit", func(t *testing.T) {
		mac := RandomMAC()
		e.cli("host", "set", mac, "--image", "img-a", "--site", site, "--state", "local")
		vm := e.net.StartVM(t, e.dir, VMConfig{MAC: mac, Firmware: BIOS})
		took, err := vm.WaitNoBootableDevice(bootLimit)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING fleetboot %s: power-on to 'No bootable device' %.1fs", t.Name(), took.Seconds())
		if strings.Contains(vm.Console(), MarkerPrefix) {
			t.Errorf("a host set to local booted the image")
		}
		e.checkEdgeSaw(t, mac, "dhcp", "script")
	})
}

// TestFleetbootProxyDHCP is scenario h: dnsmasq owns the addresses, the
// edge only adds the boot information (proxyDHCP).
func TestFleetbootProxyDHCP(t *testing.T) {
	e := startFleetboot(t, "proxy")
	mac := RandomMAC()
	e.cli("host", "set", mac, "--image", "img-a", "--site", site)
	e.boot(t, VMConfig{MAC: mac, Firmware: BIOS}, "img-a")
	e.checkEdgeSaw(t, mac, "dhcp", "script", "artifact")
}
