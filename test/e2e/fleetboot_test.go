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

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/coordinator/timeline"
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
	t         *testing.T
	bin       string
	dir       string
	net       *Network
	srv       *Host
	minio     *MinIO
	coord     *Proc
	edge      *Proc   // the edge running now
	edges     []*Proc // every edge process started, in order (restarts)
	coordArgs []string
	edgeArgs  []string
	dhcpPort  int
	assets    Assets
	live      LiveOS // built when the deployment has img-live
}

// fbOptions shape one deployment.
type fbOptions struct {
	dhcpMode string   // the site's DHCP mode: full or proxy
	images   []string // images to register (see addImage); nil: all of them
	edgeArgs []string // extra edge flags
}

// startFleetboot brings up MinIO, the coordinator and an edge on a fresh
// network. In proxy mode a plain dnsmasq on its own host hands out the
// addresses.
//
// No router is on the network, as on an IPv4-only provisioning VLAN: the
// edge's own IPv6 router advertisements (edge/ra) are what end each iPXE
// instance's IPv6 autoconfiguration wait, so its host has IPv6.
func startFleetboot(t *testing.T, opts fbOptions) *fbEnv {
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
	images := opts.images
	if images == nil {
		images = []string{"img-a", "img-b", "img-live"}
	}
	if slices.Contains(images, "img-live") {
		e.live = ensureLiveOS(t, assets)
	}
	e.net = NewNetwork(t, "10.77.0.0/24")
	e.srv = e.net.AddHost(t, "srv", srvAddr, "fd77::1/64")
	e.minio = StartMinIO(t, e.srv, e.dir)

	e.coordArgs = []string{"coordinator", "--data", filepath.Join(e.dir, "coordinator"),
		"--nats-listen", "127.0.0.1:4222", "--store", e.minio.StoreURL("fleetboot")}
	e.startCoordinator(t, "coordinator")

	siteArgs := []string{"site", "add", site, "--subnet", "10.77.0.0/24", "--dhcp", opts.dhcpMode}
	e.dhcpPort = 67
	if opts.dhcpMode == "proxy" {
		dh := e.net.AddHost(t, "dhcp", "10.77.0.2", "")
		StartDnsmasq(t, dh, e.dir, DnsmasqConfig{Iface: dh.Iface, RangeStart: "10.77.0.100", RangeEnd: "10.77.0.200"})
		e.dhcpPort = 4011 // proxyDHCP; port 67 belongs to the site's server
	} else {
		siteArgs = append(siteArgs, "--range", "10.77.0.100-10.77.0.200", "--router", srvAddr)
	}
	e.cli(t, siteArgs...)
	for _, name := range images {
		e.addImage(t, name)
	}

	stateDir := filepath.Join(e.dir, "edge-state")
	cacheDir := filepath.Join(e.dir, "edge-cache")
	e.edgeArgs = edgeArgs(stateDir, cacheDir, opts.dhcpMode)
	if opts.dhcpMode == "proxy" {
		// --ipv6-ra auto advertises only while the edge hands out
		// addresses: in proxy mode the site's DHCP server, and maybe its
		// router, own the segment. This segment's server (dnsmasq without
		// enable-ra) sends no advertisements, so the operator turns the
		// edge's on, or every iPXE start waits for IPv6.
		e.edgeArgs = append(e.edgeArgs, "--ipv6-ra", "on")
	}
	e.edgeArgs = append(e.edgeArgs, opts.edgeArgs...)
	// The edge answers DHCP only once it has the site from the coordinator.
	e.startEdge(t, "edge", regexp.MustCompile(`state in sync.*bucket=sites`))
	return e
}

// startCoordinator starts (or restarts, on the same data directory) the
// coordinator and waits until it answers the CLI. The process belongs to
// the deployment (e.t), also when a subtest restarts it: it runs until the
// deployment's test ends.
func (e *fbEnv) startCoordinator(t *testing.T, name string) {
	t.Helper()
	e.coord = StartProc(e.t, e.dir, name, e.command(e.coordArgs...))
	e.waitCLI(t, 60*time.Second, "site", "ls")
}

