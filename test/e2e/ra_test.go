package e2e

import (
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/fleetboot/fleetboot/proto"
)

// TestFleetbootEdgeRA: on a segment with no IPv6 router (no RA router
// namespace), a BIOS VM with QEMU's iPXE ROM boots its image, and the edge
// (full mode, --ipv6-ra auto) answered the VM's router solicitation: that
// advertisement, not a timeout, ended iPXE's IPv6 autoconfiguration.
func TestFleetbootEdgeRA(t *testing.T) {
	t.Parallel()
	e := startFleetboot(t, fbOptions{dhcpMode: "full", images: []string{"img-a"}, edgeRA: true, edgeArgs: []string{"--verbose"}})
	mac := RandomMAC()
	e.setHost(t, mac, "--image", "img-a", "--site", site)
	e.boot(t, VMConfig{MAC: mac, Firmware: BIOS}, "img-a")
	e.checkEdgeSaw(t, mac, proto.EventDHCPDiscover, proto.EventDHCPAck, proto.EventScript, proto.EventArtifactEnd)
	ll := linkLocalOf(t, mac)
	answered := regexp.MustCompile(`msg="router advertisement sent" .*dst=` + regexp.QuoteMeta(ll) + `%eth0`)
	if !slices.ContainsFunc(strings.Split(e.edgeOutput(), "\n"), answered.MatchString) {
		t.Errorf("the edge sent no router advertisement to the VM (%s)", ll)
	}
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
