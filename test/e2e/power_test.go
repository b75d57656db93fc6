package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/ipmisim"
)

// bmcPassword is the simulated BMC's admin password. The test looks for it
// in everything fleetboot wrote: it must be nowhere.
const bmcPassword = "Zq7-bmc-s3cr3t-41"

// bmcControl is ipmi_sim's chassis_control program for one VM: power on
// starts QEMU on the test network (booting from the network when the boot
// device was set to PXE, once, as a BMC's boot flag does; from the missing
// disk otherwise), off kills it, reset does both. ipmi_sim waits for it, so
// it returns at once, and it is idempotent (ipmitool retransmits).
const bmcControl = `#!/bin/bash
D=%[1]s
echo "$(date +%%s.%%N) $*" >> "$D/calls"
running() { [ -f "$D/qemu.pid" ] && kill -0 "$(cat "$D/qemu.pid")" 2>/dev/null; }
start() {
	order=c
	if [ "$(cat "$D/boot" 2>/dev/null)" = pxe ]; then order=n; rm -f "$D/boot"; fi
	echo "boot order=$order" >> "$D/calls"
	# ipmi_sim's sockets must not live on in QEMU: a restarted
	# ipmi_sim could not bind them.
	for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
	ip netns exec %[2]s qemu-system-x86_64 %[3]s -boot order=$order </dev/null >>%[4]s 2>&1 &
	echo $! > "$D/qemu.pid"
}
stop() {
	if running; then
		pid=$(cat "$D/qemu.pid")
		kill "$pid"
		for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
		kill -9 "$pid" 2>/dev/null
	fi
	rm -f "$D/qemu.pid"
}
case "$1 $2" in
"get power") if running; then echo power:1; else echo power:0; fi ;;
"get boot") echo "boot:$(cat "$D/boot" 2>/dev/null || echo default)" ;;
"set boot") echo "$3" > "$D/boot" ;;
"set power") if [ "$3" = 1 ]; then running || start; else stop; fi ;;
"set reset") stop; start ;;
esac
exit 0
`

