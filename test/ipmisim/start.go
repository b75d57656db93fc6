package ipmisim

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Sim is a running simulated BMC on the host's loopback.
type Sim struct {
	Addr     string // 127.0.0.1:PORT
	User     string
	Password string
	Dir      string // its files; with a recording control, Calls(Dir)
}

// Start runs ipmi_sim on a free loopback port with a recording chassis
// control (control true; see WriteRecordingControl) or none, and waits until
// it answers ipmitool. It fails the test when ipmi_sim or ipmitool is
// missing (test/deps.sh installs them), and kills the process (by PID) when
// the test ends.
func Start(t testing.TB, control bool) Sim {
	t.Helper()
	for _, bin := range []string{"ipmi_sim", "ipmitool"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed (test/deps.sh installs openipmi, ipmitool): %v", bin, err)
		}
	}
	dir := t.TempDir()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	s := Sim{Addr: net.JoinHostPort("127.0.0.1", fmt.Sprint(port)), User: "admin", Password: "Sim-bmc-pw-7", Dir: dir}
	cfg := Config{Dir: dir, Addr: "127.0.0.1", Port: port, User: s.User, Password: s.Password}
	if control {
		if cfg.Control, err = WriteRecordingControl(dir); err != nil {
			t.Fatal(err)
		}
	}
	args, err := Write(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "ipmi_sim.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ipmi_sim", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
	})
	var out []byte
	for range 100 {
		probe := exec.Command("ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", fmt.Sprint(port), "-U", s.User, "-E", "-C", "3", "power", "status")
		probe.Env = []string{"IPMI_PASSWORD=" + s.Password}
		if out, err = probe.CombinedOutput(); err == nil && strings.Contains(string(out), "Chassis Power is") {
			return s
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("ipmi_sim on port %d not answering: %v %s", port, err, out)
	return Sim{}
}
