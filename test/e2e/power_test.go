package e2e

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// TestPowerThroughBMC: a VM behind a real IPMI BMC (OpenIPMI's ipmi_sim,
// whose chassis control starts and kills the VM's QEMU) is powered on
// with `fleetboot host power MAC on --pxe`: the coordinator relays to the
// site's edge, which opens the sealed password and runs ipmitool; the VM
// network-boots to the marker. A `cycle --pxe` of the running VM kills and
// restarts it, and it boots to the marker again. Every action is an event
// of the host, and the BMC password is nowhere in what fleetboot wrote.
func TestPowerThroughBMC(t *testing.T) {
	e := startFleetboot(t, fbOptions{dhcpMode: "full", images: []string{"img-a"}})
	mac := RandomMAC()
	e.setHost(t, mac, "--image", "img-a")
	vm := e.startBMCVM(t, "bmc-vm", mac)
	e.enroll(t, vm)

	if show := e.cli(t, "host", "show", mac); !strings.Contains(show, fmt.Sprintf("bmc: %s user admin, password sealed to edge(s) %s", vm.addr, edgeName)) {
		t.Errorf("host show lacks the BMC:\n%s", show)
	}
	marker := regexp.MustCompile("FLEETBOOT-MARKER mac=" + mac)

	if rep := e.power(t, vm, "status"); rep.Power != "off" || rep.Edge != edgeName {
		t.Fatalf("before: %+v, want off, answered by edge %s", rep, edgeName)
	}
	start := time.Now()
	if rep := e.power(t, vm, "on", "--pxe"); rep.Power != "on" || !rep.PXE {
		t.Fatalf("power on --pxe: %+v", rep)
	}
	vm.waitCount(t, marker, 1)
	onToMarker := time.Since(start)
	t.Logf("TIMING power on --pxe to marker %.1fs", onToMarker.Seconds())
	// The test initramfs powers the VM off after its marker: the BMC sees it.
	e.waitPower(t, vm, "off")

	// On again, and cycled while it boots: QEMU is killed and started anew.
	seen := len(vm.Console(t))
	e.power(t, vm, "on", "--pxe")
	waitfor.Within(t, bootLimit, "the second boot under way (iPXE)", func() error {
		if !strings.Contains(vm.Console(t)[seen:], "iPXE") {
			return fmt.Errorf("no new iPXE on the console")
		}
		return nil
	})
	start = time.Now()
	if rep := e.power(t, vm, "cycle", "--pxe"); rep.Power != "on" {
		t.Fatalf("power cycle: %+v", rep)
	}
	vm.waitCount(t, marker, 2)
	cycleToMarker := time.Since(start)
	// The first power-on is the reference: same VM, same chain, same run.
	t.Logf("TIMING power cycle --pxe to marker %.1fs (%.2f× power on --pxe to marker)", cycleToMarker.Seconds(), cycleToMarker.Seconds()/onToMarker.Seconds())
	var calls []string
	for _, c := range vm.actions(t, start) {
		calls = append(calls, c.Call)
	}
	if !regexp.MustCompile(`set boot pxe\n(.*\n)*set power 0\n(.*\n)*set power 1\n(.*\n)*boot order=n`).MatchString(strings.Join(calls, "\n")) {
		t.Errorf("the cycle did not kill and restart the VM from the network; chassis calls:\n%s", strings.Join(calls, "\n"))
	}
	if n := vm.count(t, marker); n != 2 {
		t.Errorf("%d markers, want 2 (the cycled boot never reached its marker)", n)
	}
	if n := strings.Count(vm.Console(t), "SeaBIOS"); n != 3 {
		t.Errorf("SeaBIOS started %d times, want 3 (on, on, cycle)", n)
	}

	// Every action is an event of the host.
	evs, err := e.events(mac)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ev := range evs {
		if ev.Kind == proto.EventPower {
			if ev.Detail["result"] != "ok" {
				t.Errorf("power event %+v", ev.Detail)
			}
			if ev.Detail["action"] != proto.PowerStatus {
				actions = append(actions, ev.Detail["action"]+"/pxe="+ev.Detail["pxe"])
			}
		}
	}
	if want := "on/pxe=true on/pxe=true cycle/pxe=true"; strings.Join(actions, " ") != want {
		t.Errorf("power events %q, want %q", strings.Join(actions, " "), want)
	}
	timeline := e.cli(t, "host", "timeline", mac)
	if !strings.Contains(timeline, proto.EventPower) {
		t.Errorf("host timeline shows no power action:\n%s", timeline)
	}

	// A wrong BMC password is an error, one line, without any password.
	bad := filepath.Join(t.TempDir(), "bad.pw")
	if err := os.WriteFile(bad, []byte("wrong-pw-12\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cli(t, "host", "bmc", mac, "--ipmi", vm.addr, "--user", "admin", "--password-file", bad)
	out, err := e.command("host", "power", mac, "status").CombinedOutput()
	if err == nil || strings.Contains(string(out), bmcPassword) || strings.Count(strings.TrimSpace(string(out)), "\n") > 0 {
		t.Errorf("power with a wrong password: %v, %q; want one error line without the password", err, out)
	}

	checkPasswordAbsent(t, e)
}

// checkPasswordAbsent searches everything the deployment wrote (the
// coordinator's data directory with its JetStream KV and streams, the
// edge's state and cache, every process log) and what it answers (events,
// audit, hosts) for the BMC password.
func checkPasswordAbsent(t *testing.T, e *fbEnv) {
	t.Helper()
	for _, args := range [][]string{
		{"events", "--since", "1h", "-o", "json"},
		{"audit", "--since", "1h", "-o", "json"},
		{"host", "ls", "-o", "json"},
		{"edge", "ls", "-o", "json"},
	} {
		out, _ := e.command(args...).CombinedOutput()
		if bytes.Contains(out, []byte(bmcPassword)) {
			t.Errorf("`fleetboot %s` shows the BMC password", strings.Join(args, " "))
		}
		if len(out) < 10 {
			t.Errorf("`fleetboot %s` answered nothing to search: %q", strings.Join(args, " "), out)
		}
	}
	files, searched := 0, int64(0)
	err := filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		searched += int64(len(b))
		if bytes.Contains(b, []byte(bmcPassword)) {
			t.Errorf("%s holds the BMC password", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("BMC password absent from %d files (%d bytes) under %s, events, audit, hosts", files, searched, e.dir)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}
