package e2e

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/coordinator/timeline"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// sbLoader is the Secure Boot loader the test adds: Debian's shim and
// signed network GRUB, stored as bootx64.efi and grubx64.efi.
const sbLoader = "shim-debian"

// settleWait bounds the wait for a diagnosis that needs the boot over: the
// timeline holds back rules on a boot quiet for less than
// timeline.DefaultSettle, so a refused boot is named only after it.
const settleWait = timeline.DefaultSettle + 90*time.Second

// TestFleetbootSecureBoot is issue 14's Secure Boot chain through
// fleetboot: OVMF with Secure Boot enforced gets shim from the edge's DHCP
// answer (loaders/<loader>/bootx64.efi), shim fetches grubx64.efi from its
// own directory, GRUB reads grub/grub.cfg rendered for it from its lease,
// and kernel and initrd come over TFTP from the edge's verified cache. The
// LiveOS boots the same way, then its initramfs fetches the ISO over HTTP.
func TestFleetbootSecureBoot(t *testing.T) {
	t.Parallel()
	for _, f := range []string{OVMFCodeSecBoot, OVMFVarsMS} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("Secure Boot OVMF (Debian ovmf) is needed, test/deps.sh installs it: %v", err)
		}
	}
	e := startFleetboot(t, fbOptions{dhcpMode: "full", images: []string{"img-a", "img-b", "img-live"}})
	_, sb := ensureSecureBootAssets(t)
	e.cli(t, "loader", "add", sbLoader, "--kind", "shim-grub", "--shim", sb.Shim, "--grub", sb.GRUB)
	e.cli(t, "image", "add", "img-unsigned", "--kernel", sb.UnsignedKernel, "--initrd", e.assets.Initrd,
		"--cmdline", "console=ttyS0 panic=-1 fleetboot.mac={{mac}} fleetboot.image=img-unsigned")

	// The refused boot first: its diagnosis needs the boot quiet for
	// timeline.DefaultSettle, which the other cases' boots fill.
	refusedMAC := RandomMAC()
	var booted []string // MACs that reached the marker
	t.Run("unsigned-refused", func(t *testing.T) {
		e.setHost(t, refusedMAC, "--image", "img-unsigned", "--site", site, "--loader", sbLoader)
		vm := e.net.StartVM(t, e.dir, VMConfig{MAC: refusedMAC, Firmware: UEFISecureBoot, NoROM: true})
		line, err := vm.WaitKernelRefused(bootLimit)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING fleetboot secureboot unsigned kernel: power-on to refusal %.1fs (%q; %s)", time.Since(vm.Started).Seconds(), line, e.sbMilestones(vm))
		if m, err := vm.WaitMarker(refusalWait); err == nil {
			t.Fatalf("the unsigned kernel booted under Secure Boot: %s", m.Line)
		}
		if console := vm.Console(); EFIStubRE.MatchString(console) {
			t.Errorf("the unsigned kernel's EFI stub ran:\n%s", lastLines(StripANSI(console), 40))
		}
		vm.Stop()
	})

	t.Run("signed", func(t *testing.T) {
		mac := RandomMAC()
		e.setHost(t, mac, "--image", "img-a", "--site", site, "--loader", sbLoader)
		vm, _ := e.boot(t, VMConfig{MAC: mac, Firmware: UEFISecureBoot, NoROM: true}, "img-a")
		if err := vm.CheckSecureBoot(); err != nil {
			t.Error(err)
		}
		t.Logf("TIMING fleetboot secureboot shim-grub-tftp: %s", e.sbMilestones(vm))
		e.checkSecureBootTFTP(t, mac, "img-a")
		e.checkSecureBootTimeline(t, mac, "", false)
		booted = append(booted, mac)
	})

	// The real LiveOS (liveos.go) under Secure Boot: shim → GRUB → the
	// signed kernel and dracut's initramfs over TFTP, then dracut fetches
	// the ISO over HTTP from the edge's cache and switches into its root.
	liveMAC := RandomMAC()
	t.Run("liveos", func(t *testing.T) {
		e.setHost(t, liveMAC, "--image", "img-live", "--site", site, "--loader", sbLoader)
		vm := e.bootLive(t, VMConfig{MAC: liveMAC, Firmware: UEFISecureBoot, NoROM: true}, "img-live")
		if err := vm.CheckSecureBoot(); err != nil {
			t.Error(err)
		}
		t.Logf("TIMING fleetboot secureboot liveos shim-grub-tftp: %s", e.sbMilestones(vm))
		e.checkSecureBootTFTP(t, liveMAC, "img-live")
		e.checkLiveISO(t, liveMAC, "img-live")
		e.checkLiveTimeline(t, liveMAC, "img-live", nil, false)
	})

	t.Run("two-vms-two-images", func(t *testing.T) {
		cases := []struct{ mac, image string }{{RandomMAC(), "img-a"}, {RandomMAC(), "img-b"}}
		for _, c := range cases {
			e.setHost(t, c.mac, "--image", c.image, "--site", site, "--loader", sbLoader)
		}
		var wg sync.WaitGroup
		for _, c := range cases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				vm := e.net.StartVM(t, e.dir, VMConfig{MAC: c.mac, Firmware: UEFISecureBoot, NoROM: true})
				defer vm.Stop()
				m, err := vm.WaitMarker(bootLimit)
				if err != nil {
					t.Error(err)
					return
				}
				if err := vm.CheckMarker(m, "fleetboot.image="+c.image, "fleetboot.mac="+c.mac); err != nil {
					t.Error(err)
				}
				if err := vm.CheckSecureBoot(); err != nil {
					t.Error(err)
				}
				t.Logf("TIMING fleetboot %s %s: power-on to marker %.1fs (%s)", t.Name(), c.mac, m.Elapsed.Seconds(), e.sbMilestones(vm))
			}()
		}
		wg.Wait()
		for _, c := range cases {
			e.checkSecureBootTFTP(t, c.mac, c.image)
			booted = append(booted, c.mac)
		}
	})

	// Once each boot is over, every rule has had its say: the refused one
	// is named, the ones that worked have no problem.
	t.Run("timelines-settled", func(t *testing.T) {
		e.checkSecureBootTimeline(t, refusedMAC, timeline.RuleKernelRefused, true)
		for _, mac := range booted {
			e.checkSecureBootTimeline(t, mac, "", true)
		}
		e.checkLiveTimeline(t, liveMAC, "img-live", nil, true)
	})
}

