//go:build e2e

package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/test/e2e"
)

// extraTargets adds fleetboot's edge. It runs the edge with a local
// directory store (no coordinator needed for pure serving speed is not
// possible: the edge takes its state from NATS), so the coordinator runs
// too, on the server namespace's loopback.
func extraTargets() []target {
	return []target{{
		name: "fleetboot",
		dhcp: func(b *testing.B, env *benchEnv) { startEdge(b, env, "") },
		tftp: func(b *testing.B, env *benchEnv, dir string) string {
			startEdge(b, env, dir)
			return "10.77.0.1"
		},
		// HTTP artifacts are content-addressed in the edge: the hook is
		// here; serving the blob needs it registered as an image first.
		http: nil,
	}}
}

func startEdge(b *testing.B, env *benchEnv, tftpRoot string) {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "fleetboot")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/fleetboot/fleetboot/cmd/fleetboot").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(name string, args ...string) *e2e.Proc {
		cmd := env.srv.Command(context.Background(), bin, args...)
		cmd.Env = append(os.Environ(), "FLEETBOOT_NATS=nats://127.0.0.1:4222")
		return e2e.StartProc(b, env.dir, name, cmd)
	}
	run("coordinator", "coordinator", "--data", filepath.Join(env.dir, "coord"), "--nats-listen", "127.0.0.1:4222",
		"--store", "dir://"+filepath.Join(env.dir, "store"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := e2e.WaitListening(ctx, env.srv.NS, "tcp", 4222); err != nil {
		b.Fatal(err)
	}
	site := env.srv.Command(ctx, bin, "site", "add", "lab", "--subnet", serverPrefix, "--range", "10.77.1.0-10.77.200.255", "--unknown", "exit")
	site.Env = append(os.Environ(), "FLEETBOOT_NATS=nats://127.0.0.1:4222")
	if out, err := site.CombinedOutput(); err != nil {
		b.Fatalf("site add: %v\n%s", err, out)
	}
	args := []string{"edge", "run", "--coordinator", "nats://127.0.0.1:4222", "--site", "lab", "--interface", "eth0",
		"--state-dir", filepath.Join(env.dir, "edge-state"), "--cache-dir", filepath.Join(env.dir, "edge-cache"),
		"--http-listen", "10.77.0.1:8080", "--tftp-listen", "10.77.0.1:69", "--dhcp", "full"}
	if tftpRoot != "" {
		args = append(args, "--ipxe-dir", tftpRoot)
	}
	run("edge", args...)
	if err := e2e.WaitListening(ctx, env.srv.NS, "udp", 67); err != nil {
		b.Fatal(err)
	}
}
