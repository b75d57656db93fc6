package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/test/e2e"
)

// edgeOpts say what the fleetboot side of a benchmark serves: the
// coordinator (embedded NATS on the server's loopback) and one edge, both
// processes of the built binary in the server namespace, run as a user
// runs them.
type edgeOpts struct {
	subnet  string   // the site's network (default: the env's prefix)
	pool    string   // its dynamic range A-B ("" : none)
	dhcp    bool     // answer DHCP on eth0 (full mode, no conflict ping)
	bootDir string   // --boot-dir: what TFTP serves
	images  []image  // registered before the edge starts, each booted by a host
	store   string   // --store of the coordinator (default: a directory)
	env     []string // extra environment of both processes (S3 credentials)
	args    []string // extra flags of the edge

	// assignLater leaves the images' hosts out: the edge serves an image's
	// files only once a host of the site boots it (see assign).
	assignLater bool
}

type image struct{ name, kernel string }

type fleetboot struct {
	bin   string
	coord *e2e.Proc
	edge  *e2e.Proc
	// cli runs a fleetboot client command against the coordinator.
	cli func(args ...string) []byte
}

func fleetbootBinary(b *testing.B) string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin, err := e2e.BuildFleetboot(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	return bin
}

// benchHostMAC is the MAC of the host that boots the i-th image of edgeOpts.
func benchHostMAC(i int) string { return fmt.Sprintf("02:00:00:00:be:%02x", i) }

// assign makes a host boot the i-th image and waits until the edge serves
// url, asking with HEAD, which never starts a download. The edge prefetches
// an image as soon as a host boots it, so a GET right after this joins a
// download that began a moment before: the first boot after an assignment
// (unless the edge runs with --prefetch=false, as BenchmarkHTTPCold's does).
func (fb *fleetboot) assign(b *testing.B, client *http.Client, i int, image, url string) {
	b.Helper()
	fb.cli("host", "set", benchHostMAC(i), "--image", image)
	deadline := time.Now().Add(time.Minute)
	for {
		req, _ := http.NewRequest(http.MethodHead, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("the edge does not serve %s a minute after the assignment: %v %v", url, resp, err)
		}
		time.Sleep(10 * time.Millisecond) // polling the edge
	}
}

func startFleetboot(b *testing.B, env *benchEnv, o edgeOpts) *fleetboot {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fb := &fleetboot{bin: fleetbootBinary(b)}
	procEnv := append(append(os.Environ(), "FLEETBOOT_NATS=nats://127.0.0.1:4222"), o.env...)
	run := func(name string, args ...string) *e2e.Proc {
		cmd := env.srv.Command(context.Background(), fb.bin, args...)
		cmd.Env = procEnv
		return e2e.StartProc(b, env.dir, name, cmd)
	}
	// Its own deadline per command: fb.cli is used after this function
	// returns (and its ctx ends).
	fb.cli = func(args ...string) []byte {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := env.srv.Command(ctx, fb.bin, append(args, "--timeout", "60s")...)
		cmd.Env = procEnv
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			b.Fatalf("fleetboot %v: %v\n%s%s", args, err, out, stderr)
		}
		return out
	}
	store := o.store
	if store == "" {
		store = "dir://" + filepath.Join(env.dir, "store")
	}
	fb.coord = run("coordinator", "coordinator", "--data", filepath.Join(env.dir, "coord"), "--nats-listen", "127.0.0.1:4222",
		"--store", store)
	waitAPI(b, fb.coord)
	subnet := o.subnet
	if subnet == "" {
		subnet = env.prefix
	}
	// Unknown MACs get an address and an exit script: every client of a
	// load test is a new machine.
	site := []string{"site", "add", "lab", "--subnet", subnet, "--unknown", "exit"}
	if o.pool != "" {
		site = append(site, "--range", o.pool)
	}
	fb.cli(site...)
	if len(o.images) > 0 {
		small := filepath.Join(env.dir, "initrd")
		if err := os.WriteFile(small, []byte("bench initrd"), 0o644); err != nil {
			b.Fatal(err)
		}
		for i, im := range o.images {
			fb.cli("image", "add", im.name, "--kernel", im.kernel, "--initrd", small, "--cmdline", "console=ttyS0")
			if !o.assignLater {
				fb.cli("host", "set", benchHostMAC(i), "--image", im.name)
			}
		}
	}
	args := []string{"edge", "--coordinator", "nats://127.0.0.1:4222", "--name", "bench", "--site", "lab",
		"--state-dir", filepath.Join(env.dir, "edge-state"), "--cache-dir", filepath.Join(env.dir, "edge-cache"),
		"--http-listen", env.addr + ":8080", "--tftp-listen", env.addr + ":69"}
	if o.dhcp {
		// dnsmasq and Kea run without their ping check too.
		args = append(args, "--interface", "eth0", "--conflict-check=false")
	}
	if o.bootDir != "" {
		args = append(args, "--boot-dir", o.bootDir)
	}
	args = append(args, o.args...)
	fb.edge = run("edge", args...)
	for _, re := range []string{`state in sync.*bucket=(images|hosts)`, `state in sync.*bucket=sites`} {
		if _, err := fb.edge.WaitFor(ctx, regexp.MustCompile(re)); err != nil {
			b.Fatalf("edge: %v", err)
		}
	}
	port, proto := 8080, "tcp"
	if o.dhcp {
		port, proto = 67, "udp"
	}
	waitPort(b, env.srv.NS, fb.edge, proto, port)
	if o.dhcp {
		// The socket is bound before the edge's start-up probe for other
		// DHCP servers (4 s) ends: the edge answers only once it logs
		// this. Machines powered on before it waited the probe out (2.5 s
		// in every storm machine's firmware DHCP, the storm's slowest
		// step, until the storm waited too).
		if _, err := fb.edge.WaitFor(ctx, regexp.MustCompile(`msg="dhcp: serving"`)); err != nil {
			b.Fatalf("edge: %v", err)
		}
	}
	return fb
}

// waitAPI waits until the coordinator answers its API: NATS listening is
// not enough, the API subscribes after the buckets are set up.
func waitAPI(b *testing.B, coord *e2e.Proc) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := coord.WaitFor(ctx, regexp.MustCompile(`coordinator API serving`)); err != nil {
		b.Fatalf("coordinator: %v\n%s", err, coord.Output())
	}
}

// waitPort waits until something listens on port in the namespace, and
// fails at once if p exits first.
func waitPort(b *testing.B, ns string, p *e2e.Proc, proto string, port int) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() {
		select {
		case <-p.Exited():
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := e2e.WaitListening(ctx, ns, proto, port); err != nil {
		b.Fatalf("%s: %v\n%s", p.Name, err, p.Output())
	}
}

// get fetches url from the client host, checks the status and length, and
// returns the time to the first body byte and the total time.
func get(client *http.Client, url string, size int64) (ttfb, total time.Duration, err error) {
	start := time.Now()
	resp, err := client.Get(url)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, 0, &httpError{url: url, status: resp.Status, body: string(body)}
	}
	var one [1]byte
	if _, err := io.ReadFull(resp.Body, one[:]); err != nil {
		return 0, 0, err
	}
	ttfb = time.Since(start)
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return 0, 0, err
	}
	if n+1 != size {
		return 0, 0, &httpError{url: url, status: resp.Status, body: "short body"}
	}
	return ttfb, time.Since(start), nil
}

type httpError struct{ url, status, body string }

func (e *httpError) Error() string { return "GET " + e.url + ": " + e.status + ": " + e.body }
