package dhcp

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/netnstest"
)

// detailSink records events with their details.
type detailSink struct {
	mu     sync.Mutex
	events []recorded
}

type recorded struct {
	kind, mac string
	detail    map[string]string
}

func (s *detailSink) Emit(kind, mac string, d map[string]string) {
	s.mu.Lock()
	s.events = append(s.events, recorded{kind, mac, d})
	s.mu.Unlock()
}

func (s *detailSink) all() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.events...)
}

// relayConn is a relay agent's socket on port 67 in namespace ns.
func relayConn(t *testing.T, ns string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := netnstest.InNS(ns, func() (err error) {
		c, err = server4.NewIPv4UDPConn(netnstest.LanIf, &net.UDPAddr{Port: dhcpv4.ServerPort})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestNetnsRandomMACFlood: relay A forwards a flood of DISCOVERs from random
// MACs (a site with policy discover answers every one of them); relay B
// forwards a known host's DISCOVER. The known host gets its OFFER, the
// flood gets at most the source's burst of replies, and the events the
// flood leaves are the budget plus a few counted events, not one per
// request.
func TestNetnsRandomMACFlood(t *testing.T) {
	netnstest.NeedRoot(t)
	const (
		flood  = 3000
		burst  = 50
		budget = 10
	)
	nss := netnstest.LAN(t, "fbd", netnstest.Member{Name: "edge", Addr: "10.77.0.1/24"},
		netnstest.Member{Name: "ra", Addr: "10.77.0.2/24"}, netnstest.Member{Name: "rb", Addr: "10.77.0.3/24"})
	netnstest.Run(t, "ip", "-n", nss["ra"], "addr", "add", "10.88.0.1/16", "dev", "lo")
	netnstest.Run(t, "ip", "-n", nss["rb"], "addr", "add", "10.89.0.1/24", "dev", "lo")
	netnstest.Run(t, "ip", "-n", nss["edge"], "route", "add", "10.88.0.0/16", "via", "10.77.0.2")
	netnstest.Run(t, "ip", "-n", nss["edge"], "route", "add", "10.89.0.0/24", "via", "10.77.0.3")
	st := labState(proto.DHCPFull, proto.UnknownDiscover, proto.Host{MAC: knownMAC})
	site, _ := st.Site()
	site.Networks = append(site.Networks,
		// A pool far larger than the flood: replies are bounded by the
		// limit, not by addresses running out.
		proto.Network{Subnet: "10.88.0.0/16", RangeStart: "10.88.1.0", RangeEnd: "10.88.255.254", Router: "10.88.0.1"},
		proto.Network{Subnet: "10.89.0.0/24", RangeStart: "10.89.0.100", RangeEnd: "10.89.0.110", Router: "10.89.0.1"})
	st.SetSite(site)
	ev := &detailSink{}
	e, err := startEdge(t, nss["edge"], st, "", func(c *Config) {
		c.NoConflictCheck = true
		c.Events = ev
		c.SourceBurst, c.SourceRate = burst, 0.001 // the burst, then (for this test) next to nothing
		c.EventBudget = budget
	})
	if err != nil {
		t.Fatal(err)
	}
	edgeAddr := &net.UDPAddr{IP: net.ParseIP("10.77.0.1"), Port: dhcpv4.ServerPort}

	// Relay A counts the replies to the flood until the end marker, which
	// the test sends along the same path once the server has stopped.
	ra := relayConn(t, nss["ra"])
	floodXID := func(i int) dhcpv4.TransactionID {
		return dhcpv4.TransactionID{0xf1, byte(i >> 16), byte(i >> 8), byte(i)}
	}
	endXID := dhcpv4.TransactionID{0xee, 0xee, 0xee, 0xee}
	replies := make(chan int, 1)
	go func() {
		n, buf := 0, make([]byte, 4096)
		for {
			k, _, err := ra.ReadFromUDP(buf)
			if err != nil {
				replies <- -1
				return
			}
			p, err := dhcpv4.FromBytes(buf[:k])
			if err != nil || p.OpCode != dhcpv4.OpcodeBootReply {
				continue
			}
			if p.TransactionID == endXID {
				replies <- n
				return
			}
			if p.TransactionID[0] == 0xf1 {
				n++
			}
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range flood {
		mac := net.HardwareAddr{0x02, byte(rng.Uint32()), byte(rng.Uint32()), byte(i >> 16), byte(i >> 8), byte(i)}
		d, err := dhcpv4.NewDiscovery(mac, dhcpv4.WithGatewayIP(net.ParseIP("10.88.0.1")), dhcpv4.WithBroadcast(false),
			dhcpv4.WithTransactionID(floodXID(i)))
		if err != nil {
			t.Fatal(err)
		}
		d.HopCount = 1
		if _, err := ra.WriteToUDP(d.ToBytes(), edgeAddr); err != nil {
			t.Fatal(err)
		}
	}

	// The known host behind relay B is served.
	rb := &pxeClient{conn: relayConn(t, nss["rb"]), mac: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}}
	disc, _ := dhcpv4.NewDiscovery(rb.mac, dhcpv4.WithGatewayIP(net.ParseIP("10.89.0.1")), dhcpv4.WithBroadcast(false))
	disc.HopCount = 1
	got := rb.exchange(t, disc, edgeAddr, func(rs []*dhcpv4.DHCPv4) bool { return len(rs) > 0 })
	if len(got) == 0 || got[0].MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("the known host behind another relay got no OFFER during the flood: %v", got)
	}

	// Stop the server (every request in flight finishes, counted events
	// are flushed), then send the end marker after the last reply.
	e.stop(t)
	end := dhcpv4.DHCPv4{OpCode: dhcpv4.OpcodeBootReply, TransactionID: endXID, HWType: 1, ClientHWAddr: rb.mac, Options: dhcpv4.Options{}}
	if err := netnstest.InNS(nss["edge"], func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP("10.88.0.1"), Port: dhcpv4.ServerPort})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(end.ToBytes())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	answered := <-replies
	if answered < 0 {
		t.Fatal("relay A's socket failed before the end marker")
	}

	events := ev.all()
	var limited int
	var lines []string
	for _, r := range events {
		if r.kind == proto.EventDHCPRateLimited && r.detail["reason"] == reasonSourceFlood {
			n, _ := strconv.Atoi(r.detail["count"])
			limited += n
		}
		if r.mac == "" || len(lines) < 20 {
			lines = append(lines, fmt.Sprintf("%s %s %v", r.kind, r.mac, r.detail))
		}
	}
	t.Logf("flood of %d: %d replies, %d events, %d counted as rate-limited", flood, answered, len(events), limited)
	if answered > burst {
		t.Errorf("%d replies to a flood of %d random MACs from one relay, want at most the burst %d", answered, flood, burst)
	}
	// The known host's two events, the budget, and one counted event per
	// kind and reason (at most the handful of kinds a DISCOVER causes).
	if maxEvents := 2 + budget + 6; len(events) > maxEvents {
		t.Errorf("%d events for a flood of %d, want at most %d:\n%s", len(events), flood, maxEvents, strings.Join(lines, "\n"))
	}
	if limited == 0 || limited+answered > flood {
		t.Errorf("%d requests counted as rate-limited and %d answered, of %d sent", limited, answered, flood)
	}
}

// TestNetnsRackBehindOneRelay: 200 new machines behind one relay, with the
// default limits, each going through DISCOVER/REQUEST twice (PXE ROM, then
// iPXE), all get their ACKs: the per-source limit leaves a rack powering on
// alone.
func TestNetnsRackBehindOneRelay(t *testing.T) {
	netnstest.NeedRoot(t)
	const machines = 200
	nss := netnstest.LAN(t, "fbd", netnstest.Member{Name: "edge", Addr: "10.77.0.1/24"}, netnstest.Member{Name: "ra", Addr: "10.77.0.2/24"})
	netnstest.Run(t, "ip", "-n", nss["ra"], "addr", "add", "10.88.0.1/16", "dev", "lo")
	netnstest.Run(t, "ip", "-n", nss["edge"], "route", "add", "10.88.0.0/16", "via", "10.77.0.2")
	st := labState(proto.DHCPFull, proto.UnknownDiscover)
	site, _ := st.Site()
	site.Networks = append(site.Networks,
		proto.Network{Subnet: "10.88.0.0/16", RangeStart: "10.88.1.0", RangeEnd: "10.88.255.254", Router: "10.88.0.1"})
	st.SetSite(site)
	if _, err := startEdge(t, nss["edge"], st, "", func(c *Config) { c.NoConflictCheck = true }); err != nil {
		t.Fatal(err)
	}
	edgeAddr := &net.UDPAddr{IP: net.ParseIP("10.77.0.1"), Port: dhcpv4.ServerPort}
	ra := &pxeClient{conn: relayConn(t, nss["ra"])}
	relayed := []dhcpv4.Modifier{dhcpv4.WithGatewayIP(net.ParseIP("10.88.0.1")), dhcpv4.WithBroadcast(false)}
	acks := 0
	for round, extra := range [][]dhcpv4.Modifier{pxe(7), {ipxeUserClass}} {
		for i := range machines {
			ra.mac = net.HardwareAddr{0x02, 0x0a, 0xcc, 0, byte(round), byte(i)}
			disc, _ := dhcpv4.NewDiscovery(ra.mac, join(extra, relayed)...)
			disc.HopCount = 1
			offers := ra.exchangeOnce(t, disc, edgeAddr)
			if offers == nil {
				t.Fatalf("round %d, machine %d: no OFFER (%d ACKs so far)", round, i, acks)
			}
			req, _ := dhcpv4.NewRequestFromOffer(offers, join(extra, relayed)...)
			req.HopCount = 1
			if ack := ra.exchangeOnce(t, req, edgeAddr); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
				t.Fatalf("round %d, machine %d: no ACK (%d ACKs so far)", round, i, acks)
			}
			acks++
		}
	}
	if acks != 2*machines {
		t.Fatalf("%d ACKs, want %d", acks, 2*machines)
	}
}

// exchangeOnce sends req once and returns the first reply with its xid
// (nil after 5 s: the server dropped it; a retry would hide a refusal).
func (c *pxeClient) exchangeOnce(t *testing.T, req *dhcpv4.DHCPv4, dst *net.UDPAddr) *dhcpv4.DHCPv4 {
	t.Helper()
	if _, err := c.conn.WriteToUDP(req.ToBytes(), dst); err != nil {
		t.Fatal(err)
	}
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		n, _, err := c.conn.ReadFromUDP(buf)
		if err != nil {
			return nil
		}
		if p, err := dhcpv4.FromBytes(buf[:n]); err == nil && p.OpCode == dhcpv4.OpcodeBootReply && p.TransactionID == req.TransactionID {
			return p
		}
	}
}

func TestSourceLimits(t *testing.T) {
	cases := []struct {
		name      string
		rate      float64
		burst     int
		wantRate  float64
		wantBurst int
	}{
		{"defaults", 0, 0, DefaultSourceRate, DefaultSourceBurst},
		{"rate set, default burst", 10, 0, 10, DefaultSourceBurst},
		{"both set", 10, 30, 10, 30},
		{"negative rate: no limit", -1, 30, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, b := sourceLimits(tc.rate, tc.burst)
			if r != tc.wantRate || b != tc.wantBurst {
				t.Errorf("sourceLimits(%v, %d) = %v, %d; want %v, %d", tc.rate, tc.burst, r, b, tc.wantRate, tc.wantBurst)
			}
		})
	}
}
