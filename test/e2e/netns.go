package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/test/netnstest"
)

// RequireRoot skips the test unless it runs as root: namespaces, bridges,
// taps and DHCP ports all need it.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, bridges and taps")
	}
}

// Network is one test's private L2 segment: a namespace ("switch") holding a
// bridge, and other namespaces ("hosts") attached to it by veth pairs. VMs
// attach through taps created in the switch namespace. Nothing is bridged
// to an interface of the host.
type Network struct {
	ID     string // random, part of every namespace name
	Switch string // namespace holding the bridge and the VM taps
	Bridge string // bridge name inside Switch
	Prefix netip.Prefix
	// mu guards the counters: scenarios add VMs and hosts concurrently.
	mu    sync.Mutex
	taps  int
	hosts int
}

// Host is a namespace on the Network with one veth, eth0, in it.
type Host struct {
	Name  string
	NS    string
	Iface string
	Addr  netip.Addr
}

// NewNetwork creates the switch namespace and its bridge for the subnet
// prefix (e.g. 10.77.0.0/24) and deletes everything in t.Cleanup, also when
// the test fails.
func NewNetwork(t testing.TB, prefix string) *Network {
	t.Helper()
	RequireRoot(t)
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		t.Fatalf("e2e: network: %v", err)
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	n := &Network{ID: hex.EncodeToString(b[:]), Bridge: "br0", Prefix: p}
	n.Switch = "fbe2e-" + n.ID + "-sw"
	n.addNS(t, n.Switch)
	// The switch forwards frames only: it has no addresses and no IPv6, so
	// it never answers or advertises anything itself.
	mustIP(t, "-n", n.Switch, "link", "add", n.Bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
	mustRun(t, "ip", "netns", "exec", n.Switch, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	mustIP(t, "-n", n.Switch, "link", "set", n.Bridge, "up")
	return n
}

func (n *Network) addNS(t testing.TB, ns string) {
	t.Helper()
	mustRun(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("e2e: delete netns %s: %v: %s", ns, err, out)
		}
	})
	mustIP(t, "-n", ns, "link", "set", "lo", "up")
}

// AddHost creates a namespace attached to the bridge by a veth whose inner
// end, eth0, has addr (a host address inside the network's prefix). IPv6 is
// off unless ipv6 is non-empty (an address/prefix such as fd77::1/64).
func (n *Network) AddHost(t testing.TB, name string, addr string, ipv6 string) *Host {
	t.Helper()
	a, err := netip.ParseAddr(addr)
	if err != nil || !n.Prefix.Contains(a) {
		t.Fatalf("e2e: host %s: address %q is not inside %s", name, addr, n.Prefix)
	}
	n.mu.Lock()
	n.hosts++
	port := fmt.Sprintf("vh%d", n.hosts)
	n.mu.Unlock()
	h := &Host{Name: name, NS: "fbe2e-" + n.ID + "-" + name, Iface: "eth0", Addr: a}
	n.addNS(t, h.NS)
	mustIP(t, "-n", n.Switch, "link", "add", port, "type", "veth", "peer", "name", h.Iface, "netns", h.NS)
	mustIP(t, "-n", n.Switch, "link", "set", port, "master", n.Bridge, "up")
	if ipv6 == "" {
		mustRun(t, "ip", "netns", "exec", h.NS, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	mustIP(t, "-n", h.NS, "addr", "add", fmt.Sprintf("%s/%d", a, n.Prefix.Bits()), "dev", h.Iface)
	if ipv6 != "" {
		mustIP(t, "-n", h.NS, "addr", "add", ipv6, "dev", h.Iface, "nodad")
	}
	mustIP(t, "-n", h.NS, "link", "set", h.Iface, "up")
	return h
}

// AddTap creates a tap device on the bridge for one VM and returns its name
// (unique inside the switch namespace). QEMU must run in n.Switch to open it.
func (n *Network) AddTap(t testing.TB) string {
	t.Helper()
	n.mu.Lock()
	n.taps++
	tap := fmt.Sprintf("tap%d", n.taps)
	n.mu.Unlock()
	mustIP(t, "-n", n.Switch, "tuntap", "add", "dev", tap, "mode", "tap")
	mustIP(t, "-n", n.Switch, "link", "set", tap, "master", n.Bridge, "up")
	return tap
}

// Command returns a command that runs inside the host's namespace. `ip netns
// exec` execs the program in place, so the command's PID is the program's.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return nsCommand(ctx, h.NS, name, args...)
}

func nsCommand(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// InNS runs fn on an OS thread switched into the namespace ns. Sockets
// created by fn stay in that namespace for their whole life, so the test
// process can serve and dial inside the namespace without a helper process.
func InNS(ns string, fn func() error) error {
	return netnstest.InNS(ns, fn)
}

// Listen opens a listener inside the host's namespace.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := InNS(h.NS, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket (UDP) inside the host's namespace.
func (h *Host) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := InNS(h.NS, func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// DialContext dials from inside the host's namespace.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := InNS(h.NS, func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPClient is an HTTP client whose connections are made inside the host's
// namespace.
func (h *Host) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: h.DialContext}}
}

// WaitListening polls until something listens on port (proto "tcp" or
// "udp") inside the namespace, or the deadline passes.
func WaitListening(ctx context.Context, ns, proto string, port int) error {
	flag := "-Hltn"
	if proto == "udp" {
		flag = "-Hlun"
	}
	for {
		out, err := nsCommand(ctx, ns, "ss", flag, fmt.Sprintf("sport = :%d", port)).Output()
		if err == nil && strings.TrimSpace(string(out)) != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("e2e: nothing listens on %s/%d in %s: %w", proto, port, ns, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func mustIP(t testing.TB, args ...string) {
	t.Helper()
	mustRun(t, "ip", args...)
}

func mustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("e2e: %s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}
