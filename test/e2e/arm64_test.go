package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/coordinator/timeline"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// arm64Loader is the GRUB loader the arm64 test adds: Debian's signed
// network GRUB for arm64, served as loaders/<loader>/grubaa64.efi.
const arm64Loader = "grub-arm64"

// arm64Image is the arm64 marker image.
const arm64Image = "img-arm64"

// arm64BootLimit bounds an arm64 boot: the whole VM, firmware included,
// is emulated instruction by instruction (TCG) on a shared machine.
const arm64BootLimit = 5 * time.Minute

// TestFleetbootARM64 is issue 14's arm64 boot: AAVMF's PXE client asks as
// client architecture 11, the edge answers with its host's arm64 loader
// (GRUB) over TFTP, GRUB reads the grub.cfg the edge renders for it from
// its lease, and fetches the arm64 kernel and initrd over TFTP from the
// edge's verified cache, to the marker.
func TestFleetbootARM64(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(AAVMFFirmware); err != nil {
		t.Fatalf("arm64 UEFI firmware (Debian qemu-efi-aarch64) is needed, test/deps.sh installs it: %v", err)
	}
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		t.Fatalf("qemu-system-aarch64 (Debian qemu-system-arm) is needed, test/deps.sh installs it: %v", err)
	}
	e := startFleetboot(t, fbOptions{dhcpMode: "full", images: []string{}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	arm, err := EnsureARM64Assets(ctx, CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	e.cli(t, "loader", "add", arm64Loader, "--kind", "grub", "--grub", arm.GRUB, "--arch", "arm64")
	e.cli(t, "image", "add", arm64Image, "--arch", "arm64", "--kernel", arm.Kernel, "--initrd", arm.Initrd,
		"--cmdline", "console=ttyAMA0 rdinit=/init panic=-1 fleetboot.mac={{mac}} fleetboot.image="+arm64Image)
	mac := RandomMAC()
	e.cli(t, "host", "set", mac, "--image", arm64Image, "--site", site, "--loader", arm64Loader)
	e.waitLoaderApplied(t, mac, arm64Image, proto.LoaderPath(arm64Loader, "grubaa64.efi"))

	vm := e.net.StartVM(t, e.dir, VMConfig{MAC: mac, Firmware: UEFIARM64, NoROM: true, BootIndex: 1, MemoryMB: 1024})
	m, err := vm.WaitMarker(arm64BootLimit)
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, lastLines(StripANSI(vm.Console()), 40))
	}
	vm.Stop()
	if err := vm.CheckMarker(m, "console=ttyAMA0", "fleetboot.image="+arm64Image, "fleetboot.mac="+mac); err != nil {
		t.Error(err)
	}
	t.Logf("TIMING fleetboot arm64-grub-tftp: power-on to marker %.1fs (%s)", m.Elapsed.Seconds(), e.arm64Milestones(vm))

	// The firmware asked as arm64 and got the loader's GRUB.
	grub := proto.LoaderPath(arm64Loader, "grubaa64.efi")
	ackRE := regexp.MustCompile(`msg="dhcp: ack".* arch=11 .*file=` + regexp.QuoteMeta(grub) + `( |$)`)
	if !slices.ContainsFunc(e.edgeLines(mac), ackRE.MatchString) {
		t.Errorf("edge never acked %s (arch 11) with %s:\n%s", mac, grub, strings.Join(e.edgeLines(mac), "\n"))
	}
	// Each file of the chain went whole over TFTP, in order, and the
	// grub.cfg was rendered for this machine's image.
	im := e.image(t, arm64Image)
	kernel, _ := im.Artifact(proto.RoleKernel)
	initrd, _ := im.Artifact(proto.RoleInitrd)
	want := []string{
		grub,
		"grub/grub.cfg",
		"artifacts/" + arm64Image + "/" + kernel.Name,
		"artifacts/" + arm64Image + "/" + initrd.Name,
	}
	var sent []string
	waitfor.Within(t, 30*time.Second, "TFTP transfers to "+mac, func() error {
		events, err := e.eventsWith("--host", mac)
		if err != nil {
			return err
		}
		sent = sent[:0]
		rendered := false
		for _, ev := range events {
			switch {
			case ev.Kind == proto.EventTFTPDone && ev.Detail["probe"] != "true":
				sent = append(sent, ev.Detail["file"])
			case ev.Kind == proto.EventScript && ev.Detail["format"] == "grub" && ev.Detail["via"] == "tftp":
				if ev.Detail["image"] != arm64Image {
					return fmt.Errorf("grub.cfg rendered for image %q, want %s", ev.Detail["image"], arm64Image)
				}
				rendered = true
			}
		}
		if !rendered {
			return fmt.Errorf("no grub.cfg rendered for %s over TFTP", mac)
		}
		return subsequence("TFTP transfers", sent, want)
	})
	t.Logf("TFTP transfers to %s:\n\t%s", mac, strings.Join(sent, "\n\t"))

	// The operator's view: the boot with nothing wrong in it.
	e.checkNoProblems(t, mac)
}

