package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// These scenarios (issue 6, a–h) drive the built fleetboot binary as a user
// runs it: MinIO, the coordinator and the edge are separate processes inside
// the test's server namespace, VMs boot on the bridge.

const (
	site     = "lab"
	srvAddr  = "10.77.0.1"
	edgeHTTP = srvAddr + ":8080"
	natsURL  = "nats://127.0.0.1:4222"
	edgeName = "e1"
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
	bin, err := BuildFleetboot(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := &fbEnv{t: t, bin: bin, dir: LogDir(t), assets: assets}
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
	// The edge answers DHCP only once it has the site from the coordinator.
	if _, err := e.edge.WaitFor(wctx, regexp.MustCompile(`state in sync.*bucket=sites`)); err != nil {
		t.Fatalf("edge never synced the site: %v", err)
	}
	return e
}

// edgeArgs is the edge's command line, as `fleetboot edge --help` gives it.
// UEFI clients get snponly.efi: Debian's /usr/lib/ipxe/ipxe.efi is a
// symlink to /boot/ipxe.efi, which the edge's confined boot directory
// (os.Root) refuses to follow.
func edgeArgs(stateDir, cacheDir, dhcpMode string) []string {
	return []string{"edge", "--coordinator", natsURL, "--name", edgeName, "--site", site,
		"--interface", "eth0", "--state-dir", stateDir, "--cache-dir", cacheDir,
		"--http-listen", edgeHTTP, "--tftp-listen", srvAddr + ":69", "--dhcp", dhcpMode,
		"--efi-boot-file", efiBootFile}
}

const efiBootFile = "snponly.efi"

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

// probePlatform marks the test's own script requests, which the checks of
// what the edge saw leave out.
const probePlatform = "e2eprobe"

// setHost assigns the MAC and waits until the edge has applied the change:
// the coordinator publishes over a KV watch, so a VM started at once could
// race it.
func (e *fbEnv) setHost(t *testing.T, mac string, args ...string) {
	t.Helper()
	e.cli(append([]string{"host", "set", mac}, args...)...)
	want := strings.Join(args, " ")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := e.srv.HTTPClient(5 * time.Second)
	image, state := flagValue(args, "--image"), flagValue(args, "--state")
	for {
		// The edge's own rendering is what the VM will get.
		resp, err := client.Get("http://" + edgeHTTP + "/boot.ipxe?mac=" + mac + "&arch=x86_64&platform=" + probePlatform)
		if err == nil {
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body := string(raw)
			switch {
			case resp.StatusCode != http.StatusOK:
				// An unknown MAC (site policy ignore): not applied yet.
			case state == "local" && strings.Contains(body, "exit") && !strings.Contains(body, "/artifacts/"):
				return
			case state != "local" && image != "" && strings.Contains(body, "/artifacts/"+image+"/"):
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("edge did not apply `host set %s %s` within 30s", mac, want)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
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

// logSteps are the edge log lines (slog text, attributes mac=…) that show a
// step of the boot chain for a MAC. Artifact requests and TFTP transfers
// carry no MAC in the log: events have the first, checkTFTP the second.
var logSteps = map[string]*regexp.Regexp{
	proto.EventDHCPAck: regexp.MustCompile(`msg="dhcp: (ack|proxy answer)"`),
	proto.EventScript:  regexp.MustCompile(`msg=script `),
}

// edgeLines are the edge's log lines that name mac.
func (e *fbEnv) edgeLines(mac string) []string {
	var out []string
	for _, l := range strings.Split(e.edge.Output(), "\n") {
		if strings.Contains(strings.ToLower(l), "mac="+strings.ToLower(mac)) && !strings.Contains(l, probePlatform) {
			out = append(out, l)
		}
	}
	return out
}

// checkEdgeSaw asserts the edge logged, and recorded as events, each step
// of the boot chain for the MAC: the timeline an operator would read. It
// returns the MAC's events.
func (e *fbEnv) checkEdgeSaw(t *testing.T, mac string, wantKinds ...string) []proto.Event {
	t.Helper()
	lines := e.edgeLines(mac)
	for _, k := range wantKinds {
		re, ok := logSteps[k]
		if !ok {
			continue
		}
		if !slices.ContainsFunc(lines, re.MatchString) {
			t.Errorf("edge log has no %s line (%s) for %s; its lines for the MAC:\n%s", k, re, mac, strings.Join(lines, "\n"))
		}
	}
	// Events reach the coordinator asynchronously (the edge buffers them on
	// disk and publishes to JetStream): poll until every kind is there.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		events, err := e.events(mac)
		events = slices.DeleteFunc(events, func(ev proto.Event) bool { return ev.Detail["platform"] == probePlatform })
		seen := map[string]bool{}
		for _, ev := range events {
			seen[ev.Kind] = true
		}
		missing := slices.DeleteFunc(slices.Clone(wantKinds), func(k string) bool { return seen[k] })
		if err == nil && len(missing) == 0 {
			for _, ev := range events {
				if !strings.EqualFold(ev.MAC, mac) {
					t.Errorf("events --host %s returned an event for %q: %+v", mac, ev.MAC, ev)
				}
				if ev.Site != site || ev.Edge != edgeName {
					t.Errorf("event site/edge %s/%s, want %s/%s: %+v", ev.Site, ev.Edge, site, edgeName, ev)
				}
			}
			return events
		}
		select {
		case <-ctx.Done():
			t.Errorf("events for %s: missing %v (err %v); got %v", mac, missing, err, kindsOf(events))
			return events
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// events runs `fleetboot events --host MAC -o json`.
func (e *fbEnv) events(mac string) ([]proto.Event, error) {
	return e.eventsWith("--host", mac)
}

// eventsWith runs `fleetboot events -o json` with filter flags.
func (e *fbEnv) eventsWith(filter ...string) ([]proto.Event, error) {
	args := append([]string{"events", "--since", "1h", "-o", "json"}, filter...)
	out, err := e.command(args...).Output()
	if err != nil {
		return nil, fmt.Errorf("fleetboot %s: %w", strings.Join(args, " "), err)
	}
	var events []proto.Event
	if err := json.Unmarshal(out, &events); err != nil {
		return nil, fmt.Errorf("fleetboot events -o json: %w: %s", err, out)
	}
	return events, nil
}

// checkTFTP asserts the edge sent file over TFTP to the address it leased
// to mac. The edge's TFTP log lines and events name the client's IP only,
// so the MAC is joined to them through its DHCP ack.
func (e *fbEnv) checkTFTP(t *testing.T, mac, file string) {
	t.Helper()
	ackRE := regexp.MustCompile(`msg="dhcp: ack" .* ip=(\S+)`)
	var ip string
	for _, l := range e.edgeLines(mac) {
		if m := ackRE.FindStringSubmatch(l); m != nil {
			ip = m[1]
		}
	}
	if ip == "" {
		t.Errorf("edge never acked an address to %s", mac)
		return
	}
	sent := regexp.MustCompile(`msg=sent .*component=tftp ip=` + regexp.QuoteMeta(ip) + ` file=` + regexp.QuoteMeta(file) + ` `)
	if findLine(e.edge.Output(), sent) == "" {
		t.Errorf("edge log has no TFTP transfer of %s to %s (%s)", file, ip, mac)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		events, err := e.eventsWith("--site", site, "--kind", proto.EventTFTPDone)
		if err == nil && slices.ContainsFunc(events, func(ev proto.Event) bool {
			return ev.Detail["ip"] == ip && ev.Detail["file"] == file && ev.Detail["probe"] != "true"
		}) {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("no %s event for %s to %s (%s): err %v, events %+v", proto.EventTFTPDone, file, ip, mac, err, events)
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func kindsOf(events []proto.Event) []string {
	var out []string
	for _, ev := range events {
		out = append(out, ev.Kind)
	}
	return out
}

// scriptImages are the images the edge's script decisions named for mac,
// in order, from its log.
func (e *fbEnv) scriptImages(mac string) []string {
	re := regexp.MustCompile(`msg=script .*decision=(\S+) image=(\S*)`)
	var out []string
	for _, l := range e.edgeLines(mac) {
		if m := re.FindStringSubmatch(l); m != nil {
			out = append(out, m[1]+":"+m[2])
		}
	}
	return out
}

// TestFleetboot runs the full-DHCP scenarios against one deployment; each
// subtest uses its own MACs.
func TestFleetboot(t *testing.T) {
	e := startFleetboot(t, "full")
	full := []string{proto.EventDHCPDiscover, proto.EventDHCPAck, proto.EventScript, proto.EventArtifactEnd}

	t.Run("a-bios-ipxe-rom", func(t *testing.T) {
		mac := RandomMAC()
		e.setHost(t, mac, "--image", "img-a", "--site", site)
		e.boot(t, VMConfig{MAC: mac, Firmware: BIOS}, "img-a")
		e.checkEdgeSaw(t, mac, full...)
	})

	t.Run("c-uefi-ovmf-pxe", func(t *testing.T) {
		mac := RandomMAC()
		e.setHost(t, mac, "--image", "img-b", "--site", site)
		_, m := e.boot(t, VMConfig{MAC: mac, Firmware: UEFI, NoROM: true}, "img-b")
		// The user wrote no initrd=: the edge must have, or the EFI stub
		// would not have found the initramfs that printed the marker.
		if !regexp.MustCompile(`(^| )initrd=\S+`).MatchString(m.Cmdline) {
			t.Errorf("cmdline %q has no initrd= added by the edge", m.Cmdline)
		}
		e.checkEdgeSaw(t, mac, full...)
		e.checkTFTP(t, mac, efiBootFile)
		if !slices.ContainsFunc(e.edgeLines(mac), regexp.MustCompile(`msg="dhcp: ack".*arch=7 .*file=`+regexp.QuoteMeta(efiBootFile)).MatchString) {
			t.Errorf("edge never acked %s with %s:\n%s", mac, efiBootFile, strings.Join(e.edgeLines(mac), "\n"))
		}
	})

	t.Run("b-bios-undionly-chain", func(t *testing.T) {
		// QEMU's BIOS ROM is already iPXE, so no VM sends a classic PXE
		// request; the harness's DHCP and TFTP clients play the firmware:
		// PXE ROM → undionly.kpxe over TFTP → iPXE asks again → HTTP.
		cli := e.net.AddHost(t, "cli", "10.77.0.50", "")
		var macs []string
		checkPXEChain(t, cli, srvAddr, "http://"+edgeHTTP+"/", func(t *testing.T, mac string) {
			e.setHost(t, mac, "--image", "img-a", "--site", site)
			macs = append(macs, mac)
		})
		// The first exchange is the BIOS PXE ROM's: the edge must have
		// answered it with undionly.kpxe, and iPXE's (third) with the script.
		if len(macs) == 4 {
			for i, want := range map[int]*regexp.Regexp{
				0: regexp.MustCompile(`msg="dhcp: ack".*file=undionly\.kpxe`),
				2: regexp.MustCompile(`msg="dhcp: ack".*file=http://` + regexp.QuoteMeta(edgeHTTP) + `/boot\.ipxe`),
			} {
				if !slices.ContainsFunc(e.edgeLines(macs[i]), want.MatchString) {
					t.Errorf("edge log for %s lacks %s:\n%s", macs[i], want, strings.Join(e.edgeLines(macs[i]), "\n"))
				}
			}
		}
		// And a BIOS VM boots its image with iPXE started once (the ROM):
		// its second DHCP request got the script, not another iPXE.
		mac := RandomMAC()
		e.setHost(t, mac, "--image", "img-a", "--site", site)
		vm, _ := e.boot(t, VMConfig{MAC: mac, Firmware: BIOS}, "img-a")
		if n := strings.Count(vm.Console(), "iPXE initialising devices"); n != 1 {
			t.Errorf("iPXE started %d times, want 1: chainload loop", n)
		}
		e.checkEdgeSaw(t, mac, full...)
	})

	t.Run("d-two-vms-two-images", func(t *testing.T) {
		macA, macB := RandomMAC(), RandomMAC()
		e.setHost(t, macA, "--image", "img-a", "--site", site)
		e.setHost(t, macB, "--image", "img-b", "--site", site)
		var wg sync.WaitGroup
		for _, c := range []struct{ mac, image string }{{macA, "img-a"}, {macB, "img-b"}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				vm := e.net.StartVM(t, e.dir, VMConfig{MAC: c.mac, Firmware: BIOS})
				defer vm.Stop()
				m, err := vm.WaitMarker(bootLimit)
				if err != nil {
					t.Error(err)
					return
				}
				if err := vm.CheckMarker(m, "fleetboot.image="+c.image, "fleetboot.mac="+c.mac); err != nil {
					t.Error(err)
				}
				t.Logf("TIMING fleetboot %s %s: power-on to marker %.1fs", t.Name(), c.mac, m.Elapsed.Seconds())
			}()
		}
		wg.Wait()
		for _, c := range []struct{ mac, image string }{{macA, "img-a"}, {macB, "img-b"}} {
			e.checkEdgeSaw(t, c.mac, full...)
			if got, want := e.scriptImages(c.mac), []string{"boot:" + c.image}; !slices.Equal(got, want) {
				t.Errorf("script decisions for %s: %v, want %v", c.mac, got, want)
			}
		}
	})

	t.Run("e-reassign-without-restart", func(t *testing.T) {
		mac := RandomMAC()
		pid := e.edge.PID()
		e.setHost(t, mac, "--image", "img-a", "--site", site)
		e.boot(t, VMConfig{MAC: mac, Firmware: BIOS, Name: "e-first"}, "img-a")
		e.setHost(t, mac, "--image", "img-b")
		e.boot(t, VMConfig{MAC: mac, Firmware: BIOS, Name: "e-second"}, "img-b")
		select {
		case <-e.edge.Exited():
			t.Fatalf("edge exited during reassignment")
		default:
		}
		if e.edge.PID() != pid {
			t.Fatalf("edge restarted")
		}
		if got, want := e.scriptImages(mac), []string{"boot:img-a", "boot:img-b"}; !slices.Equal(got, want) {
			t.Errorf("script decisions for %s: %v, want %v", mac, got, want)
		}
		e.checkEdgeSaw(t, mac, full...)
	})

	t.Run("f-liveos-iso", func(t *testing.T) {
		mac := RandomMAC()
		e.setHost(t, mac, "--image", "img-live", "--site", site)
		_, m := e.boot(t, VMConfig{MAC: mac, Firmware: BIOS}, "img-live", "fleetboot.iso_sha256="+e.assets.ISOSHA256)
		// The marker itself proves the ISO downloaded whole with the right
		// digest; also check it came from this edge.
		want := fmt.Sprintf("root=live:http://%s/artifacts/img-live/", edgeHTTP)
		if !strings.Contains(m.Cmdline, want) {
			t.Errorf("cmdline %q lacks %s…", m.Cmdline, want)
		}
		e.checkEdgeSaw(t, mac, full...)
	})

	t.Run("g-local-disk-exit", func(t *testing.T) {
		mac := RandomMAC()
		e.setHost(t, mac, "--image", "img-a", "--site", site, "--state", "local")
		vm := e.net.StartVM(t, e.dir, VMConfig{MAC: mac, Firmware: BIOS})
		took, err := vm.WaitNoBootableDevice(bootLimit)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING fleetboot %s: power-on to 'No bootable device' %.1fs", t.Name(), took.Seconds())
		vm.Stop()
		if strings.Contains(vm.Console(), MarkerPrefix) {
			t.Errorf("a host set to local booted the image")
		}
		if got := e.scriptImages(mac); len(got) == 0 || strings.HasPrefix(got[0], "boot:") {
			t.Errorf("script decisions for %s: %v, want a local/exit decision", mac, got)
		}
		events := e.checkEdgeSaw(t, mac, proto.EventDHCPAck, proto.EventScript)
		for _, ev := range events {
			if ev.Kind == proto.EventArtifactStart {
				t.Errorf("a host set to local fetched an artifact: %+v", ev)
			}
		}
	})
}

// TestFleetbootProxyDHCP is scenario h: dnsmasq owns the addresses, the
// edge only adds the boot information (proxyDHCP).
func TestFleetbootProxyDHCP(t *testing.T) {
	e := startFleetboot(t, "proxy")
	mac := RandomMAC()
	e.setHost(t, mac, "--image", "img-a", "--site", site)
	e.boot(t, VMConfig{MAC: mac, Firmware: BIOS}, "img-a")
	// iPXE takes the boot file from the proxy OFFER and asks nothing on
	// port 4011: the edge's part of DHCP is a DISCOVER and an OFFER.
	e.checkEdgeSaw(t, mac, proto.EventDHCPDiscover, proto.EventDHCPOffer, proto.EventScript, proto.EventArtifactEnd)
	if !slices.ContainsFunc(e.edgeLines(mac), regexp.MustCompile(`msg="dhcp: proxy answer"`).MatchString) {
		t.Errorf("edge never sent a proxy answer to %s", mac)
	}
}