// startEdge starts (or restarts, on the same state and cache directories)
// the edge, waits for its HTTP and DHCP sockets and then for a log line
// matching ready: the state it serves from.
func (e *fbEnv) startEdge(t *testing.T, name string, ready *regexp.Regexp) {
	t.Helper()
	p := StartProc(t, e.dir, name, e.command(e.edgeArgs...))
	e.edge = p
	e.edges = append(e.edges, p)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := WaitListening(ctx, e.srv.NS, "tcp", 8080); err != nil {
		t.Fatalf("edge http: %v\n%s", err, p.Output())
	}
	if err := WaitListening(ctx, e.srv.NS, "udp", e.dhcpPort); err != nil {
		t.Fatalf("edge dhcp: %v\n%s", err, p.Output())
	}
	if _, err := p.WaitFor(ctx, ready); err != nil {
		t.Fatalf("edge %s not ready (%s): %v", name, ready, err)
	}
}

// edgeArgs is the edge's command line, as `fleetboot edge --help` gives it.
// UEFI clients get the default boot file, ipxe.efi, and the edge pings an
// address before offering it (the default), as in a real deployment.
func edgeArgs(stateDir, cacheDir, dhcpMode string) []string {
	return []string{"edge", "--coordinator", natsURL, "--name", edgeName, "--site", site,
		"--interface", "eth0", "--state-dir", stateDir, "--cache-dir", cacheDir,
		"--http-listen", edgeHTTP, "--tftp-listen", srvAddr + ":69", "--dhcp", dhcpMode}
}

// efiBootFile is what the edge gives UEFI x64 PXE clients by default.
const efiBootFile = "ipxe.efi"

func (e *fbEnv) command(args ...string) *exec.Cmd {
	cmd := e.srv.Command(context.Background(), e.bin, args...)
	cmd.Env = append(append(os.Environ(), e.minio.Env()...), "FLEETBOOT_NATS="+natsURL)
	return cmd
}

