package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/ipmisim"
)

// controlScript is ipmi_sim's chassis_control program: it keeps the power
// state in a file and logs every call, one line each.
const controlScript = `#!/bin/sh
dir=$(dirname "$0")
echo "$*" >> "$dir/calls"
case "$1 $2" in
"get power") cat "$dir/power" 2>/dev/null || echo power:0 ;;
"get boot") echo boot:default ;;
"set power") echo "power:$3" > "$dir/power" ;;
esac
exit 0
`

const (
	user     = "admin"
	password = "Tr0ub4dor&3-bmc"
)

// startSim runs ipmi_sim on a free loopback port and waits until it answers.
// control false: no chassis control (setting the boot device fails, with
// exit status 0).
func startSim(t *testing.T, control bool) (Target, string) {
	t.Helper()
	if _, err := exec.LookPath("ipmi_sim"); err != nil {
		t.Skip("ipmi_sim (Debian openipmi) not installed")
	}
	if _, err := exec.LookPath("ipmitool"); err != nil {
		t.Skip("ipmitool not installed")
	}
	dir := t.TempDir()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	cfg := ipmisim.Config{Dir: dir, Addr: "127.0.0.1", Port: port, User: user, Password: password}
	if control {
		cfg.Control = filepath.Join(dir, "control.sh")
		if err := os.WriteFile(cfg.Control, []byte(controlScript), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	args, err := ipmisim.Write(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ipmi_sim", args...)
	logf, err := os.Create(filepath.Join(dir, "ipmi_sim.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // by PID: the process this test started
		_ = cmd.Wait()
		logf.Close()
	})
	tg := Target{Address: net.JoinHostPort("127.0.0.1", fmt.Sprint(port)), User: user, Password: []byte(password)}
	var last error
	for range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, last = status(ctx, IPMITool{}, tg)
		cancel()
		if last == nil {
			return tg, dir
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("ipmi_sim on port %d not answering: %v", port, last)
	return Target{}, ""
}

func calls(t *testing.T, dir string) []string {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(dir, "calls"))
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" && !strings.HasPrefix(l, "get ") {
			out = append(out, l)
		}
	}
	return out
}

// Power actions against OpenIPMI's simulated BMC reach its chassis
// control as the calls a real power controller would get.
func TestPowerAgainstSimulatedBMC(t *testing.T) {
	tg, dir := startSim(t, true)
	ctx := context.Background()
	steps := []struct {
		action    string
		pxe       bool
		wantPower string
		wantCalls []string // set calls the chassis control got, in order
	}{
		{proto.PowerStatus, false, "off", nil},
		{proto.PowerOn, true, "on", []string{"set boot pxe", "set power 1"}},
		{proto.PowerStatus, false, "on", nil},
		// ipmi_sim cycles as off, then on after its own timer.
		{proto.PowerCycle, false, "on", []string{"set power 0"}},
		{proto.PowerOff, false, "off", []string{"set power 0"}},
		// A cycle of a machine that is off powers it on.
		{proto.PowerCycle, false, "on", []string{"set power 1"}},
	}
	seen := 0
	for i, s := range steps {
		got, err := Power(ctx, IPMITool{}, tg, s.action, s.pxe)
		if err != nil || got != s.wantPower {
			t.Fatalf("step %d %s: power %q, %v; want %q", i, s.action, got, err, s.wantPower)
		}
		all := calls(t, dir)
		// The cycle's power-on comes from ipmi_sim's timer, later.
		newCalls := all[seen:]
		if s.action == proto.PowerCycle && len(newCalls) > len(s.wantCalls) {
			newCalls = newCalls[:len(s.wantCalls)]
		}
		if strings.Join(newCalls, "|") != strings.Join(s.wantCalls, "|") {
			t.Fatalf("step %d %s: chassis control got %q, want %q", i, s.action, newCalls, s.wantCalls)
		}
		if s.action == proto.PowerCycle && s.wantCalls[0] == "set power 0" {
			// Wait for the timer's power-on before going on.
			for range 100 {
				if all = calls(t, dir); len(all) > seen+1 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if all[len(all)-1] != "set power 1" {
				t.Fatalf("no power-on after the cycle: %q", all[seen:])
			}
		}
		seen = len(calls(t, dir))
	}
}

// The failures ipmitool reports with exit status 0 are failures here, and
// no error carries the password.
func TestBMCRefusalsAreErrors(t *testing.T) {
	tg, _ := startSim(t, false)
	ctx := context.Background()
	// Without chassis control, ipmi_sim refuses the boot device; ipmitool
	// says so and exits 0.
	out, err := IPMITool{}.Run(ctx, tg, "chassis", "bootdev", "pxe")
	if err != nil || !strings.Contains(out, "failed") {
		t.Logf("ipmitool bootdev pxe: %v\n%s", err, out)
	}
	if _, err := Power(ctx, IPMITool{}, tg, proto.PowerOn, true); !errors.Is(err, ErrRefused) {
		t.Errorf("power on --pxe where the boot device cannot be set: %v, want ErrRefused", err)
	}
	bad := tg
	bad.Password = []byte("not-" + password)
	_, err = Power(ctx, IPMITool{}, bad, proto.PowerStatus, false)
	if err == nil {
		t.Fatal("a wrong password was accepted")
	}
	if strings.Contains(err.Error(), string(bad.Password)) || strings.Contains(err.Error(), password) {
		t.Errorf("error carries the password: %v", err)
	}
	if _, err := Power(ctx, IPMITool{}, tg, "reboot", false); err == nil {
		t.Error("an unknown action was run")
	}
}

// The password reaches ipmitool in its environment, never in its
// arguments (readable by anyone in /proc), and the environment holds
// nothing else of the edge's.
func TestPasswordNotInArgv(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "ipmitool")
	script := "#!/bin/sh\necho \"ARGV $*\"\nenv | sort | sed 's/^/ENV /'\necho 'Chassis Power is on'\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLEETBOOT_S3_SECRET_KEY", "s3-secret")
	tg := Target{Address: "192.0.2.7:6230", User: "admin", Password: []byte(password)}
	out, err := IPMITool{Path: fake}.Run(context.Background(), tg, "power", "status")
	if err != nil {
		t.Fatal(err)
	}
	argv := strings.SplitN(out, "\n", 2)[0]
	want := "ARGV -I lanplus -H 192.0.2.7 -p 6230 -U admin -C 3 -E -N 1 -R 2 power status"
	if argv != want {
		t.Errorf("argv %q, want %q", argv, want)
	}
	if strings.Contains(out, password) {
		t.Errorf("output passed on with the password:\n%s", out)
	}
	if !strings.Contains(out, "ENV IPMI_PASSWORD=[redacted]") {
		t.Errorf("password not in the environment:\n%s", out)
	}
	if strings.Contains(out, "s3-secret") {
		t.Errorf("the edge's environment leaked to ipmitool:\n%s", out)
	}
}
