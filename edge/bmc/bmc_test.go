package bmc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/ipmisim"
)

const (
	user     = "admin"
	password = "Tr0ub4dor&3-bmc"
)

// startSim runs ipmi_sim on a free loopback port; control false: no
// chassis control (setting the boot device fails, with exit status 0).
func startSim(t *testing.T, control bool) (Target, string) {
	t.Helper()
	s := ipmisim.Start(t, control)
	return Target{Address: s.Addr, User: s.User, Password: []byte(s.Password)}, s.Dir
}

func calls(_ *testing.T, dir string) []string { return ipmisim.Calls(dir) }

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
