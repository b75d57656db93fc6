// Package deploy checks the deployment files in deploy/ with the tools that
// consume them.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The systemd units pass `systemd-analyze verify`, with the binary they
// start present (verify checks ExecStart's path) and hardened as the issue asks.
func TestSystemdUnits(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatalf("systemd-analyze not found: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "fleetboot")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/fleetboot/fleetboot/cmd/fleetboot").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	units, err := filepath.Glob("../../deploy/systemd/*.service")
	if err != nil || len(units) != 2 {
		t.Fatalf("units: %v %v", units, err)
	}
	var names []string
	for _, u := range units {
		text, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=", "EnvironmentFile=/etc/fleetboot/"} {
			if !strings.Contains(string(text), want) {
				t.Errorf("%s lacks %s", u, want)
			}
		}
		name := strings.Replace(filepath.Base(u), "@.", "@lab.", 1) // an instance of the template
		body := strings.ReplaceAll(string(text), "/usr/local/bin/fleetboot", bin)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	cmd := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, names...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
