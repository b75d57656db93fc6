package dhcp

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/proto"
)

// FuzzParse feeds arbitrary bytes through packet parsing and the handler in
// every mode: whatever arrives on port 67 or 4011, the edge must not panic,
// and it never hands out an address outside the ranges and reservations.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.hex"))
	for _, file := range files {
		f.Add(readHex(f, file))
	}
	f.Add(pkt(f, dhcpv4.MessageTypeRequest, knownMAC, requested("10.0.0.100"), serverID(edgeIP)).ToBytes())
	f.Add(pkt(f, dhcpv4.MessageTypeDiscover, knownMAC, dhcpv4.WithGatewayIP(net.ParseIP("10.1.0.1"))).ToBytes())
	f.Add([]byte{})

	var handlers []*Handler
	for _, mode := range []string{proto.DHCPFull, proto.DHCPProxy, proto.DHCPReservations} {
		st := state.New()
		st.SetSite(testSite(mode, proto.UnknownDiscover))
		st.PutHost(proto.Host{MAC: knownMAC, Site: "lab", IP: "10.0.0.20", State: proto.StateBoot})
		l, _ := OpenLeases("")
		h, err := NewHandler(HandlerConfig{ServerIP: net.ParseIP(edgeIP), HTTPBase: httpBase, Policy: st, Leases: l})
		if err != nil {
			f.Fatal(err)
		}
		handlers = append(handlers, h)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := dhcpv4.FromBytes(data)
		if err != nil {
			return
		}
		if _, err := ParseMachine(req); err != nil {
			return
		}
		for _, h := range handlers {
			for _, port := range []int{67, 4011} {
				resp, err := h.Handle(context.Background(), req, Input{Port: port})
				if err != nil || resp == nil {
					continue
				}
				_ = resp.ToBytes()
				yi := resp.YourIPAddr.To4()
				if yi == nil || yi.IsUnspecified() {
					continue
				}
				a, _ := netip.AddrFromSlice(yi)
				inPool := func(lo, hi string) bool {
					return a.Compare(netip.MustParseAddr(lo)) >= 0 && a.Compare(netip.MustParseAddr(hi)) <= 0
				}
				if !inPool("10.0.0.100", "10.0.0.104") && !inPool("10.1.0.50", "10.1.0.60") && a != netip.MustParseAddr("10.0.0.20") {
					t.Fatalf("offered %s, outside every range and reservation", a)
				}
			}
		}
	})
}
