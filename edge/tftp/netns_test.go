package tftp

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// inNS runs fn on an OS thread switched into the namespace ns; sockets fn
// opens stay in it.
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
			errc <- fmt.Errorf("setns back: %w", err) // the thread stays locked: the runtime discards it
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// An address the library cannot serve on (a link-local IPv6 address with a
// zone: it cannot tell the socket's IP family) stops Serve at once with the
// error, instead of leaving it blocked, TFTP dead, until the edge stops.
func TestNetnsServeLibraryRefusalReturnsAtOnce(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("network namespace test needs root")
	}
	var r [3]byte
	rand.Read(r[:])
	ns := "fbt-tftp-" + hex.EncodeToString(r[:])
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1"},
		{"-n", ns, "addr", "add", "fe80::1/64", "dev", "d0", "nodad"},
		{"-n", ns, "link", "set", "d0", "up"},
		{"-n", ns, "link", "set", "d1", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			exec.Command("ip", "netns", "del", ns).Run()
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if args[0] == "netns" {
			t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		}
	}
	s := lifecycleServer(t, "[fe80::1%d0]:0")
	if err := inNS(ns, func() error { _, err := s.Listen(); return err }); err != nil {
		t.Fatalf("Listen on a zoned link-local address: %v", err)
	}
	// serveResult uses a context nobody cancels.
	if err := serveResult(t, s); err == nil || !strings.HasPrefix(err.Error(), "tftp: ") {
		t.Fatalf("Serve = %v; want the library's refusal as a tftp error", err)
	}
}
