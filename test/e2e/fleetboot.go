package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildFleetboot builds the fleetboot binary into dir, the way a user does
// (static, CGO off), and returns its path. $FLEETBOOT_E2E_BIN, when set,
// names an already built binary to use instead (`make e2e` builds once).
func BuildFleetboot(ctx context.Context, dir string) (string, error) {
	if bin := os.Getenv("FLEETBOOT_E2E_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return "", fmt.Errorf("e2e: FLEETBOOT_E2E_BIN: %w", err)
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("e2e: FLEETBOOT_E2E_BIN: %w", err)
		}
		return abs, nil
	}
	bin := filepath.Join(dir, "fleetboot")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/fleetboot/fleetboot/cmd/fleetboot")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("e2e: go build fleetboot: %w\n%s", err, out)
	}
	return bin, nil
}
