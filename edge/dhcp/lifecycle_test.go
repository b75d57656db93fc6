package dhcp

import (
	"net"
	"testing"

	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/test/netnstest"
)

// Close releases what NewServer opened when Serve never runs (a later step
// of the edge's start-up failed): the server ports, the client port held for
// a deferred probe (no site known yet) and the ICMP prober's raw socket.
func TestNetnsCloseReleasesSockets(t *testing.T) {
	netnstest.NeedRoot(t)
	nss := netnstest.LAN(t, "fbd", netnstest.Member{Name: "edge", Addr: "10.77.0.1/24"})
	err := netnstest.InNS(nss["edge"], func() error {
		srv, err := NewServer(Config{Interface: netnstest.LanIf, ServerIP: net.ParseIP("10.77.0.1"), HTTPBase: "http://10.77.0.1:8080", State: state.New()})
		if err != nil {
			return err
		}
		if !srv.ProbePending() {
			t.Error("no site known, yet the probe was not deferred")
		}
		if srv.closer == nil {
			t.Error("no ICMP prober was opened")
		}
		if err := srv.Close(); err != nil {
			return err
		}
		for _, port := range []int{67, 68, 4011} {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
			if err != nil {
				t.Errorf("port %d still bound after Close: %v", port, err)
				continue
			}
			c.Close()
		}
		return srv.Close() // a second Close is harmless
	})
	if err != nil {
		t.Fatal(err)
	}
}
