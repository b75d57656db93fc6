package e2e

import (
	"context"
	"encoding/json"
	"fmt"
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
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// bmcPassword is the simulated BMCs' admin password. The tests look for it
// in everything fleetboot wrote: it must be nowhere.
const bmcPassword = "Zq7-bmc-s3cr3t-41"

// bmcControl is ipmi_sim's chassis_control program for one VM: power on
// starts QEMU on the test network (booting from the network when the boot
// device was set to PXE, once, as a BMC's boot flag does; from the missing
// disk otherwise), off kills it, reset does both. ipmi_sim waits for it, so
// it returns at once, and it is idempotent (ipmitool retransmits). Every
// call goes to "calls" with the time, "set" calls as "set power 1" etc.
const bmcControl = `#!/bin/bash
D=%[1]s
echo "$(date +%%s.%%N) $*" >> "$D/calls"
running() { [ -f "$D/qemu.pid" ] && kill -0 "$(cat "$D/qemu.pid")" 2>/dev/null; }
start() {
	order=c
	if [ "$(cat "$D/boot" 2>/dev/null)" = pxe ]; then order=n; rm -f "$D/boot"; fi
	echo "$(date +%%s.%%N) boot order=$order" >> "$D/calls"
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

// bmcVM is a VM behind a real IPMI BMC of its own: OpenIPMI's ipmi_sim,
// in the edge's namespace on its loopback (the site's management network
// as the edge sees it), whose chassis control starts the VM's QEMU on the
// test network and kills it. The VM is off until its BMC powers it on.
// Every QEMU run of the VM appends to one console file.
type bmcVM struct {
	name    string
	mac     string
	dir     string // the BMC's own files: its config (with the password), calls, qemu.pid
	console string
	addr    string // 127.0.0.1:PORT, the BMC's IPMI LAN interface
}

// requireBMCTools fails the test when the BMC simulator or ipmitool is
// missing: test/deps.sh installs them.
func requireBMCTools(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"ipmi_sim", "ipmitool", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not installed (test/deps.sh: openipmi, ipmitool, qemu-system-x86)", bin)
		}
	}
}

// startBMCVM gives a BIOS VM with the MAC a BMC and starts the BMC; the VM
// stays off. The VM is killed (by the PID its BMC recorded) and the BMC
// stopped when the test ends.
func (e *fbEnv) startBMCVM(t *testing.T, name, mac string) *bmcVM {
	t.Helper()
	requireBMCTools(t)
	// The BMC's own files (its config holds the password) live apart
	// from fleetboot's, which the tests search for the password.
	v := &bmcVM{name: name, mac: mac, dir: t.TempDir(), console: filepath.Join(e.dir, name+".console")}
	tap := e.net.AddTap(t)
	qemu := []string{"-name", name, "-accel", "tcg", "-m", "512", "-smp", "1",
		"-nographic", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + mac, "-machine", "pc"}
	control := filepath.Join(v.dir, "control.sh")
	script := fmt.Sprintf(bmcControl, v.dir, e.net.Switch, strings.Join(qemu, " "), v.console)
	if err := os.WriteFile(control, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // the VM, by the PID the control program recorded
		if b, err := os.ReadFile(filepath.Join(v.dir, "qemu.pid")); err == nil {
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
	v.addr = fmt.Sprintf("127.0.0.1:%d", port)
	args, err := ipmisim.Write(ipmisim.Config{Dir: v.dir, Addr: "127.0.0.1", Port: port, User: "admin", Password: bmcPassword, Control: control})
	if err != nil {
		t.Fatal(err)
	}
	StartProc(t, v.dir, "ipmi_sim", e.srv.Command(context.Background(), "ipmi_sim", args...))
	return v
}

// enroll tells fleetboot the VM's BMC (`host bmc`), the password sealed to
// the site's edge. The edge publishes its curve key with its first
// heartbeats, so the first call may have to wait for it.
func (e *fbEnv) enroll(t *testing.T, v *bmcVM) {
	t.Helper()
	pwFile := filepath.Join(t.TempDir(), "bmc.pw")
	if err := os.WriteFile(pwFile, []byte(bmcPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.waitCLI(t, 60*time.Second, "host", "bmc", v.mac, "--ipmi", v.addr, "--user", "admin", "--password-file", pwFile)
}

// power runs `fleetboot host power MAC ACTION… -o json`.
func (e *fbEnv) power(t *testing.T, v *bmcVM, args ...string) proto.PowerReply {
	t.Helper()
	var rep proto.PowerReply
	out := e.cli(t, append([]string{"host", "power", v.mac}, append(args, "-o", "json")...)...)
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("host power %s %s: %v: %s", v.mac, strings.Join(args, " "), err, out)
	}
	return rep
}

// waitPower polls `host power MAC status` until the BMC reports want.
func (e *fbEnv) waitPower(t *testing.T, v *bmcVM, want string) {
	t.Helper()
	waitfor.Within(t, bootLimit, v.name+" power "+want, func() error {
		if got := e.power(t, v, "status").Power; got != want {
			return fmt.Errorf("power %s", got)
		}
		return nil
	})
}

// Console is everything the VM printed in all its runs.
func (v *bmcVM) Console(t *testing.T) string { return readFile(t, v.console) }

// count is how many console lines match re.
func (v *bmcVM) count(t *testing.T, re *regexp.Regexp) int {
	return len(re.FindAllStringIndex(v.Console(t), -1))
}

// countSince is how many console lines after the console before (what
// Console returned earlier) match re.
func (v *bmcVM) countSince(t *testing.T, before string, re *regexp.Regexp) int {
	c := v.Console(t)
	if !strings.HasPrefix(c, before) {
		t.Fatalf("%s: console file rewritten", v.name)
	}
	return len(re.FindAllStringIndex(c[len(before):], -1))
}

// waitCount waits until n console lines match re (of every run so far).
func (v *bmcVM) waitCount(t *testing.T, re *regexp.Regexp, n int) {
	t.Helper()
	v.waitSince(t, "", re, n)
}

// waitSince waits until n console lines after before match re.
func (v *bmcVM) waitSince(t *testing.T, before string, re *regexp.Regexp, n int) {
	t.Helper()
	done := false
	defer func() { // runs also when the wait fails the test
		if !done {
			t.Logf("%s console, last lines:\n%s", v.name, lastLines(v.Console(t), 30))
		}
	}()
	waitfor.Within(t, bootLimit, fmt.Sprintf("%s: %d× %s on the console", v.name, n, re), func() error {
		if got := v.countSince(t, before, re); got < n {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	})
	done = true
}

// bmcCall is one call of the BMC's chassis control program.
type bmcCall struct {
	At   time.Time
	Call string // "set boot pxe", "set power 1", "get power", "boot order=n"…
}

// calls are the BMC's chassis control calls so far, in order.
func (v *bmcVM) calls(t *testing.T) []bmcCall {
	t.Helper()
	var out []bmcCall
	for _, l := range strings.Split(strings.TrimSpace(readFile(t, filepath.Join(v.dir, "calls"))), "\n") {
		stamp, call, ok := strings.Cut(l, " ")
		if !ok {
			continue
		}
		secs, nanos, _ := strings.Cut(stamp, ".")
		sec, err1 := strconv.ParseInt(secs, 10, 64)
		nsec, err2 := strconv.ParseInt(nanos, 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: chassis control calls: line %q", v.name, l)
		}
		out = append(out, bmcCall{At: time.Unix(sec, nsec), Call: call})
	}
	return out
}

// actions are the calls that changed something (not "get …"), made after
// since.
func (v *bmcVM) actions(t *testing.T, since time.Time) []bmcCall {
	t.Helper()
	var out []bmcCall
	for _, c := range v.calls(t) {
		if !strings.HasPrefix(c.Call, "get ") && !c.At.Before(since) {
			out = append(out, c)
		}
	}
	return out
}
