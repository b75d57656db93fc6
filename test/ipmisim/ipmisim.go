// Package ipmisim configures OpenIPMI's BMC simulator (ipmi_sim, Debian
// openipmi) for tests: one BMC with an IPMI LAN interface on loopback and
// one admin user, whose chassis power and boot device are handled by a
// program of the test's (chassis_control). ../../../shared/IPMI-FACTS.md
// (in the project's notes) has what was observed of it.
package ipmisim

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Config of one simulated BMC.
type Config struct {
	Dir      string // its files go here
	Addr     string // IP address of its LAN interface (127.0.0.1)
	Port     int    // UDP port of its LAN interface
	User     string
	Password string
	// Control is the chassis_control program: ipmi_sim runs it as
	// `PROGRAM get power|boot` (it prints power:0|1, boot:…) and
	// `PROGRAM set power|reset|boot VALUE`. Empty: no chassis control, a
	// startcmd of /bin/true instead, with which setting the boot device
	// fails although ipmitool exits 0.
	Control string
}

// Write writes the configuration and returns the ipmi_sim arguments.
func Write(cfg Config) ([]string, error) {
	if strings.ContainsAny(cfg.User+cfg.Password+cfg.Control, "\"\n") {
		return nil, fmt.Errorf("ipmisim: quote or newline in the user, password or control program")
	}
	chassis := fmt.Sprintf("  chassis_control %q\n", cfg.Control)
	if cfg.Control == "" {
		chassis = "  startcmd \"/bin/true\"\n  startnow false\n  poweroff_wait 1\n  kill_wait 1\n"
	}
	lan := fmt.Sprintf(`name "bmc"
set_working_mc 0x20
  startlan 1
    addr %s %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
%s  user 2 true  "%s" "%s" admin 10 none md2 md5 straight
`, cfg.Addr, cfg.Port, chassis, cfg.User, cfg.Password)
	emu := "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n"
	state := filepath.Join(cfg.Dir, "ipmi-state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, err
	}
	lanPath, emuPath := filepath.Join(cfg.Dir, "lan.conf"), filepath.Join(cfg.Dir, "sim.emu")
	if err := os.WriteFile(lanPath, []byte(lan), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(emuPath, []byte(emu), 0o600); err != nil {
		return nil, err
	}
	// -n: do not read the console from stdin.
	return []string{"-c", lanPath, "-f", emuPath, "-s", state, "-n"}, nil
}

// recordingControl is a chassis_control program that keeps the power state
// in a file beside it and logs every call to "calls", one line each.
const recordingControl = `#!/bin/sh
dir=$(dirname "$0")
echo "$*" >> "$dir/calls"
case "$1 $2" in
"get power") cat "$dir/power" 2>/dev/null || echo power:0 ;;
"get boot") echo boot:default ;;
"set power") echo "power:$3" > "$dir/power" ;;
esac
exit 0
`

// WriteRecordingControl writes a chassis_control program into dir that
// drives no machine: it keeps the power state and logs each call to
// dir/calls (see Calls). It returns the program's path.
func WriteRecordingControl(dir string) (string, error) {
	p := filepath.Join(dir, "control.sh")
	return p, os.WriteFile(p, []byte(recordingControl), 0o755)
}

// Calls returns the "set" calls a recording control program got, in order
// ("set boot pxe", "set power 1", …).
func Calls(dir string) []string {
	b, _ := os.ReadFile(filepath.Join(dir, "calls"))
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if strings.HasPrefix(l, "set ") {
			out = append(out, l)
		}
	}
	return out
}
