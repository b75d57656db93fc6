package edge

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sys/unix"

	"github.com/fleetboot/fleetboot/edge/dhcp"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// These tests put the edge's DHCP side in network namespaces the test makes
// (as edge/dhcp's own namespace tests do); nothing leaves them. NATS and
// HTTP stay on the test's loopback.

const lanIf = "lan0"

func needRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("network namespace test skipped in short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("network namespace test needs root")
	}
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newSegment makes namespaces "edge" (10.77.0.1) and "other" (10.77.0.2)
// joined by a veth pair, each side named lan0. They are deleted at cleanup,
// also when the test fails.
func newSegment(t *testing.T) (edgeNS, otherNS string) {
	t.Helper()
	var r [3]byte
	rand.Read(r[:])
	id := hex.EncodeToString(r[:])
	edgeNS, otherNS = "fbe-edge-"+id, "fbe-other-"+id
	for _, ns := range []string{edgeNS, otherNS} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	sh(t, "ip", "-n", edgeNS, "link", "add", lanIf, "type", "veth", "peer", "name", lanIf, "netns", otherNS)
	for ns, addr := range map[string]string{edgeNS: "10.77.0.1/24", otherNS: "10.77.0.2/24"} {
		sh(t, "ip", "-n", ns, "addr", "add", addr, "dev", lanIf)
		sh(t, "ip", "-n", ns, "link", "set", lanIf, "up")
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	return edgeNS, otherNS
}

// inNS runs fn on an OS thread switched into the namespace. Sockets opened by
// fn stay in that namespace; goroutines fn starts run outside it.
func inNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: the runtime discards it.
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// outsideDialer dials NATS from a fresh goroutine, so from the test's own
// namespace even when the agent connects from a thread inside another.
type outsideDialer struct{}

func (outsideDialer) Dial(network, addr string) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := net.DialTimeout(network, addr, 5*time.Second)
		ch <- res{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// dnsmasq runs the site's own DHCP server in ns until the test ends.
func dnsmasq(t *testing.T, ns string) {
	t.Helper()
	dir := t.TempDir()
	logs := &syncBuf{}
	cmd := exec.Command("ip", "netns", "exec", ns, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface="+lanIf, "--bind-interfaces", "--dhcp-range=10.77.0.150,10.77.0.160,255.255.255.0,1h", "--leasefile-ro", "--user=root",
		"--pid-file="+filepath.Join(dir, "pid"), "--log-dhcp", "--log-facility=-")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("dnsmasq log:\n%s", logs.String())
		}
	})
	waitfor.True(t, "dnsmasq serving its range", func() bool { return strings.Contains(logs.String(), "DHCP, IP range") })
}

// A start that fails after DHCP bound its sockets (here: the TFTP port is
// taken) leaves none of them bound: the DHCP ports, and the probe's client
// port of a fresh edge, can be bound again.
func TestNetnsFailedStartReleasesDHCP(t *testing.T) {
	needRoot(t)
	ns, _ := newSegment(t)
	err := inNS(ns, func() error {
		taken, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer taken.Close()
		cfg := baseConfig(t)
		cfg.Interface, cfg.ServerIP, cfg.TFTPListen, cfg.BootDir = lanIf, net.IPv4(10, 77, 0, 1), taken.LocalAddr().String(), t.TempDir()
		os.WriteFile(filepath.Join(cfg.BootDir, "undionly.kpxe"), []byte("x"), 0o644)
		if err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "tftp") {
			return fmt.Errorf("start with the TFTP port taken = %v; want a TFTP error", err)
		}
		for _, port := range []int{67, 68, 4011} {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
			if err != nil {
				return fmt.Errorf("DHCP socket still bound after the failed start: %w", err)
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A fresh edge (no snapshot) learns its site's mode from the first sync; in
// full mode it must then refuse to run next to another DHCP server, as an
// edge restarted with a snapshot does.
func TestNetnsFreshEdgeProbesOnceModeKnown(t *testing.T) {
	needRoot(t)
	edgeNS, otherNS := newSegment(t)
	dnsmasq(t, otherNS)
	for _, tc := range []struct {
		mode   string
		refuse bool
	}{{proto.DHCPFull, true}, {proto.DHCPProxy, false}} {
		t.Run(tc.mode, func(t *testing.T) {
			ns, fc := startNATS(t)
			fc.put(proto.BucketSites, "lab", proto.Site{V: 1, Name: "lab", DHCP: tc.mode, Networks: []proto.Network{{
				Subnet: "10.77.0.0/24", RangeStart: "10.77.0.100", RangeEnd: "10.77.0.120"}}})
			cfg := baseConfig(t)
			cfg.NATSURL, cfg.NATSOptions = ns.ClientURL(), []nats.Option{nats.SetCustomDialer(outsideDialer{})}
			cfg.Interface, cfg.ServerIP = lanIf, net.IPv4(10, 77, 0, 1)
			logs := &syncBuf{}
			cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- inNS(edgeNS, func() error { return Run(ctx, cfg) }) }()
			defer func() {
				if t.Failed() {
					t.Logf("edge log:\n%s", logs.String())
				}
			}()
			if !tc.refuse {
				// It probed (and names dnsmasq) once the mode was known, and
				// runs beside it.
				waitfor.Within(t, time.Minute, "the probe's warning", func() error {
					select {
					case err := <-done:
						t.Fatalf("proxy mode next to another server stopped: %v", err)
					default:
					}
					if !strings.Contains(logs.String(), "server=10.77.0.2 mode=proxy") {
						return errors.New("not logged yet")
					}
					return nil
				})
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("proxy mode next to another server: %v", err)
				}
				return
			}
			var err error
			waitfor.Within(t, time.Minute, "the fresh edge to refuse to run next to dnsmasq", func() error {
				select {
				case err = <-done:
					return nil
				default:
					return errors.New("still running in full mode next to another DHCP server")
				}
			})
			if !errors.Is(err, dhcp.ErrOtherServer) || !strings.Contains(err.Error(), "10.77.0.2") {
				t.Fatalf("fresh edge in full mode next to dnsmasq: %v; want a refusal naming 10.77.0.2", err)
			}
		})
	}
}
