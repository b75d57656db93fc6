package agent

import (
	"net"
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNetlinkAddressAndRoute configures loopback in a network namespace of
// its own (the test's thread only, discarded after) with the two rtnetlink
// requests the discovery system makes, and reads the result back from the
// kernel.
func TestNetlinkAddressAndRoute(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The thread never returns to the scheduler's pool: it dies with
		// the goroutine, and its namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		if err := setUp("lo"); err != nil {
			t.Errorf("lo up: %v", err)
			return
		}
		lo, err := net.InterfaceByName("lo")
		if err != nil || lo.Flags&net.FlagUp == 0 {
			t.Errorf("lo: %+v %v", lo, err)
			return
		}
		if err := addAddr(lo.Index, net.ParseIP("10.99.0.5"), 24); err != nil {
			t.Errorf("addAddr: %v", err)
			return
		}
		// Again: REPLACE, as a renewed lease does.
		if err := addAddr(lo.Index, net.ParseIP("10.99.0.5"), 24); err != nil {
			t.Errorf("addAddr again: %v", err)
		}
		addrs, _ := lo.Addrs()
		var got []string
		for _, a := range addrs {
			got = append(got, a.String())
		}
		if !strings.Contains(strings.Join(got, " "), "10.99.0.5/24") {
			t.Errorf("lo addresses %v, want 10.99.0.5/24", got)
		}
		if err := addDefaultRoute(lo.Index, net.ParseIP("10.99.0.1")); err != nil {
			t.Errorf("addDefaultRoute: %v", err)
			return
		}
		routes, err := os.ReadFile("/proc/thread-self/net/route")
		if err != nil {
			t.Errorf("routes: %v", err)
			return
		}
		// Destination 00000000, gateway 10.99.0.1 in little-endian hex.
		if !strings.Contains(string(routes), "lo\t00000000\t0100630A") {
			t.Errorf("no default route via 10.99.0.1 on lo:\n%s", routes)
		}
		if err := addAddr(lo.Index, net.ParseIP("fd00::1"), 64); err == nil {
			t.Error("an IPv6 address was taken")
		}
	}()
	<-done
}
