package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// httpBootLoader is the ipxe loader the UEFI HTTP boot test adds: Debian's
// ipxe.efi, which the edge serves from its cache at
// /loaders/<loader>/ipxe.efi.
const httpBootLoader = "ipxe-http"

// OVMFHTTPBootOnly switches OVMF's PXE boot entries off through fw_cfg:
// OVMF makes PXEv4, PXEv6, HTTPv4 and HTTPv6 entries for the NIC, in that
// order, and bootindex cannot separate them; with PXE on, each PXE entry
// times out (~130 s) before HTTP is tried (../shared/FIRMWARE-FACTS.md).
var OVMFHTTPBootOnly = []string{
	"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
	"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
}

// httpBootLimit bounds the HTTP boot: OVMF's HTTP client, then iPXE's own
// DHCP, emulated (TCG) on a shared machine.
const httpBootLimit = 5 * time.Minute

// TestFleetbootUEFIHTTPBoot is issue 14's UEFI HTTP Boot: OVMF's own HTTP
// boot client (its PXE entries off) asks with vendor class HTTPClient
// (arch 16), gets the http URL of its host's ipxe loader from the edge's
// DHCP, fetches it from the edge's cache, and iPXE boots the image over
// HTTP to the marker: no TFTP at all for that machine.
func TestFleetbootUEFIHTTPBoot(t *testing.T) {
	t.Parallel()
	e := startFleetboot(t, fbOptions{dhcpMode: "full", images: []string{"img-a"}})
	e.cli(t, "loader", "add", httpBootLoader, "--kind", "ipxe", "--efi", filepath.Join(IPXEDir, "ipxe.efi"))
	mac := RandomMAC()
	e.cli(t, "host", "set", mac, "--image", "img-a", "--site", site, "--loader", httpBootLoader)
	e.waitLoaderApplied(t, mac, "img-a", proto.LoaderPath(httpBootLoader, "ipxe.efi"))

	vm := e.net.StartVM(t, e.dir, VMConfig{MAC: mac, Firmware: UEFI, NoROM: true, BootIndex: 1, Args: OVMFHTTPBootOnly})
	m, err := vm.WaitMarker(httpBootLimit)
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, lastLines(StripANSI(vm.Console()), 40))
	}
	vm.Stop()
	if err := vm.CheckMarker(m, "console=ttyS0", "fleetboot.image=img-a", "fleetboot.mac="+mac); err != nil {
		t.Error(err)
	}
	if n := strings.Count(vm.Console(), "iPXE initialising devices"); n != 1 {
		t.Errorf("iPXE started %d times, want 1", n)
	}

	// The firmware's own exchange: arch 16, answered with the loader's URL.
	loaderURL := "http://" + edgeHTTP + "/" + proto.LoaderPath(httpBootLoader, "ipxe.efi")
	ackRE := regexp.MustCompile(`msg="dhcp: ack".* arch=16 .*file=` + regexp.QuoteMeta(loaderURL) + `( |$)`)
	if !slices.ContainsFunc(e.edgeLines(mac), ackRE.MatchString) {
		t.Errorf("edge never acked %s's HTTP boot (arch 16) with %s:\n%s", mac, loaderURL, strings.Join(e.edgeLines(mac), "\n"))
	}
	im := e.image(t, "img-a")
	kernel, _ := im.Artifact(proto.RoleKernel)
	initrd, _ := im.Artifact(proto.RoleInitrd)
	// In the MAC's events, in order: the firmware's DHCP (arch 16) and
	// its download of iPXE (filed under the MAC from its lease), then
	// iPXE's DHCP, the script and the image over HTTP.
	want := []string{
		proto.EventDHCPAck + " arch=16",
		proto.EventArtifactEnd + " ipxe.efi complete",
		proto.EventDHCPAck + " ipxe",
		proto.EventScript + " img-a",
		proto.EventArtifactEnd + " " + kernel.Name + " complete",
		proto.EventArtifactEnd + " " + initrd.Name + " complete",
	}
	var got []string
	var events, tftp []proto.Event
	waitfor.Within(t, 30*time.Second, "the HTTP boot's events of "+mac, func() error {
		all, err := e.events(mac)
		if err != nil {
			return err
		}
		got, events, tftp = got[:0], events[:0], tftp[:0]
		for _, ev := range all {
			if ev.Detail["platform"] == probePlatform {
				continue
			}
			if strings.HasPrefix(ev.Kind, "tftp.") {
				tftp = append(tftp, ev)
			}
			events = append(events, ev)
			got = append(got, httpBootStep(ev))
		}
		return subsequence("events", got, want)
	})
	t.Logf("events of %s:\n\t%s", mac, strings.Join(got, "\n\t"))
	if len(tftp) > 0 {
		t.Errorf("UEFI HTTP boot used TFTP: %+v", tftp)
	}
	// Nor did anything from the VM's address reach the TFTP server.
	if ip := e.leasedIP(mac); ip == "" {
		t.Errorf("edge never acked an address to %s", mac)
	} else if l := findLine(e.edgeOutput(), regexp.MustCompile(`component=tftp .*ip=`+regexp.QuoteMeta(ip)+` `)); l != "" {
		t.Errorf("edge's TFTP server heard from %s (%s): %s", ip, mac, l)
	}
	// The operator's view: the boot with nothing wrong in it.
	e.checkNoProblems(t, mac)
	t.Logf("TIMING fleetboot uefi-http-boot: power-on to marker %.1fs (%s)", m.Elapsed.Seconds(), httpBootMilestones(vm, events, want))
}

// httpBootStep names an event for the HTTP boot's order check: DHCP ACKs by
// who asked (the firmware's arch 16, or iPXE), artifacts by file and
// status, scripts by image.
func httpBootStep(ev proto.Event) string {
	switch ev.Kind {
	case proto.EventDHCPAck:
		if strings.Contains(ev.Detail["decision"], "ipxe: script") {
			return ev.Kind + " ipxe"
		}
		return ev.Kind + " arch=" + ev.Detail["arch"]
	case proto.EventArtifactEnd:
		return ev.Kind + " " + ev.Detail["file"] + " " + ev.Detail["status"]
	case proto.EventScript:
		return ev.Kind + " " + ev.Detail["image"]
	}
	return ev.Kind
}

// leasedIP is the address the edge last acked to mac, from its log.
func (e *fbEnv) leasedIP(mac string) string {
	ackRE := regexp.MustCompile(`msg="dhcp: ack" .* ip=(\S+)`)
	ip := ""
	for _, l := range e.edgeLines(mac) {
		if m := ackRE.FindStringSubmatch(l); m != nil {
			ip = m[1]
		}
	}
	return ip
}

// httpBootMilestones are the seconds from the VM's power-on to the first
// event of each step in steps (httpBootStep names): logged, never
// asserted. Events carry the edge's clock, the
// same host's as the harness's.
func httpBootMilestones(vm *VM, events []proto.Event, steps []string) string {
	var parts []string
	for _, step := range steps {
		for _, ev := range events {
			if httpBootStep(ev) == step {
				parts = append(parts, fmt.Sprintf("%s %.1fs", step, ev.Time.Sub(vm.Started).Seconds()))
				break
			}
		}
	}
	return strings.Join(parts, ", ")
}
