// Package bmc drives a host's BMC with ipmitool over IPMI lanplus: power
// on, off, cycle and status, and the next boot device. The password goes
// to ipmitool in its environment (IPMI_PASSWORD with -E), never in argv,
// which every user of the machine can read in /proc.
//
// ipmitool's exit status is not enough: `chassis bootdev pxe` can fail
// ("Set Chassis Boot Parameter 5 failed") and still exit 0, so every answer
// is checked for the line that says the command took effect.
package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/sealbox"
)

// Target is one BMC and its credentials.
type Target struct {
	Address  string // HOST:PORT
	User     string
	Password []byte
}

// Runner runs one ipmitool command against a target and returns its
// combined output.
type Runner interface {
	Run(ctx context.Context, t Target, args ...string) (string, error)
}

// IPMITool runs the ipmitool binary.
type IPMITool struct {
	Path string // "ipmitool" (from PATH) when empty
}

// Run runs ipmitool -I lanplus -C 3 -E against t. Cipher suite 3 is named
// because without -C ipmitool first asks the BMC for its suites, which
// many (and OpenIPMI's simulator) answer slowly or not at all. The output
// comes back with the password redacted, whatever ipmitool printed.
func (r IPMITool) Run(ctx context.Context, t Target, args ...string) (string, error) {
	host, port, err := net.SplitHostPort(t.Address)
	if err != nil {
		return "", fmt.Errorf("bmc: address %q: %w", t.Address, err)
	}
	path := r.Path
	if path == "" {
		path = "ipmitool"
	}
	argv := append([]string{"-I", "lanplus", "-H", host, "-p", port, "-U", t.User, "-C", "3", "-E", "-N", "1", "-R", "2"}, args...)
	cmd := exec.CommandContext(ctx, path, argv...)
	// A minimal environment: the password and a PATH, nothing of the
	// edge's own (S3 keys among it).
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "IPMI_PASSWORD=" + string(t.Password)}
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	text := sealbox.Redact(string(out), t.Password)
	if err != nil {
		return text, fmt.Errorf("bmc: ipmitool %s: %w: %s", strings.Join(args, " "), err, lastLine(text))
	}
	return text, nil
}

// ErrRefused: ipmitool ran but the BMC did not do what was asked.
var ErrRefused = errors.New("bmc: refused")

// Power carries out a power action (proto.PowerOn, PowerOff, PowerCycle,
// PowerStatus), setting the next boot device to PXE first when pxe is set,
// and returns the power state after it ("on" or "off").
func Power(ctx context.Context, r Runner, t Target, action string, pxe bool) (string, error) {
	if err := proto.ValidPowerAction(action); err != nil {
		return "", err
	}
	if pxe {
		if err := expect(ctx, r, t, "Set Boot Device to pxe", "chassis", "bootdev", "pxe"); err != nil {
			return "", err
		}
	}
	switch action {
	case proto.PowerOn:
		if err := expect(ctx, r, t, "Chassis Power Control: Up/On", "power", "on"); err != nil {
			return "", err
		}
	case proto.PowerOff:
		if err := expect(ctx, r, t, "Chassis Power Control: Down/Off", "power", "off"); err != nil {
			return "", err
		}
	case proto.PowerCycle:
		// A BMC refuses to cycle a machine that is off ("not supported in
		// present state"): what the operator means then is "on".
		st, err := status(ctx, r, t)
		if err != nil {
			return "", err
		}
		if st == "off" {
			if err := expect(ctx, r, t, "Chassis Power Control: Up/On", "power", "on"); err != nil {
				return "", err
			}
		} else if err := expect(ctx, r, t, "Chassis Power Control: Cycle", "power", "cycle"); err != nil {
			return "", err
		}
		// Right after a cycle the machine is on its way back up; some BMCs
		// still say off for a second. It was asked to be on.
		return "on", nil
	}
	return status(ctx, r, t)
}

// status asks the BMC whether the machine is on.
func status(ctx context.Context, r Runner, t Target) (string, error) {
	out, err := r.Run(ctx, t, "power", "status")
	if err != nil {
		return "", err
	}
	if bad := failure(out); bad != "" {
		return "", fmt.Errorf("%w: power status: %s", ErrRefused, bad)
	}
	switch {
	case strings.Contains(out, "Chassis Power is on"):
		return "on", nil
	case strings.Contains(out, "Chassis Power is off"):
		return "off", nil
	}
	return "", fmt.Errorf("%w: power status: unexpected answer %q", ErrRefused, lastLine(out))
}

// expect runs a command and checks that its output has the line want and no
// line reporting a failure.
func expect(ctx context.Context, r Runner, t Target, want string, args ...string) error {
	out, err := r.Run(ctx, t, args...)
	if err != nil {
		return err
	}
	if bad := failure(out); bad != "" {
		return fmt.Errorf("%w: %s: %s", ErrRefused, strings.Join(args, " "), bad)
	}
	if !strings.Contains(out, want) {
		return fmt.Errorf("%w: %s: unexpected answer %q", ErrRefused, strings.Join(args, " "), lastLine(out))
	}
	return nil
}

// failure returns the first line of ipmitool output that reports an error.
func failure(out string) string {
	for _, l := range strings.Split(out, "\n") {
		low := strings.ToLower(l)
		if strings.Contains(low, "failed") || strings.Contains(low, "error") || strings.Contains(low, "unable to") {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
