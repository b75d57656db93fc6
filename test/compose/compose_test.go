//go:build compose

package compose

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/natstest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// Host MACs of the two busybox clients, as docker-compose.yml sets them.
const (
	macA = "52:54:00:77:01:01"
	macB = "52:54:00:77:02:01"
)

// stack is one running copy of the top-level docker-compose.yml under its
// own project name.
type stack struct {
	t       *testing.T
	project string
	dir     string   // the repository root, where docker-compose.yml is
	compose []string // "docker-compose" or "docker compose"
	env     []string
}

func (s *stack) run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), s.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func (s *stack) must(name string, args ...string) string {
	s.t.Helper()
	out, err := s.run(name, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func (s *stack) composeCmd(args ...string) (string, error) {
	full := append(slices.Clone(s.compose[1:]), append([]string{"-p", s.project}, args...)...)
	return s.run(s.compose[0], full...)
}

// container returns the container ID of a compose service.
func (s *stack) container(service string) string {
	s.t.Helper()
	out, err := s.composeCmd("ps", "-q", service)
	if err != nil || strings.TrimSpace(out) == "" {
		s.t.Fatalf("no container for service %s: %v %s", service, err, out)
	}
	return strings.TrimSpace(out)
}

// cli runs the fleetboot CLI in a throw-away container on the core network,
// as an admin would from a machine next to the coordinators: over TLS, with
// the admin credentials the first coordinator wrote.
func (s *stack) cli(args ...string) (string, error) {
	full := []string{"run", "--rm", "--network", s.project + "_uplink", "-v", s.project + "_coordinator:/etc/fleetboot:ro",
		"-e", "FLEETBOOT_NATS=tls://nats1:4222,tls://nats2:4222,tls://nats3:4222",
		"-e", "FLEETBOOT_CREDS=/etc/fleetboot/admin.creds", "-e", "FLEETBOOT_TLS_CA=/etc/fleetboot/ca.pem",
		"-e", "FLEETBOOT_S3_ACCESS_KEY=fleetboot", "-e", "FLEETBOOT_S3_SECRET_KEY=fleetboot-demo-secret",
		"fleetboot:dev"}
	return s.run("docker", append(full, args...)...)
}

// volumeFile copies a file out of one of the stack's volumes into dir, as
// whoever holds that volume would have it.
func (s *stack) volumeFile(volume, file, dir string) string {
	s.t.Helper()
	out, err := exec.Command("docker", "run", "--rm", "-v", s.project+"_"+volume+":/v:ro", "fleetboot-init:dev",
		"-c", "cat /v/"+file).Output()
	if err != nil {
		s.t.Fatalf("%s/%s from its volume: %v", volume, file, err)
	}
	p := filepath.Join(dir, volume+"-"+filepath.Base(file))
	if err := os.WriteFile(p, out, 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// bootResult is one BOOTCHECK OK line of a client.
type bootResult struct {
	Lease, Image, SHA256 string
}

var bootRE = regexp.MustCompile(`BOOTCHECK OK mac=(\S+) lease=(\S+) image=(\S*) bytes=(\d+) sha256=([0-9a-f]{64})`)

// bootcheck runs one DHCP + script + kernel fetch on a client.
func (s *stack) bootcheck(client string) (bootResult, error) {
	out, err := s.run("docker", "exec", s.container(client), "bootcheck", "eth0")
	if err != nil {
		return bootResult{}, err
	}
	m := bootRE.FindStringSubmatch(out)
	if m == nil {
		return bootResult{}, fmt.Errorf("bootcheck on %s: %s", client, out)
	}
	return bootResult{Lease: m[2], Image: m[3], SHA256: m[5]}, nil
}

// kernelSHA is the kernel digest the coordinator recorded for an image.
func (s *stack) kernelSHA(image string) string {
	s.t.Helper()
	out, err := s.cli("image", "show", image, "-o", "json")
	if err != nil {
		s.t.Fatal(err)
	}
	var im struct {
		Artifacts []struct{ Role, SHA256 string }
	}
	if err := json.Unmarshal([]byte(out), &im); err != nil {
		s.t.Fatalf("image show %s: %v\n%s", image, err, out)
	}
	for _, a := range im.Artifacts {
		if a.Role == "kernel" {
			return a.SHA256
		}
	}
	s.t.Fatalf("image %s has no kernel: %s", image, out)
	return ""
}

// desired is the desired state as the CLI lists it, for before/after checks.
func (s *stack) desired() (string, error) {
	var b strings.Builder
	for _, what := range []string{"site", "image", "host"} {
		out, err := s.cli(what, "ls", "-o", "json")
		if err != nil {
			return "", err
		}
		var v []map[string]any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			return "", fmt.Errorf("%s ls: %w: %s", what, err, out)
		}
		for _, e := range v {
			delete(e, "updated") // kept, but a timestamp says nothing here
		}
		norm, _ := json.Marshal(v)
		fmt.Fprintf(&b, "%s: %s\n", what, norm)
	}
	return b.String(), nil
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestComposeTwoSites brings up the quick-start stack and walks the outage
// story: both sites boot, site B's edge loses the core network and keeps
// booting its client from its snapshot and cache, a change made meanwhile
// reaches it after the link returns, and losing a NATS node or a
// coordinator loses nothing and stops nothing.
func TestComposeTwoSites(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatal("compose test: docker is not installed; it needs a Docker daemon (this test never passes without one)")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("compose test: no Docker daemon reachable (docker info: %v: %s); it needs one and never passes without it", err, bytes.TrimSpace(out))
	}
	var compose []string
	if _, err := exec.LookPath("docker-compose"); err == nil {
		compose = []string{"docker-compose"}
	} else if exec.Command("docker", "compose", "version").Run() == nil {
		compose = []string{"docker", "compose"}
	} else {
		t.Fatal("compose test: neither docker-compose nor the docker compose plugin is installed")
	}
	for _, im := range []string{"fleetboot:dev", "fleetboot-nats:dev", "fleetboot-minio:dev", "fleetboot-client:dev", "fleetboot-init:dev"} {
		if exec.Command("docker", "image", "inspect", im).Run() != nil {
			t.Fatalf("compose test: image %s missing: run `make images` first", im)
		}
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	natsPort := freePort(t)
	s := &stack{
		t: t, dir: root, compose: compose,
		project: fmt.Sprintf("fbtest%d", os.Getpid()),
		env:     []string{fmt.Sprintf("FLEETBOOT_NATS_PORT=%d", natsPort)},
	}
	t.Cleanup(func() {
		if t.Failed() {
			// The NATS nodes' route chatter would drown the rest.
			out, _ := s.composeCmd("logs", "--no-color", "--tail", "40", "secrets", "init", "coordinator-1", "coordinator-2",
				"leaf-b", "edge-a", "edge-b", "client-a", "client-b", "minio")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := s.composeCmd("down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Errorf("tear down: %v\n%s", err, out)
		}
	})

	start := time.Now()
	if out, err := s.composeCmd("up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	waitfor.Within(t, 6*time.Minute, "init job", func() error {
		out, err := s.run("docker", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", s.container("init"))
		if err != nil {
			return err
		}
		st := strings.TrimSpace(out)
		switch status, _, _ := strings.Cut(st, " "); {
		case st == "exited 0":
			return nil
		case status == "running" || status == "created" || status == "restarting":
			return fmt.Errorf("init is %s", status)
		default:
			logs, _ := s.composeCmd("logs", "--no-color", "init")
			t.Fatalf("init job ended %q:\n%s", st, logs)
		}
		return nil
	})
	shaDemo, shaDemo2 := s.kernelSHA("demo"), s.kernelSHA("demo2")
	if shaDemo == shaDemo2 {
		t.Fatal("demo and demo2 have the same kernel: the convergence check could not tell them apart")
	}

	// Both sites' clients get a lease from their own edge and fetch the
	// script and the kernel of image demo.
	for _, c := range []struct{ client, subnet string }{{"client-a", "10.77.1."}, {"client-b", "10.77.2."}} {
		waitfor.Within(t, 3*time.Minute, c.client+" boots", func() error {
			r, err := s.bootcheck(c.client)
			if err != nil {
				return err
			}
			if d := cmp.Diff(bootResult{Lease: r.Lease, Image: "demo", SHA256: shaDemo}, r); d != "" || !strings.HasPrefix(r.Lease, c.subnet) {
				return fmt.Errorf("lease %s (want %sx), boot (-want +got):\n%s", r.Lease, c.subnet, d)
			}
			return nil
		})
	}
	t.Logf("TIMING stack up (compose up to both clients booted): %s", time.Since(start).Round(100*time.Millisecond))

	// Site B's edge reaches the cluster only through its leaf node: it is
	// given 127.0.0.1 alone, and the cluster has its heartbeat.
	waitfor.Within(t, 2*time.Minute, "both edges' heartbeats at the coordinators", func() error {
		out, err := s.cli("edge", "ls", "-o", "json")
		if err != nil {
			return err
		}
		var edges []struct {
			Name, Site string
			Stale      bool
		}
		if err := json.Unmarshal([]byte(out), &edges); err != nil {
			return fmt.Errorf("edge ls: %w: %s", err, out)
		}
		var fresh []string
		for _, e := range edges {
			if !e.Stale {
				fresh = append(fresh, e.Site+"/"+e.Name)
			}
		}
		slices.Sort(fresh)
		if d := cmp.Diff([]string{"site-a/edge-a", "site-b/edge-b"}, fresh); d != "" {
			return fmt.Errorf("fresh edges (-want +got):\n%s", d)
		}
		return nil
	})
	if logs, _ := s.composeCmd("logs", "--no-color", "leaf-b"); !strings.Contains(logs, "Leafnode connection created") {
		t.Errorf("leaf-b made no leaf node connection:\n%s", logs)
	}

	s.checkSecured(natsPort)

	// Site B's edge loses the core network (NATS, MinIO, coordinators):
	// its box, whose network namespace the leaf node owns, loses the uplink.
	edgeB := s.container("leaf-b")
	s.must("docker", "network", "disconnect", s.project+"_uplink", edgeB)
	// Meanwhile an admin moves site B's client to demo2.
	if _, err := s.cli("host", "set", macB, "--image", "demo2"); err != nil {
		t.Fatal(err)
	}
	// The cut-off edge still boots its client, from what it knew.
	for range 3 {
		r, err := s.bootcheck("client-b")
		if err != nil {
			t.Fatalf("site B while its edge is cut off: %v", err)
		}
		if d := cmp.Diff(bootResult{Lease: r.Lease, Image: "demo", SHA256: shaDemo}, r); d != "" {
			t.Fatalf("site B while cut off (-want +got):\n%s", d)
		}
	}
	// Link back: the edge converges on the change made during the outage.
	s.must("docker", "network", "connect", s.project+"_uplink", edgeB)
	took := waitfor.Within(t, 3*time.Minute, "site B converges after reconnection", func() error {
		r, err := s.bootcheck("client-b")
		if err != nil {
			return err
		}
		if d := cmp.Diff(bootResult{Lease: r.Lease, Image: "demo2", SHA256: shaDemo2}, r); d != "" {
			return fmt.Errorf("(-want +got):\n%s", d)
		}
		return nil
	})
	t.Logf("TIMING edge convergence after reconnection: %s", took.Round(100*time.Millisecond))

	// Losing one of three NATS nodes loses no desired state and stops nothing.
	before, err := s.desired()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := s.composeCmd("stop", "-t", "5", "nats2"); err != nil {
		t.Fatalf("stop nats2: %v\n%s", err, out)
	}
	waitfor.Within(t, time.Minute, "desired state after losing nats2", func() error {
		after, err := s.desired()
		if err != nil {
			return err
		}
		if d := cmp.Diff(before, after); d != "" {
			return fmt.Errorf("desired state changed (-before +after):\n%s", d)
		}
		return nil
	})
	waitfor.Within(t, time.Minute, "host set after losing nats2", func() error {
		_, err := s.cli("host", "set", "52:54:00:77:01:99", "--site", "site-a", "--image", "demo")
		return err
	})
	if r, err := s.bootcheck("client-a"); err != nil || r.Image != "demo" {
		t.Fatalf("site A after losing nats2: %+v %v", r, err)
	}

	// Losing one coordinator: the other answers the CLI (same queue group).
	if out, err := s.composeCmd("stop", "-t", "5", "coordinator-1"); err != nil {
		t.Fatalf("stop coordinator-1: %v\n%s", err, out)
	}
	for i := range 5 {
		if _, err := s.cli("host", "set", fmt.Sprintf("52:54:00:77:02:%02x", 0x90+i), "--site", "site-b", "--image", "demo"); err != nil {
			t.Fatalf("host set with one coordinator left: %v", err)
		}
	}
	out, err := s.cli("host", "ls", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var hosts []struct{ MAC, Site, Image string }
	if err := json.Unmarshal([]byte(out), &hosts); err != nil {
		t.Fatal(err)
	}
	var macs []string
	for _, h := range hosts {
		macs = append(macs, h.MAC)
	}
	want := []string{macA, "52:54:00:77:01:99", macB, "52:54:00:77:02:90", "52:54:00:77:02:91", "52:54:00:77:02:92", "52:54:00:77:02:93", "52:54:00:77:02:94"}
	slices.Sort(want)
	slices.Sort(macs)
	if d := cmp.Diff(want, macs); d != "" {
		t.Errorf("hosts with one NATS node and one coordinator down (-want +got):\n%s", d)
	}
	t.Logf("TIMING compose up to the last check: %s", time.Since(start).Round(100*time.Millisecond))
}

// checkSecured: through the published admin port (nats1, TLS), a plaintext
// client and a TLS client without credentials are refused, and edge-a's
// credentials (from its box's volume) read site A's hosts but not site B's.
func (s *stack) checkSecured(port int) {
	t := s.t
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := natstest.PlaintextRefused(addr); err != nil {
		t.Errorf("plaintext client: %v", err)
	}
	dir := t.TempDir()
	ca := s.volumeFile("edge-a-conf", "ca.pem", dir)
	url := "tls://" + addr
	if nc, err := nats.Connect(url, nats.RootCAs(ca), nats.NoReconnect(), nats.IgnoreDiscoveredServers()); err == nil {
		nc.Close()
		t.Error("a TLS client without credentials connected")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Errorf("a TLS client without credentials: %v, want an authorization violation", err)
	}

	creds := s.volumeFile("edge-a-conf", "edge.creds", dir)
	violations := make(chan error, 16)
	nc, err := nats.Connect(url, nats.RootCAs(ca), nats.UserCredentials(creds), nats.NoReconnect(), nats.IgnoreDiscoveredServers(),
		nats.CustomInboxPrefix(auth.EdgeInboxPrefix("edge-a")),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
	if err != nil {
		t.Fatalf("edge-a's credentials: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := js.KeyValue(ctx, proto.BucketHosts)
	if err != nil {
		t.Fatalf("edge-a opens the hosts bucket: %v", err)
	}
	own, _ := proto.HostKey("site-a", macA)
	if _, err := kv.Get(ctx, own); err != nil {
		t.Fatalf("edge-a reads its own site's host: %v", err)
	}
	other, _ := proto.HostKey("site-b", macB)
	short, cancelShort := context.WithTimeout(ctx, 5*time.Second)
	defer cancelShort()
	if e, err := kv.Get(short, other); err == nil {
		t.Fatalf("edge-a read site B's host %s: %s", other, e.Value())
	}
	// The server says why: a permission violation naming the subject.
	select {
	case err := <-violations:
		if want := "$KV.hosts." + other; !strings.Contains(strings.ToLower(err.Error()), "permissions violation") || !strings.Contains(err.Error(), want) {
			t.Errorf("edge-a reading site B's host: %v, want a permissions violation on %s", err, want)
		}
	case <-ctx.Done():
		t.Error("edge-a reading site B's host: no permissions violation reported")
	}
}