// waitLoaderApplied waits until the edge serves what the host set to mac
// boots: its image's kernel and its loader's file at loaderPath, which the
// edge serves only for images and loaders its site's hosts use. The
// coordinator publishes over KV watches, one per bucket, so a VM started
// at once could race them. HEAD requests from the harness's address,
// leased to no machine, name no MAC: unlike a script request for the MAC
// they leave nothing in its timeline before its boot.
func (e *fbEnv) waitLoaderApplied(t *testing.T, mac, image, loaderPath string) {
	t.Helper()
	kernel, _ := e.image(t, image).Artifact(proto.RoleKernel)
	client := e.srv.HTTPClient(5 * time.Second)
	base := "http://" + edgeHTTP + "/"
	waitfor.Within(t, 30*time.Second, "the edge to apply host "+mac, func() error {
		for _, p := range []string{"artifacts/" + image + "/" + kernel.Name, loaderPath} {
			resp, err := client.Head(base + p)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("HEAD %s: %s", p, resp.Status)
			}
		}
		return nil
	})
}

// timingRules are the timeline's rules that read the gaps between steps
// (a DISCOVER resuming ~30 s after a handover, iPXE's script request late
// after its DHCP): how fast an emulated machine runs on a shared host
// moves those gaps, so the tests log them and do not fail on them.
var timingRules = []string{timeline.RuleSTP, timeline.RuleIPv6Wait}

// checkNoProblems asserts the MAC's timeline diagnoses no problem, timing
// rules aside (logged).
func (e *fbEnv) checkNoProblems(t *testing.T, mac string) {
	t.Helper()
	boots, err := e.timelineOf(mac)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range boots {
		var ds []string
		for _, d := range b.Diagnoses {
			ds = append(ds, fmt.Sprintf("[%s %s] %s", d.Level, d.Rule, d.Text))
		}
		t.Logf("timeline of %s: %v; diagnoses %v", mac, bootSteps(b), ds)
		for _, d := range b.Diagnoses {
			if d.Level == timeline.LevelProblem && !slices.Contains(timingRules, d.Rule) {
				t.Errorf("timeline of %s diagnoses a problem in a boot that worked: %+v", mac, d)
			}
		}
	}
}

// arm64Milestones are the seconds from the VM's power-on to each step of
// the arm64 chain, from the edge's log (TFTP transfers to the address it
// leased to the VM) and the console: logged, never asserted.
func (e *fbEnv) arm64Milestones(vm *VM) string {
	ip := e.leasedIP(vm.Config.MAC)
	var edge []Line
	for _, p := range e.edges {
		edge = append(edge, p.Lines()...)
	}
	sent := func(file string) *regexp.Regexp {
		return regexp.MustCompile(`msg=sent .*ip=` + regexp.QuoteMeta(ip) + ` file=\S*` + file)
	}
	steps := []struct {
		name string
		re   *regexp.Regexp
		from []Line
	}{
		{"DHCP ack", regexp.MustCompile(`msg="dhcp: ack".*mac=` + regexp.QuoteMeta(vm.Config.MAC) + ` .* arch=11 `), edge},
		{"grub sent", sent(`/grubaa64\.efi`), edge},
		{"grub.cfg sent", sent(`grub/grub\.cfg`), edge},
		{"kernel sent", sent(`artifacts/\S+/vmlinuz\S*`), edge},
		{"initrd sent", sent(`artifacts/\S+/initrd\S*`), edge},
		{"EFI stub", EFIStubRE, vm.ConsoleLines()},
		{"marker", markerRE, vm.ConsoleLines()},
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

// subsequence checks that want appears in got in order, other items
// between allowed.
func subsequence(what string, got, want []string) error {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	if i < len(want) {
		return fmt.Errorf("%s lack %q (want in order %v):\n\t%s", what, want[i], want, strings.Join(got, "\n\t"))
	}
	return nil
}
