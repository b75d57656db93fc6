package bench

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/test/e2e"
)

// extraTargets adds fleetboot's edge, run as a user runs it: the coordinator
// (with a directory artifact store) and the edge are separate processes of
// the built binary in the server namespace.
func extraTargets() []target {
	return []target{{
		name: "fleetboot",
		dhcp: func(b *testing.B, env *benchEnv) {
			startEdge(b, env, edgeOpts{dhcp: true})
		},
		tftp: func(b *testing.B, env *benchEnv, dir string) string {
			startEdge(b, env, edgeOpts{bootDir: dir})
			return serverAddr
		},
		http: func(b *testing.B, env *benchEnv, dir string) string {
			// The blob is an image's kernel: the edge serves it from its
			// cache as /artifacts/bench/blob1g.
			fb := startEdge(b, env, edgeOpts{image: filepath.Join(dir, "blob1g")})
			base := "http://" + serverAddr + ":8080/artifacts/bench"
			fb.warm(b, env, base+"/blob1g")
			return base
		},
	}}
}

type edgeOpts struct {
	dhcp    bool   // answer DHCP on eth0 (full mode)
	bootDir string // --boot-dir: what TFTP serves
	image   string // register image "bench" with this file as its kernel
}

type fleetboot struct {
	bin  string
	edge *e2e.Proc
}

func startEdge(b *testing.B, env *benchEnv, o edgeOpts) *fleetboot {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin, err := e2e.BuildFleetboot(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	run := func(name string, args ...string) *e2e.Proc {
		cmd := env.srv.Command(context.Background(), bin, args...)
		cmd.Env = append(os.Environ(), "FLEETBOOT_NATS=nats://127.0.0.1:4222")
		return e2e.StartProc(b, env.dir, name, cmd)
	}
	cli := func(args ...string) {
		cmd := env.srv.Command(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "FLEETBOOT_NATS=nats://127.0.0.1:4222")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("fleetboot %v: %v\n%s", args, err, out)
		}
	}
	coord := run("coordinator", "coordinator", "--data", filepath.Join(env.dir, "coord"), "--nats-listen", "127.0.0.1:4222",
		"--store", "dir://"+filepath.Join(env.dir, "store"))
	if err := e2e.WaitListening(ctx, env.srv.NS, "tcp", 4222); err != nil {
		b.Fatalf("%v\n%s", err, coord.Output())
	}
	// Unknown MACs get an address and an exit script: every DORA of the
	// benchmark is a new machine.
	cli("site", "add", "lab", "--subnet", serverPrefix, "--range", "10.77.1.0-10.77.200.255", "--unknown", "exit")
	if o.image != "" {
		small := filepath.Join(env.dir, "initrd")
		if err := os.WriteFile(small, []byte("bench initrd"), 0o644); err != nil {
			b.Fatal(err)
		}
		cli("image", "add", "bench", "--kernel", o.image, "--initrd", small, "--cmdline", "console=ttyS0")
	}
	args := []string{"edge", "--coordinator", "nats://127.0.0.1:4222", "--name", "bench", "--site", "lab",
		"--state-dir", filepath.Join(env.dir, "edge-state"), "--cache-dir", filepath.Join(env.dir, "edge-cache"),
		"--http-listen", serverAddr + ":8080", "--tftp-listen", serverAddr + ":69"}
	if o.dhcp {
		args = append(args, "--interface", "eth0")
	}
	if o.bootDir != "" {
		args = append(args, "--boot-dir", o.bootDir)
	}
	fb := &fleetboot{bin: bin, edge: run("edge", args...)}
	if _, err := fb.edge.WaitFor(ctx, regexp.MustCompile(`state in sync.*bucket=(images|hosts)`)); err != nil {
		b.Fatalf("edge: %v", err)
	}
	if _, err := fb.edge.WaitFor(ctx, regexp.MustCompile(`state in sync.*bucket=sites`)); err != nil {
		b.Fatalf("edge: %v", err)
	}
	port, proto := 8080, "tcp"
	if o.dhcp {
		port, proto = 67, "udp"
	}
	if err := e2e.WaitListening(ctx, env.srv.NS, proto, port); err != nil {
		b.Fatalf("%v\n%s", err, fb.edge.Output())
	}
	return fb
}

// warm fetches the artifact once, untimed, so the measured downloads are
// cache hits served from the edge's disk, as nginx serves from its.
func (fb *fleetboot) warm(b *testing.B, env *benchEnv, url string) {
	b.Helper()
	client := env.cli.HTTPClient(10 * time.Minute)
	resp, err := client.Get(url)
	if err != nil {
		b.Fatalf("warm %s: %v", url, err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || n != httpSize {
		b.Fatalf("warm %s: %s, %d bytes, %v\n%s", url, resp.Status, n, err, fb.edge.Output())
	}
}
