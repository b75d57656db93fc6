// Package netnstest builds private networks for tests out of Linux network
// namespaces: a LAN is a bridge inside a namespace of its own with one
// namespace per machine attached by a veth pair, each machine's side named
// "lan0". Nothing is bridged to an interface of the host, and everything a
// test makes is deleted in t.Cleanup, also when the test fails.
package netnstest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fleetboot/fleetboot/test/waitfor"
)

// LanIf is the name of every member's interface on a LAN.
const LanIf = "lan0"

// NeedRoot skips the test in -short mode and unless it runs as root:
// namespaces, bridges and DHCP ports all need it.
func NeedRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("network namespace test skipped in short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("network namespace test needs root")
	}
}

// Run runs a command (ip, dnsmasq, …) and fails the test with its output
// when it fails.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Member is one machine on a LAN.
type Member struct {
	Name string
	Addr string // CIDR, or "" for a DHCP client
	MAC  string // "" for a random one
}

// LAN builds a LAN of the members and returns member name -> namespace.
// prefix starts every namespace name (keep it short: names are at most 15
// characters in some tools' output, and tests run in parallel).
func LAN(t testing.TB, prefix string, members ...Member) map[string]string {
	t.Helper()
	var r [3]byte
	rand.Read(r[:])
	id := hex.EncodeToString(r[:])
	br := prefix + "-br-" + id
	addNS(t, br)
	Run(t, "ip", "-n", br, "link", "add", "br0", "type", "bridge")
	Run(t, "ip", "-n", br, "link", "set", "br0", "up")
	nss := map[string]string{}
	for i, m := range members {
		ns := fmt.Sprintf("%s-%s-%s", prefix, m.Name, id)
		addNS(t, ns)
		port := fmt.Sprintf("p%d", i)
		Run(t, "ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", LanIf, "netns", ns)
		Run(t, "ip", "-n", br, "link", "set", port, "master", "br0", "up")
		if m.MAC != "" {
			Run(t, "ip", "-n", ns, "link", "set", LanIf, "address", m.MAC)
		}
		if m.Addr != "" {
			Run(t, "ip", "-n", ns, "addr", "add", m.Addr, "dev", LanIf)
		}
		Run(t, "ip", "-n", ns, "link", "set", LanIf, "up")
		Run(t, "ip", "-n", ns, "link", "set", "lo", "up")
		nss[m.Name] = ns
	}
	return nss
}

func addNS(t testing.TB, ns string) {
	t.Helper()
	Run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
}

// InNS runs fn on an OS thread switched into the namespace ns. Sockets fn
// opens stay in that namespace for their whole life, so a test can serve
// and dial inside it without a helper process; goroutines fn starts run
// outside it.
func InNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: the runtime discards it when this
			// goroutine exits, so no other goroutine runs in the wrong
			// namespace.
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Buffer is an io.Writer safe for a process (or logger) writing and a test
// reading at once.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *Buffer) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// Dnsmasq starts dnsmasq in ns as another DHCP server on the LAN (range
// rangeSpec, e.g. "10.77.0.150,10.77.0.160,255.255.255.0,1h"), waits until
// it serves the range, and stops it at cleanup, printing its log if the
// test failed.
func Dnsmasq(t testing.TB, ns, rangeSpec string) {
	t.Helper()
	logs := &Buffer{}
	cmd := exec.Command("ip", "netns", "exec", ns, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface="+LanIf, "--bind-interfaces", "--dhcp-range="+rangeSpec, "--leasefile-ro", "--user=root",
		"--pid-file="+filepath.Join(t.TempDir(), "pid"), "--log-dhcp", "--log-facility=-")
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