// sbFiles are the files the Secure Boot chain fetches over TFTP for image,
// in order: shim, GRUB, the config rendered for the client, kernel, initrd.
func (e *fbEnv) sbFiles(t *testing.T, image string) []string {
	t.Helper()
	im := e.image(t, image)
	kernel, _ := im.Artifact(proto.RoleKernel)
	initrd, _ := im.Artifact(proto.RoleInitrd)
	return []string{
		"loaders/" + sbLoader + "/bootx64.efi",
		"loaders/" + sbLoader + "/grubx64.efi",
		"grub/grub.cfg",
		"artifacts/" + image + "/" + kernel.Name,
		"artifacts/" + image + "/" + initrd.Name,
	}
}

// checkSecureBootTFTP asserts the MAC's events have each file of the chain
// sent whole over TFTP (not a size probe), in the chain's order, and the
// edge's DHCP answer named shim.
func (e *fbEnv) checkSecureBootTFTP(t *testing.T, mac, image string) {
	t.Helper()
	want := e.sbFiles(t, image)
	var got []string
	waitfor.Within(t, 30*time.Second, "TFTP transfers to "+mac, func() error {
		events, err := e.eventsWith("--host", mac, "--kind", "tftp.")
		if err != nil {
			return err
		}
		got = got[:0]
		for _, ev := range events {
			if ev.Kind == proto.EventTFTPDone && ev.Detail["probe"] != "true" {
				got = append(got, ev.Detail["file"])
			}
		}
		return inOrder(got, want)
	})
	t.Logf("TFTP transfers to %s:\n\t%s", mac, strings.Join(got, "\n\t"))
	if !slices.ContainsFunc(e.edgeLines(mac), func(l string) bool {
		return strings.Contains(l, `msg="dhcp: ack"`) && strings.Contains(l, "file="+want[0])
	}) {
		t.Errorf("edge never acked %s with %s:\n%s", mac, want[0], strings.Join(e.edgeLines(mac), "\n"))
	}
}

