package tftp

import (
	"strings"
	"testing"

	"github.com/fleetboot/fleetboot/test/netnstest"
)

// An address the library cannot serve on (a link-local IPv6 address with a
// zone: it cannot tell the socket's IP family) stops Serve at once with the
// error, instead of leaving it blocked, TFTP dead, until the edge stops.
func TestNetnsServeLibraryRefusalReturnsAtOnce(t *testing.T) {
	netnstest.NeedRoot(t)
	ns := netnstest.LAN(t, "fbt", netnstest.Member{Name: "tftp", Addr: "10.78.0.1/24"})["tftp"]
	netnstest.Run(t, "ip", "-n", ns, "addr", "add", "fe80::1/64", "dev", netnstest.LanIf, "nodad")
	s := lifecycleServer(t, "[fe80::1%"+netnstest.LanIf+"]:0")
	if err := netnstest.InNS(ns, func() error { _, err := s.Listen(); return err }); err != nil {
		t.Fatalf("Listen on a zoned link-local address: %v", err)
	}
	// serveResult uses a context nobody cancels.
	if err := serveResult(t, s); err == nil || !strings.HasPrefix(err.Error(), "tftp: ") {
		t.Fatalf("Serve = %v; want the library's refusal as a tftp error", err)
	}
}
