package dhcp

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/proto"
)

// BenchmarkDORA measures full DISCOVER+REQUEST exchanges through the handler
// (no sockets, no conflict probe), with leases in memory and on disk, at a
// site with no hosts and at one with 100 000 hosts with fixed addresses (the
// clients are new machines: the cost of other hosts' reservations).
func BenchmarkDORA(b *testing.B) {
	type bc struct {
		hosts          int
		disk, parallel bool
	}
	var cases []bc
	for _, n := range []int{0, 100_000} {
		cases = append(cases, bc{n, false, false}, bc{n, true, false}, bc{n, true, true})
	}
	for _, tc := range cases {
		disk := tc.disk
		b.Run(fmt.Sprintf("hosts=%d/disk=%v/parallel=%v", tc.hosts, tc.disk, tc.parallel), func(b *testing.B) {
			st := state.New()
			st.SetSite(proto.Site{Name: "lab", DHCP: proto.DHCPFull, Unknown: proto.UnknownDiscover, Networks: []proto.Network{
				{Subnet: "10.0.0.0/16", RangeStart: "10.0.1.0", RangeEnd: "10.0.255.254", Router: "10.0.0.254"},
			}})
			if tc.hosts > 0 {
				for _, h := range scaleHosts(tc.hosts) {
					st.PutHost(h)
				}
			}
			file := ""
			if disk {
				file = filepath.Join(b.TempDir(), "leases.json")
			}
			l, err := OpenLeases(file)
			if err != nil {
				b.Fatal(err)
			}
			h, err := NewHandler(HandlerConfig{ServerIP: net.ParseIP(edgeIP), HTTPBase: httpBase, Policy: st, Leases: l})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			var next atomic.Int64
			dora := func(i int) {
				mac := net.HardwareAddr{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)}
				d, _ := dhcpv4.NewDiscovery(mac)
				off, err := h.Handle(ctx, d, Input{Port: 67})
				if err != nil || off == nil {
					b.Errorf("discover %d: %v %v", i, off, err)
					return
				}
				r, _ := dhcpv4.NewRequestFromOffer(off)
				ack, err := h.Handle(ctx, r, Input{Port: 67})
				if err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
					b.Errorf("request %d: %v %v", i, ack, err)
				}
			}
			b.ResetTimer()
			if !tc.parallel {
				for i := range b.N {
					dora(i)
				}
				return
			}
			// Many clients at once, as when a rack powers on: ACKs share fsyncs.
			b.SetParallelism(64)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					dora(int(next.Add(1)))
				}
			})
		})
	}
}
