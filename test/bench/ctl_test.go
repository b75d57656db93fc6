package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/test/e2e"
)

// ctl is a benchmark's control namespace: a LAN of its own (so no port can
// clash with anything else on the machine) with one host, where the
// coordinator (NATS on 127.0.0.1:4222) and the CLI run.
type ctl struct {
	b       *testing.B
	dir     string
	network *e2e.Network
	h       *e2e.Host
	bin     string
	env     []string
}

// newCtl makes the LAN prefix with the control host at addr.
func newCtl(b *testing.B, prefix, addr string) *ctl {
	network := e2e.NewNetwork(b, prefix)
	return &ctl{b: b, dir: b.TempDir(), network: network, h: network.AddHost(b, "ctl", addr, ""),
		bin: fleetbootBinary(b), env: append(os.Environ(), "FLEETBOOT_NATS=nats://127.0.0.1:4222")}
}

// run starts `fleetboot args...` on the control host, logged as name.
func (c *ctl) run(name string, args ...string) *e2e.Proc {
	cmd := c.h.Command(context.Background(), c.bin, args...)
	cmd.Env = c.env
	return e2e.StartProc(c.b, c.dir, name, cmd)
}

// cli runs `fleetboot args...` to its end (within limit) and returns its
// output; a failure fails the benchmark.
func (c *ctl) cli(limit time.Duration, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := c.h.Command(ctx, c.bin, args...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.b.Fatalf("fleetboot %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// startCoordinator runs the coordinator on the control host (its data and
// a dir:// store under the benchmark's directory, no HTTP), with extra
// flags, and waits until its API answers.
func (c *ctl) startCoordinator(name string, extra ...string) *e2e.Proc {
	args := append([]string{"coordinator", "--data", filepath.Join(c.dir, "coord"), "--nats-listen", "127.0.0.1:4222",
		"--store", "dir://" + filepath.Join(c.dir, "store"), "--http-listen", ""}, extra...)
	coord := c.run(name, args...)
	waitAPI(c.b, coord)
	return coord
}
