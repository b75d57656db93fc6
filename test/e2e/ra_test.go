package e2e

import (
	"context"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// TestFleetbootEdgeRA: on a segment with no IPv6 router (no RA router
// namespace), a BIOS VM with QEMU's iPXE ROM boots its image, and the edge
// (full mode, --ipv6-ra auto) advertised: every router solicitation the VM
// sent was answered, to the VM. (iPXE solicits unless an advertisement
// arrives first: then the edge's periodic multicast one ended the wait.)
// Without adverts iPXE's IPv6 autoconfiguration would end by timeout,
// about 12-16 s later; that time is the benchmark's to report, not a test's.
func TestFleetbootEdgeRA(t *testing.T) {
	t.Parallel()
	e := startFleetboot(t, fbOptions{dhcpMode: "full", images: []string{"img-a"}, edgeRA: true, edgeArgs: []string{"--verbose"}})
	// Power on after the edge's first multicast advert: the next comes
	// 16 s later, so the VM's wait ends by the answer to its solicitation
	// (a multicast one arriving just as iPXE starts would end it too,
	// which hides the answer path).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.edge.WaitFor(ctx, regexp.MustCompile(`msg="router advertisement sent" .*dst=ff02::1( |$)`)); err != nil {
		t.Fatalf("the edge sent no multicast router advertisement: %v", err)
	}
	mac := RandomMAC()
	e.setHost(t, mac, "--image", "img-a", "--site", site)
	e.boot(t, VMConfig{MAC: mac, Firmware: BIOS}, "img-a")
	e.checkEdgeSaw(t, mac, proto.EventDHCPDiscover, proto.EventDHCPAck, proto.EventScript, proto.EventArtifactEnd)
	ll := linkLocalOf(t, mac)
	lines := strings.Split(e.edgeOutput(), "\n")
	has := func(re string) bool { return slices.ContainsFunc(lines, regexp.MustCompile(re).MatchString) }
	solicited := has(`msg="router solicitation" .*src=` + regexp.QuoteMeta(ll) + `( |$)`)
	answered := has(`msg="router advertisement sent" .*dst=` + regexp.QuoteMeta(ll) + `%eth0`)
	multicast := has(`msg="router advertisement sent" .*dst=ff02::1( |$)`)
	switch {
	case solicited && !answered:
		t.Errorf("the VM (%s) solicited a router and the edge never answered it", ll)
	case !solicited && !multicast:
		t.Errorf("the edge sent no router advertisement at all")
	}
	t.Logf("VM solicited: %v, answered: %v", solicited, answered)
}

// linkLocalOf is the EUI-64 link-local address iPXE takes for mac.
func linkLocalOf(t *testing.T, mac string) string {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		t.Fatalf("MAC %q: %v", mac, err)
	}
	ip := net.IP{0xfe, 0x80, 0, 0, 0, 0, 0, 0, hw[0] ^ 2, hw[1], hw[2], 0xff, 0xfe, hw[3], hw[4], hw[5]}
	return ip.String()
}
