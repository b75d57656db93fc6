package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
//
// Every client is a new machine drawing a never-used address, the path of a
// rack powering on, so the pool is sized to b.N (benchNetwork): Go scales
// b.N past a /16's 65 279 addresses on a fast machine. Releasing each lease
// instead would time a RELEASE (and, on disk, a second lease-file write) per
// client, and once every address had a record each DISCOVER would scan the
// whole range for the longest-released one: a full pool's cost, not DORA's.
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
		b.Run(fmt.Sprintf("hosts=%d/disk=%v/parallel=%v", tc.hosts, tc.disk, tc.parallel), func(b *testing.B) {
			h := benchHandler(b, tc.hosts, tc.disk)
			b.ResetTimer()
			if !tc.parallel {
				for i := range b.N {
					if err := dora(h, i); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			// Many clients at once, as when a rack powers on: ACKs share fsyncs.
			var next atomic.Int64
			var failed atomic.Pointer[error]
			b.SetParallelism(64)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() && failed.Load() == nil {
					if err := dora(h, int(next.Add(1)-1)); err != nil {
						failed.CompareAndSwap(nil, &err) // the first failure; the rest would repeat it b.N times
					}
				}
			})
			if err := failed.Load(); err != nil {
				b.Fatal(*err)
			}
		})
	}
}

// benchHandler is a full-mode handler at a site whose one network
// (benchNetwork) has a fresh address for each of b.N clients, and which has
// hosts registered hosts with fixed addresses outside that network.
func benchHandler(b *testing.B, hosts int, disk bool) *Handler {
	b.Helper()
	nw, server, err := benchNetwork(b.N)
	if err != nil {
		b.Fatal(err)
	}
	st := state.New()
	st.SetSite(proto.Site{Name: "lab", DHCP: proto.DHCPFull, Unknown: proto.UnknownDiscover, Networks: []proto.Network{nw}})
	if hosts > 0 {
		for _, h := range scaleHosts(hosts) {
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
	h, err := NewHandler(HandlerConfig{ServerIP: server.AsSlice(), HTTPBase: httpBase, Policy: st, Leases: l})
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// dora runs client i's DISCOVER and REQUEST through h and checks it is ACKed.
func dora(h *Handler, i int) error {
	ctx := context.Background()
	mac := net.HardwareAddr{0x52, 0x54, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
	d, err := dhcpv4.NewDiscovery(mac)
	if err != nil {
		return fmt.Errorf("client %d: build DISCOVER: %w", i, err)
	}
	off, err := h.Handle(ctx, d, Input{Port: 67})
	if err != nil || off == nil {
		return fmt.Errorf("discover %d: offer %v, err %v", i, off, err)
	}
	r, err := dhcpv4.NewRequestFromOffer(off)
	if err != nil {
		return fmt.Errorf("client %d: build REQUEST: %w", i, err)
	}
	ack, err := h.Handle(ctx, r, Input{Port: 67})
	if err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		return fmt.Errorf("request %d: reply %v, err %v", i, ack, err)
	}
	return nil
}

// benchNetwork returns a network whose dynamic range holds at least n
// addresses, and the edge's address on it. It is a /16 (172.16.0.0/16, the
// size a site's provisioning network has) until n needs more, then the
// smallest wider prefix of 172.16.0.0: 128.0.0.0/1 at most, so it never
// takes in scaleHosts' reservations (10.0.0.0/8), which stay the other
// hosts of the site. The edge is .1 and the router .254 of the first /24;
// the range is the rest but the broadcast address.
func benchNetwork(n int) (proto.Network, netip.Addr, error) {
	const reserved = 256 + 1 // the first /24 (network, edge, router) and the broadcast address
	bits := 16
	for bits > 1 && uint64(1)<<(32-bits) < uint64(n)+reserved {
		bits--
	}
	if uint64(1)<<(32-bits) < uint64(n)+reserved {
		return proto.Network{}, netip.Addr{}, errors.New("dhcp bench: more clients than a /1 has addresses")
	}
	p := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, 0, 0}), bits).Masked()
	base := p.Addr().As4()
	at := func(off uint32) netip.Addr {
		v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3]) + off
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	nw := proto.Network{
		Subnet:     p.String(),
		RangeStart: at(256).String(),
		RangeEnd:   lastAddr(p).Prev().String(),
		Router:     at(254).String(),
	}
	return nw, at(1), nil
}

// TestBenchNetwork: BenchmarkDORA's network has a fresh address for every
// one of b.N clients however far Go scales b.N (a /16 ran out at 65 279), and
// keeps the edge, the router and scaleHosts' reservations out of its range.
func TestBenchNetwork(t *testing.T) {
	outside := []netip.Addr{netip.MustParseAddr("10.0.0.20"), netip.MustParseAddr("10.2.0.0"), netip.MustParseAddr("10.3.134.159")}
	for _, n := range []int{0, 1, 65_279, 65_280, 1 << 20, 1<<24 + 1, 1<<31 - 257} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			nw, server, err := benchNetwork(n)
			if err != nil {
				t.Fatal(err)
			}
			p := netip.MustParsePrefix(nw.Subnet)
			start, end := netip.MustParseAddr(nw.RangeStart), netip.MustParseAddr(nw.RangeEnd)
			router := netip.MustParseAddr(nw.Router)
			if p.Bits() > 16 {
				t.Errorf("%s: narrower than a /16", p)
			}
			if size := rangeSize(start, end); size < uint64(n) {
				t.Errorf("%s: range %s-%s holds %d addresses, want at least %d", p, start, end, size, n)
			}
			pool := &pool{prefix: p, start: start, end: end}
			for _, a := range []netip.Addr{start, end, server, router} {
				if !p.Contains(a) {
					t.Errorf("%s does not contain %s", p, a)
				}
			}
			for _, a := range append([]netip.Addr{p.Addr(), lastAddr(p), server, router}, outside...) {
				if pool.inRange(a) {
					t.Errorf("%s: range %s-%s takes in %s", p, start, end, a)
				}
			}
			for _, a := range outside {
				if p.Contains(a) {
					t.Errorf("%s contains scaleHosts' %s", p, a)
				}
			}
		})
	}
	if _, _, err := benchNetwork(1 << 31); err == nil {
		t.Error("benchNetwork(2^31) found a network: no prefix of 172.16.0.0 has that many addresses")
	}
}

// rangeSize is the number of addresses from start to end, both included.
func rangeSize(start, end netip.Addr) uint64 {
	u := func(a netip.Addr) uint64 {
		b := a.As4()
		return uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
	}
	return u(end) - u(start) + 1
}