// TestPowerThroughBMC: a VM behind a real IPMI BMC (OpenIPMI's ipmi_sim,
// whose chassis control starts and kills the VM's QEMU) is powered on
// with `fleetboot host power MAC on --pxe`: the coordinator relays to the
// site's edge, which opens the sealed password and runs ipmitool; the VM
// network-boots to the marker. A `cycle --pxe` of the running VM kills and
// restarts it, and it boots to the marker again. Every action is an event
// of the host, and the BMC password is nowhere in what fleetboot wrote.
func TestPowerThroughBMC(t *testing.T) {
	for _, bin := range []string{"ipmi_sim", "ipmitool"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (test/deps.sh: openipmi, ipmitool)", bin)
		}
	}
	e := startFleetboot(t, fbOptions{dhcpMode: "full", images: []string{"img-a"}})
	mac := RandomMAC()
	e.setHost(t, mac, "--image", "img-a")

	// The BMC's own files (its config holds the password) live apart
	// from fleetboot's, which the test searches for the password.
	bmcDir := t.TempDir()
	console := filepath.Join(e.dir, "bmc-vm.console")
	tap := e.net.AddTap(t)
	qemu := []string{"-name", "bmc-vm", "-accel", "tcg", "-m", "512", "-smp", "1",
		"-nographic", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + mac, "-machine", "pc"}
	control := filepath.Join(bmcDir, "control.sh")
	script := fmt.Sprintf(bmcControl, bmcDir, e.net.Switch, strings.Join(qemu, " "), console)
	if err := os.WriteFile(control, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // the VM, by the PID the control program recorded
		if b, err := os.ReadFile(filepath.Join(bmcDir, "qemu.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	pc, err := e.srv.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	args, err := ipmisim.Write(ipmisim.Config{Dir: bmcDir, Addr: "127.0.0.1", Port: port, User: "admin", Password: bmcPassword, Control: control})
	if err != nil {
		t.Fatal(err)
	}
	// In the edge's namespace, on its loopback: the site's management
	// network as the edge sees it.
	sim := StartProc(t, bmcDir, "ipmi_sim", e.srv.Command(context.Background(), "ipmi_sim", args...))
	defer sim.Stop()

	pwFile := filepath.Join(t.TempDir(), "bmc.pw")
	if err := os.WriteFile(pwFile, []byte(bmcPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The edge publishes its curve key with its first heartbeats.
	e.waitCLI(t, 60*time.Second, "host", "bmc", mac, "--ipmi", fmt.Sprintf("127.0.0.1:%d", port), "--user", "admin", "--password-file", pwFile)

	if show := e.cli(t, "host", "show", mac); !strings.Contains(show, fmt.Sprintf("bmc: 127.0.0.1:%d user admin, password sealed to edge(s) %s", port, edgeName)) {
		t.Errorf("host show lacks the BMC:\n%s", show)
	}
	power := func(args ...string) proto.PowerReply {
		t.Helper()
		var rep proto.PowerReply
		out := e.cli(t, append([]string{"host", "power", mac}, append(args, "-o", "json")...)...)
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("host power %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return rep
	}
	markers := func() int {
		b, _ := os.ReadFile(console)
		return strings.Count(string(b), "FLEETBOOT-MARKER mac="+mac)
	}
	waitMarkers := func(n int) {
		t.Helper()
		for start := time.Now(); markers() < n; time.Sleep(time.Second) {
			if time.Since(start) > bootLimit {
				b, _ := os.ReadFile(console)
				t.Fatalf("no marker #%d within %s; console:\n%s", n, bootLimit, lastLines(string(b), 30))
			}
		}
	}
	waitPower := func(want string) {
		t.Helper()
		for start := time.Now(); ; time.Sleep(2 * time.Second) {
			if got := power("status").Power; got == want {
				return
			} else if time.Since(start) > bootLimit {
				t.Fatalf("power still %s after %s, want %s", got, bootLimit, want)
			}
		}
	}

	if rep := power("status"); rep.Power != "off" || rep.Edge != edgeName {
		t.Fatalf("before: %+v, want off, answered by edge %s", rep, edgeName)
	}
	start := time.Now()
	if rep := power("on", "--pxe"); rep.Power != "on" || !rep.PXE {
		t.Fatalf("power on --pxe: %+v", rep)
	}
	waitMarkers(1)
	onToMarker := time.Since(start)
	t.Logf("TIMING power on --pxe to marker %.1fs", onToMarker.Seconds())
	// The test initramfs powers the VM off after its marker: the BMC sees it.
	waitPower("off")

	// On again, and cycled while it boots: QEMU is killed and started anew.
	seen := len(readFile(t, console))
	power("on", "--pxe")
	waitNew(t, console, seen, "iPXE") // the second boot is under way
	callsBefore := readFile(t, filepath.Join(bmcDir, "calls"))
	start = time.Now()
	if rep := power("cycle", "--pxe"); rep.Power != "on" {
		t.Fatalf("power cycle: %+v", rep)
	}
	waitMarkers(2)
	cycleToMarker := time.Since(start)
	// The first power-on is the reference: same VM, same chain, same run.
	t.Logf("TIMING power cycle --pxe to marker %.1fs (%.2f× power on --pxe to marker)", cycleToMarker.Seconds(), cycleToMarker.Seconds()/onToMarker.Seconds())
	calls := strings.TrimPrefix(readFile(t, filepath.Join(bmcDir, "calls")), callsBefore)
	if !regexp.MustCompile(`set boot pxe[\s\S]*set power 0[\s\S]*set power 1[\s\S]*boot order=n`).MatchString(calls) {
		t.Errorf("the cycle did not kill and restart the VM from the network; chassis calls:\n%s", calls)
	}
	if n := markers(); n != 2 {
		t.Errorf("%d markers, want 2 (the cycled boot never reached its marker)", n)
	}
	if n := strings.Count(readFile(t, console), "SeaBIOS"); n != 3 {
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
	e.cli(t, "host", "bmc", mac, "--ipmi", fmt.Sprintf("127.0.0.1:%d", port), "--user", "admin", "--password-file", bad)
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

// waitNew waits until file holds s past its first skip bytes.
func waitNew(t *testing.T, file string, skip int, s string) {
	t.Helper()
	for start := time.Now(); !strings.Contains(readFile(t, file)[skip:], s); time.Sleep(200 * time.Millisecond) {
		if time.Since(start) > bootLimit {
			t.Fatalf("%s: no new %q after %s", file, s, bootLimit)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}
