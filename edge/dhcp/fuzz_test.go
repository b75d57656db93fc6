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

// FuzzParse feeds arbitrary bytes through the read loop's packet parsing and
// the handler in every mode: whatever arrives on port 67 or 4011, the edge
// must not panic, refuses with a reason what it drops, and never hands out an
// address outside the ranges and reservations. Seeded with the hostile cases
// of hostile_test.go.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.hex"))
	for _, file := range files {
		f.Add(readHex(f, file))
	}
	f.Add(pkt(f, dhcpv4.MessageTypeRequest, knownMAC, requested("10.0.0.100"), serverID(edgeIP)).ToBytes())
	f.Add(pkt(f, dhcpv4.MessageTypeDiscover, knownMAC, dhcpv4.WithGatewayIP(net.ParseIP("10.1.0.1"))).ToBytes())
	f.Add([]byte{})
	// Hostile input: short, truncated, options past the end, no End,
	// overload loops, a huge host name, garbage op/htype/hlen.
	for i, tc := range hostileCases() {
		for _, b := range tc.pkts(f, knownMAC, byte(i)) {
			f.Add(b)
		}
	}

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
		if len(data) > 4096 {
			data = data[:4096] // the read loop's buffer
		}
		// The read loop's path: parsePacket refuses, or the handler sees it.
		req, reason, err := parsePacket(data)
		if err != nil {
			if reason == "" {
				t.Fatalf("refused without a reason: %v", err)
			}
			return
		}
		if req.Options.Has(dhcpv4.OptionOptionOverload) {
			t.Fatal("accepted a request with option overload")
		}
		for code, v := range req.Options {
			if len(v) > MaxOptionLen {
				t.Fatalf("accepted option %d of %d bytes", code, len(v))
			}
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