// checkSecureBootTimeline asserts the MAC's last network boot in `host
// timeline` has exactly the problem rule (none when rule is ""). With
// settled it first waits for the boot to be over (quiet for
// timeline.DefaultSettle): rules about a step that never ended hold back
// until then, so only a settled boot shows every problem.
func (e *fbEnv) checkSecureBootTimeline(t *testing.T, mac, rule string, settled bool) {
	t.Helper()
	limit := 30 * time.Second
	if settled {
		limit = settleWait
	}
	var want []string
	if rule != "" {
		want = []string{rule}
	}
	var last *timeline.Boot
	waitfor.Within(t, limit, "timeline of "+mac, func() error {
		boots, err := e.timelineOf(mac)
		if err != nil {
			return err
		}
		last = nil
		for i := range boots {
			if slices.ContainsFunc(bootSteps(boots[i]), func(s string) bool { return strings.HasPrefix(s, proto.EventDHCPDiscover) }) {
				last = &boots[i]
			}
		}
		if last == nil {
			return fmt.Errorf("no network boot in %d boots", len(boots))
		}
		if settled && last.InProgress {
			return fmt.Errorf("boot still in progress; steps %v", bootSteps(*last))
		}
		var problems []string
		for _, d := range last.Diagnoses {
			if d.Level == timeline.LevelProblem {
				problems = append(problems, d.Rule)
			}
		}
		if !slices.Equal(problems, want) {
			return fmt.Errorf("problems %v, want %v; steps %v; diagnoses %s", problems, want, bootSteps(*last), describe(last.Diagnoses))
		}
		return nil
	})
	t.Logf("timeline of %s: %v; diagnoses %s", mac, bootSteps(*last), describe(last.Diagnoses))
}

func describe(ds []timeline.Diagnosis) string {
	var out []string
	for _, d := range ds {
		out = append(out, fmt.Sprintf("[%s %s] %s", d.Level, d.Rule, d.Text))
	}
	return "[" + strings.Join(out, "; ") + "]"
}

// sbMilestones are the seconds from the VM's power-on to each step of the
// Secure Boot chain, from the edge's TFTP log (transfers to the address it
// leased to the VM) and the console, as milestones gives the reference's:
// logged, never asserted.
func (e *fbEnv) sbMilestones(vm *VM) string {
	ackRE := regexp.MustCompile(`msg="dhcp: ack" .* ip=(\S+)`)
	ip := ""
	for _, l := range e.edgeLines(vm.Config.MAC) {
		if m := ackRE.FindStringSubmatch(l); m != nil {
			ip = m[1]
		}
	}
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
		{"shim sent", sent(`/bootx64\.efi`), edge},
		{"grub sent", sent(`/grubx64\.efi`), edge},
		{"grub.cfg sent", sent(`grub/grub\.cfg`), edge},
		{"kernel sent", sent(`artifacts/\S+/vmlinuz\S*`), edge},
		{"initrd sent", sent(`artifacts/\S+/initrd\S*`), edge},
		{"refused", BadShimSignatureRE, vm.ConsoleLines()},
		{"EFI stub", EFIStubRE, vm.ConsoleLines()},
		{"Secure boot enabled", kernelSecureBootRE, vm.ConsoleLines()},
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
