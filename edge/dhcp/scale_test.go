package dhcp

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/fleetboot/fleetboot/proto"
)

// scaleHosts registers n hosts with fixed addresses in 10.0.0.0/24's
// neighbours (10.2.0.0/16 and up), so none of them is in the pool the test
// client draws from, plus one known host with a reservation in 10.0.0.0/24.
func scaleHosts(n int) []proto.Host {
	hs := make([]proto.Host, 0, n+1)
	for i := range n {
		hs = append(hs, proto.Host{
			MAC: fmt.Sprintf("02:00:00:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i)),
			IP:  fmt.Sprintf("10.%d.%d.%d", 2+i>>16, byte(i>>8), byte(i)),
		})
	}
	return append(hs, proto.Host{MAC: knownMAC, IP: "10.0.0.20"})
}

// TestDiscoverCostIndependentOfHosts counts the allocations of one
// DISCOVER (a known host with a reservation, and an unknown MAC drawing from
// the pool) at a site of 10 hosts and at one of 100 000: the handler must
// not walk the site's hosts per request, so the counts are the same.
func TestDiscoverCostIndependentOfHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 100 000-host state")
	}
	for _, mac := range []string{knownMAC, strayMAC} {
		t.Run(mac, func(t *testing.T) {
			allocs, bytes := map[int]float64{}, map[int]uint64{}
			for _, n := range []int{10, 100_000} {
				f := newFixture(t, testSite(proto.DHCPFull, proto.UnknownDiscover), "", nil, scaleHosts(n)...)
				req := pkt(t, dhcpv4.MessageTypeDiscover, mac)
				discover := func() {
					if resp := f.handle(t, req, 67); resp == nil {
						t.Fatal("no offer")
					}
				}
				allocs[n] = testing.AllocsPerRun(20, discover)
				bytes[n] = allocatedBytes(20, discover)
			}
			// A little slack for map growth in the lease store; a pass over
			// the hosts costs at least a slice of 100 000 hosts.
			if allocs[100_000] > allocs[10]+2 || bytes[100_000] > bytes[10]+1024 {
				t.Errorf("a DISCOVER allocates %.0f times (%d bytes) at 100 000 hosts, %.0f times (%d bytes) at 10: the handler walks the hosts",
					allocs[100_000], bytes[100_000], allocs[10], bytes[10])
			}
		})
	}
}

// allocatedBytes is the mean heap bytes one call of f allocates (after one
// warm-up call), read from the runtime's cumulative counter, which GC does
// not reset.
func allocatedBytes(runs int, f func()) uint64 {
	f()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

// TestPoolFollowsReservations: the pool (one address here) is closed to
// other machines while a host reserves that address, opens when the host's
// reservation moves, and closes again for a new machine once another host
// reserves it.
func TestPoolFollowsReservations(t *testing.T) {
	site := testSite(proto.DHCPFull, proto.UnknownDiscover)
	site.Networks[0].RangeStart, site.Networks[0].RangeEnd = "10.0.0.100", "10.0.0.100"
	f := newFixture(t, site, "", nil, proto.Host{MAC: knownMAC, IP: "10.0.0.100"})
	offered := func(mac string) string {
		t.Helper()
		resp := f.handle(t, pkt(t, dhcpv4.MessageTypeDiscover, mac), 67)
		if resp == nil {
			return "none"
		}
		return resp.YourIPAddr.String()
	}
	steps := []struct {
		name   string
		change func()
		mac    string
		want   string
	}{
		{"reserved to a host: not offered to a stranger", func() {}, strayMAC, "none"},
		{"reserved: offered to its host", func() {}, knownMAC, "10.0.0.100"},
		{"reservation moved: the address is free", func() {
			f.st.PutHost(proto.Host{MAC: knownMAC, IP: "10.0.0.20"})
			f.clk.Add(time.Hour) // the host's offer on it expires
		}, strayMAC, "10.0.0.100"},
		{"the host gets its new address", func() {}, knownMAC, "10.0.0.20"},
		{"reserved to another host: not offered to a new stranger", func() {
			f.st.PutHost(proto.Host{MAC: otherMAC, IP: "10.0.0.100"})
			f.clk.Add(time.Hour) // the stranger's offer expires
		}, "52:54:00:00:00:98", "none"},
		{"host removed: free again", func() { f.st.DeleteHost(otherMAC) }, "52:54:00:00:00:98", "10.0.0.100"},
	}
	for _, st := range steps {
		st.change()
		if got := offered(st.mac); got != st.want {
			t.Errorf("%s: DISCOVER from %s offered %s, want %s", st.name, st.mac, got, st.want)
		}
	}
}