// cli runs a fleetboot client command in the server namespace and fails the
// test if it exits non-zero.
func (e *fbEnv) cli(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.command(args...).CombinedOutput()
	if err != nil {
		t.Fatalf("fleetboot %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitCLI polls a read-only command until the coordinator answers it.
func (e *fbEnv) waitCLI(t *testing.T, limit time.Duration, args ...string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		out, err := e.command(args...).CombinedOutput()
		if err == nil {
			return
		}
		select {
		case <-e.coord.Exited():
			t.Fatalf("coordinator exited:\n%s", e.coord.Output())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("coordinator not answering `fleetboot %s` after %s: %v\n%s", strings.Join(args, " "), limit, err, out)
		}
	}
}

// addImage registers one of the test images: img-a and img-b boot the
// marker initramfs, img-live is the real LiveOS (liveos.go): dracut's
// initramfs, which fetches the ISO from root=live:URL (the edge puts it
// first on the command line) and switches into its squashfs, whose init
// prints the marker.
func (e *fbEnv) addImage(t *testing.T, name string) {
	t.Helper()
	tail := " fleetboot.mac={{mac}} fleetboot.image=" + name
	args := []string{"image", "add", name, "--kernel", e.assets.Kernel, "--initrd", e.assets.Initrd,
		"--cmdline", "console=ttyS0 panic=-1" + tail}
	if name == "img-live" {
		args = []string{"image", "add", name, "--kernel", e.live.Kernel, "--initrd", e.live.Initrd, "--iso", e.live.ISO,
			"--cmdline", LiveCmdline + tail}
	}
	e.cli(t, args...)
}

// image is the coordinator's record of an image.
func (e *fbEnv) image(t *testing.T, name string) proto.Image {
	t.Helper()
	var im proto.Image
	if err := json.Unmarshal([]byte(e.cli(t, "image", "show", name, "-o", "json")), &im); err != nil {
		t.Fatalf("image show %s -o json: %v", name, err)
	}
	return im
}

// probePlatform marks the test's own script requests, which the checks of
// what the edge saw leave out.
const probePlatform = "e2eprobe"

// setHost assigns the MAC and waits until the edge has applied the change:
// the coordinator publishes over a KV watch, so a VM started at once could
// race it.
func (e *fbEnv) setHost(t *testing.T, mac string, args ...string) {
	t.Helper()
	e.cli(t, append([]string{"host", "set", mac}, args...)...)
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
	t.Logf("TIMING fleetboot %s %s: power-on to marker %.1fs", t.Name(), vm.Config.Name, m.Elapsed.Seconds())
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

// edgeOutput is what every edge process of the deployment logged, in order.
func (e *fbEnv) edgeOutput() string {
	var b strings.Builder
	for _, p := range e.edges {
		b.WriteString(p.Output())
	}
	return b.String()
}

// edgeLines are the edge's log lines that name mac.
func (e *fbEnv) edgeLines(mac string) []string {
	var out []string
	for _, l := range strings.Split(e.edgeOutput(), "\n") {
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

// checkTFTP asserts the edge sent file whole over TFTP to mac: its log has
// the transfer to the address it leased to the MAC, and the MAC's events
// (the edge names the client from its DHCP leases) have the start and the
// completed transfer. UEFI's size probe (a tsize request it aborts) is a
// tftp.done with probe=true and does not count as the transfer.
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
	if findLine(e.edgeOutput(), sent) == "" {
		t.Errorf("edge log has no TFTP transfer of %s to %s (%s)", file, ip, mac)
	}
	info, err := os.Stat(filepath.Join(IPXEDir, file))
	if err != nil {
		t.Fatal(err)
	}
	size := fmt.Sprint(info.Size())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		events, err := e.eventsWith("--host", mac, "--kind", "tftp.")
		started := slices.ContainsFunc(events, func(ev proto.Event) bool {
			return ev.Kind == proto.EventTFTPStart && ev.Detail["file"] == file
		})
		done := slices.ContainsFunc(events, func(ev proto.Event) bool {
			return ev.Kind == proto.EventTFTPDone && ev.Detail["file"] == file && ev.Detail["probe"] != "true" && ev.Detail["bytes"] == size
		})
		if err == nil && started && done {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("events --host %s: want %s and %s of %s (%s bytes); err %v, got %+v",
				mac, proto.EventTFTPStart, proto.EventTFTPDone, file, size, err, events)
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// checkTimeline asserts `fleetboot host timeline MAC -o json` tells the
// MAC's network boot step by step in the order the chain ran (DHCP, script,
// kernel, initrd) with no problem diagnosed, and no IPv6 wait either: the
// edge advertises on the segment, so iPXE asked for its script at once. The
// harness's own script requests are left out, and a step repeated at once
// (a retransmitted DISCOVER) counts once: firmware may resend before the
// answer comes.
func (e *fbEnv) checkTimeline(t *testing.T, mac, image string) {
	t.Helper()
	im := e.image(t, image)
	kernel, _ := im.Artifact(proto.RoleKernel)
	initrd, _ := im.Artifact(proto.RoleInitrd)
	want := []string{
		proto.EventDHCPDiscover, proto.EventDHCPOffer, proto.EventDHCPRequest, proto.EventDHCPAck,
		proto.EventScript + " " + image,
		proto.EventArtifactStart + " " + kernel.Name, proto.EventArtifactEnd + " " + kernel.Name,
		proto.EventArtifactStart + " " + initrd.Name, proto.EventArtifactEnd + " " + initrd.Name,
	}
	// The events reach the coordinator asynchronously: poll until the last
	// step is there.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		boots, err := e.timelineOf(mac)
		var got, all []string
		var problems, waits []timeline.Diagnosis
		for _, b := range boots {
			all = append(all, fmt.Sprintf("boot at %s: %v", b.Start.Format("15:04:05.000"), bootSteps(b)))
			steps := bootSteps(b)
			if !slices.ContainsFunc(steps, func(s string) bool { return strings.HasPrefix(s, proto.EventDHCPDiscover) }) {
				continue
			}
			got = steps
			problems = slices.DeleteFunc(slices.Clone(b.Diagnoses), func(d timeline.Diagnosis) bool { return d.Level != timeline.LevelProblem })
			waits = ipv6Waits([]timeline.Boot{b})
		}
		diff := cmp.Diff(want, got)
		if err == nil && diff == "" {
			if len(problems) > 0 {
				t.Errorf("timeline of %s diagnoses problems in a boot that worked: %+v", mac, problems)
			}
			if len(waits) > 0 {
				t.Errorf("timeline of %s: iPXE waited for IPv6 although the edge advertises on the segment: %+v", mac, waits)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("timeline of %s (err %v), boot steps (-want +got):\n%s\nall boots:\n%s", mac, err, diff, strings.Join(all, "\n"))
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// timelineOf runs `fleetboot host timeline MAC -o json`: the MAC's boots of
// the last hour, each with its diagnoses.
func (e *fbEnv) timelineOf(mac string) ([]timeline.Boot, error) {
	var tl struct {
		MAC   string          `json:"mac"`
		Boots []timeline.Boot `json:"boots"`
	}
	out, err := e.command("host", "timeline", mac, "--since", "1h", "--boots", "0", "-o", "json").Output()
	if err != nil {
		return nil, fmt.Errorf("fleetboot host timeline %s: %w", mac, err)
	}
	if err := json.Unmarshal(out, &tl); err != nil {
		return nil, fmt.Errorf("fleetboot host timeline %s -o json: %w: %s", mac, err, out)
	}
	if tl.MAC != mac {
		return nil, fmt.Errorf("fleetboot host timeline %s: the timeline of %q", mac, tl.MAC)
	}
	return tl.Boots, nil
}

// ipv6Waits are the boots' diagnoses that iPXE waited for IPv6 router
// advertisements.
func ipv6Waits(boots []timeline.Boot) []timeline.Diagnosis {
	var out []timeline.Diagnosis
	for _, b := range boots {
		for _, d := range b.Diagnoses {
			if d.Rule == timeline.RuleIPv6Wait {
				out = append(out, d)
			}
		}
	}
	return out
}

// checkNoIPv6Wait asserts no boot of mac in its timeline waited for IPv6.
// Call it once the MAC's script event is stored (checkEdgeSaw): the wait
// shows between iPXE's DHCP reply and its script request.
func (e *fbEnv) checkNoIPv6Wait(t *testing.T, mac string) {
	t.Helper()
	boots, err := e.timelineOf(mac)
	if err != nil {
		t.Error(err)
		return
	}
	if waits := ipv6Waits(boots); len(waits) > 0 {
		t.Errorf("timeline of %s: iPXE waited for IPv6 although the edge advertises on the segment: %+v", mac, waits)
	}
}

// bootSteps names a boot's steps (kind, and the image or file where there
// is one), without the harness's probes, with immediate repeats folded, and
// without a DHCP message's retransmissions (same kind and xid): firmware
// retransmits a DISCOVER whose answer is slow, and a copy may be recorded
// late (its conflict probe ran while the first copy's exchange finished).
func bootSteps(b timeline.Boot) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range b.Steps {
		ev := s.Event
		if ev.Detail["platform"] == probePlatform {
			continue
		}
		if xid := ev.Detail["xid"]; xid != "" {
			if seen[ev.Kind+" "+xid] {
				continue
			}
			seen[ev.Kind+" "+xid] = true
		}
		step := ev.Kind
		switch ev.Kind {
		case proto.EventScript:
			step += " " + ev.Detail["image"]
		case proto.EventArtifactStart, proto.EventArtifactEnd, proto.EventTFTPStart, proto.EventTFTPDone:
			step += " " + ev.Detail["file"]
		}
		if len(out) > 0 && out[len(out)-1] == step {
			continue
		}
		out = append(out, step)
	}
	return out
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
	t.Parallel()
	e := startFleetboot(t, fbOptions{dhcpMode: "full"})
	full := []string{proto.EventDHCPDiscover, proto.EventDHCPAck, proto.EventScript, proto.EventArtifactEnd}

	t.Run("a-bios-ipxe-rom", func(t *testing.T) {
		mac := RandomMAC()
		e.setHost(t, mac, "--image", "img-a", "--site", site)
		e.boot(t, VMConfig{MAC: mac, Firmware: BIOS}, "img-a")
		e.checkEdgeSaw(t, mac, full...)
		e.checkTimeline(t, mac, "img-a")
		e.checkMetrics(t, e.image(t, "img-a").Artifacts[0].Size)
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
		e.checkEdgeSaw(t, mac, append(full, proto.EventTFTPStart, proto.EventTFTPDone)...)
		e.checkTFTP(t, mac, efiBootFile)
		// OVMF asks for "blksize 1468 windowsize 4" (RFC 7440): the edge's
		// transfer used the window, not one block per ACK.
		if !slices.ContainsFunc(e.edgeLines(mac), regexp.MustCompile(`msg=sent .*file=`+regexp.QuoteMeta(efiBootFile)+` .*blksize=1468 windowsize=4`).MatchString) {
			t.Errorf("edge never sent %s to %s with windowsize 4:\n%s", efiBootFile, mac, strings.Join(e.edgeLines(mac), "\n"))
		}
		e.checkNoIPv6Wait(t, mac)
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
		// A real LiveOS (liveos.go): iPXE boots dracut's initramfs, which
		// downloads the ISO from the edge's cache, mounts its squashfs and
		// switches root; the live root's own init prints the marker.
		mac := RandomMAC()
		e.setHost(t, mac, "--image", "img-live", "--site", site)
		e.bootLive(t, VMConfig{MAC: mac, Firmware: BIOS}, "img-live")
		e.checkEdgeSaw(t, mac, full...)
		e.checkLiveISO(t, mac, "img-live")
		im := e.image(t, "img-live")
		kernel, _ := im.Artifact(proto.RoleKernel)
		initrd, _ := im.Artifact(proto.RoleInitrd)
		e.checkLiveTimeline(t, mac, "img-live", []string{
			proto.EventDHCPDiscover, proto.EventDHCPOffer, proto.EventDHCPRequest, proto.EventDHCPAck,
			proto.EventScript + " img-live",
			proto.EventArtifactStart + " " + kernel.Name, proto.EventArtifactEnd + " " + kernel.Name,
			proto.EventArtifactStart + " " + initrd.Name, proto.EventArtifactEnd + " " + initrd.Name,
		}, false)
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
	t.Parallel()
	e := startFleetboot(t, fbOptions{dhcpMode: "proxy", images: []string{"img-a"}})
	mac := RandomMAC()
	e.setHost(t, mac, "--image", "img-a", "--site", site)
	e.boot(t, VMConfig{MAC: mac, Firmware: BIOS}, "img-a")
	// iPXE takes the boot file from the proxy OFFER and asks nothing on
	// port 4011: the edge's part of DHCP is a DISCOVER and an OFFER.
	e.checkEdgeSaw(t, mac, proto.EventDHCPDiscover, proto.EventDHCPOffer, proto.EventScript, proto.EventArtifactEnd)
	if !slices.ContainsFunc(e.edgeLines(mac), regexp.MustCompile(`msg="dhcp: proxy answer"`).MatchString) {
		t.Errorf("edge never sent a proxy answer to %s", mac)
	}
	// --ipv6-ra on: the edge advertised in proxy mode too, and iPXE did not
	// wait for IPv6 (the segment has no other advertiser).
	if findLine(e.edgeOutput(), regexp.MustCompile(`msg="IPv6 router advertisements: `)) == "" {
		t.Errorf("edge in proxy mode with --ipv6-ra on does not advertise")
	}
	e.checkNoIPv6Wait(t, mac)
}
