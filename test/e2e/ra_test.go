package e2e

import (
	"context"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/coordinator/timeline"
	"github.com/fleetboot/fleetboot/proto"
)

// TestFleetbootEdgeRA: on a segment with no IPv6 router (no scenario has
// one), a BIOS VM with QEMU's iPXE ROM boots its image, and the edge (full
// mode, --ipv6-ra auto) advertised: every router solicitation the VM sent
// was answered, to the VM. (iPXE solicits unless an advertisement arrives
// first: then the edge's periodic multicast one ended the wait.) The
// timeline shows no IPv6 wait.
//
// Then the same edge restarts with --ipv6-ra off, the fleet's one boot
// with no advertisements at all: the next VM still boots, after iPXE's
// IPv6 autoconfiguration ends by timeout (about 12-16 s), and the timeline
// tells the operator so. How long the wait costs is the benchmark's to
// report (test/bench BenchmarkBoot), not a test's.
func TestFleetbootEdgeRA(t *testing.T) {
	t.Parallel()
	// --drain 2s: the edge restarts midway; nothing is in flight then.
	e := startFleetboot(t, fbOptions{dhcpMode: "full", images: []string{"img-a"}, edgeArgs: []string{"--verbose", "--drain", "2s"}})
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
	e.checkTimeline(t, mac, "img-a")
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

	// --ipv6-ra off: nothing advertises on the segment any more.
	e.edge.Stop()
	e.edgeArgs = append(slices.Clone(e.edgeArgs), "--ipv6-ra", "off")
	e.startEdge(t, "edge-ra-off", regexp.MustCompile(`state in sync.*bucket=sites`))
	if l := findLine(e.edge.Output(), regexp.MustCompile(`msg="router advertisement sent"|msg="IPv6 router advertisements: `)); l != "" {
		t.Errorf("edge with --ipv6-ra off advertises: %s", l)
	}
	macOff := RandomMAC()
	e.setHost(t, macOff, "--image", "img-a", "--site", site)
	e.boot(t, VMConfig{MAC: macOff, Firmware: BIOS, Name: "no-ra"}, "img-a")
	d := e.waitIPv6Wait(t, macOff)
	t.Logf("timeline of %s with no advertisements: %s", macOff, d.Text)
}

// waitIPv6Wait polls mac's timeline until it diagnoses iPXE's IPv6 wait
// (the events reach the coordinator asynchronously) and returns the
// diagnosis.
func (e *fbEnv) waitIPv6Wait(t *testing.T, mac string) timeline.Diagnosis {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		boots, err := e.timelineOf(mac)
		if waits := ipv6Waits(boots); err == nil && len(waits) > 0 {
			return waits[0]
		}
		select {
		case <-ctx.Done():
			var all []string
			for _, b := range boots {
				all = append(all, strings.Join(bootSteps(b), ", "))
			}
			t.Fatalf("timeline of %s (err %v) does not say iPXE waited for IPv6 on a segment with no advertisements; boots:\n%s", mac, err, strings.Join(all, "\n"))
			return timeline.Diagnosis{}
		case <-time.After(250 * time.Millisecond):
		}
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
