package dhcp

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/netnstest"
	"github.com/fleetboot/fleetboot/test/promtest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// hostileCase is input that the DHCP port must drop, with the reason the
// drop is logged under.
type hostileCase struct {
	name   string
	reason string
	pkts   func(t testing.TB, mac string, xid byte) [][]byte
}

// goodHeader is the fixed part (through the magic cookie) of a well-formed
// DISCOVER from mac.
func goodHeader(t testing.TB, mac string, xid byte) []byte {
	p := pkt(t, dhcpv4.MessageTypeDiscover, mac, dhcpv4.WithBroadcast(true))
	p.TransactionID = dhcpv4.TransactionID{0xba, 0xd0, 0, xid}
	return p.ToBytes()[:bootpHeader]
}

// withOptions is a packet of goodHeader followed by raw option bytes.
func withOptions(t testing.TB, mac string, xid byte, opts ...[]byte) []byte {
	b := goodHeader(t, mac, xid)
	for _, o := range opts {
		b = append(b, o...)
	}
	return b
}

var (
	optDiscover = []byte{53, 1, 1}
	optEnd      = []byte{255}
)

func hostname(n int) []byte {
	return append([]byte{12, byte(n)}, bytes.Repeat([]byte{'h'}, n)...)
}

// mutate returns a good DISCOVER with fn applied to its bytes.
func mutate(fn func(b []byte) []byte) func(t testing.TB, mac string, xid byte) [][]byte {
	return func(t testing.TB, mac string, xid byte) [][]byte {
		return [][]byte{fn(withOptions(t, mac, xid, optDiscover, optEnd))}
	}
}

func hostileCases() []hostileCase {
	return []hostileCase{
		{"short packet", reasonTruncated, mutate(func(b []byte) []byte { return b[:10] })},
		{"truncated header", reasonTruncated, mutate(func(b []byte) []byte { return b[:bootpHeader-1] })},
		{"empty datagram", reasonTruncated, mutate(func(b []byte) []byte { return b[:0] })},
		{"bad magic cookie", reasonCookie, mutate(func(b []byte) []byte { b[236] = 0; return b })},
		{"option length past the end", reasonOptionEnd, func(t testing.TB, mac string, xid byte) [][]byte {
			return [][]byte{withOptions(t, mac, xid, optDiscover, []byte{12, 200, 'a', 'b'})}
		}},
		{"no end option", reasonNoEnd, func(t testing.TB, mac string, xid byte) [][]byte {
			return [][]byte{withOptions(t, mac, xid, optDiscover)}
		}},
		{"datagram longer than the read buffer", reasonOptionEnd, func(t testing.TB, mac string, xid byte) [][]byte {
			// 32 host-name instances of 255 bytes: 8 KiB, cut at 4 KiB mid-option.
			opts := [][]byte{optDiscover}
			for range 32 {
				opts = append(opts, hostname(255))
			}
			return [][]byte{withOptions(t, mac, xid, append(opts, optEnd)...)}
		}},
		{"option overload loop", reasonOverload, func(t testing.TB, mac string, xid byte) [][]byte {
			// Option 52 = 3 (file and sname hold options), and both fields
			// hold option 52 again: a parser that follows overload loops.
			b := withOptions(t, mac, xid, optDiscover, []byte{52, 1, 3}, optEnd)
			for i := 44; i < 236; i += 3 {
				copy(b[i:], []byte{52, 1, 3})
			}
			return [][]byte{b}
		}},
		{"huge hostname", reasonOptionLong, func(t testing.TB, mac string, xid byte) [][]byte {
			// Three instances concatenate (RFC 3396) to 765 bytes.
			return [][]byte{withOptions(t, mac, xid, optDiscover, hostname(255), hostname(255), hostname(255), optEnd)}
		}},
		{"boot reply op", reasonNotRequest, mutate(func(b []byte) []byte { b[0] = 2; return b })},
		{"garbage op", reasonNotRequest, mutate(func(b []byte) []byte { b[0] = 0xee; return b })},
		{"garbage htype", reasonNotRequest, mutate(func(b []byte) []byte { b[1] = 0xee; return b })},
		{"hlen zero", reasonNotRequest, mutate(func(b []byte) []byte { b[2] = 0; return b })},
		{"hlen past chaddr", reasonNotRequest, mutate(func(b []byte) []byte { b[2] = 0xff; return b })},
		{"no message type", reasonNotRequest, func(t testing.TB, mac string, xid byte) [][]byte {
			return [][]byte{withOptions(t, mac, xid, hostname(4), optEnd)}
		}},
	}
}

// TestParsePacketRefuses: what insomniacslk/dhcp refuses and what
// ParseMachine refuses on top, each with its reason; never a panic.
func TestParsePacketRefuses(t *testing.T) {
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, b := range tc.pkts(t, knownMAC, 1) {
				if len(b) > 4096 {
					b = b[:4096] // what the read loop's buffer keeps
				}
				req, reason, err := parsePacket(b)
				if err == nil {
					t.Fatalf("accepted: %s", req.Summary())
				}
				if reason != tc.reason {
					t.Fatalf("reason %q, want %q (err %v)", reason, tc.reason, err)
				}
			}
		})
	}
	// The builders themselves make acceptable packets when not mutated.
	good := withOptions(t, knownMAC, 1, optDiscover, hostname(255), optEnd)
	if _, reason, err := parsePacket(good); err != nil {
		t.Fatalf("a well-formed DISCOVER with a 255-byte host name: %s: %v", reason, err)
	}
}

// TestNetnsHostile sends each hostile packet from a client namespace to the
// real server on port 67, and then a well-formed DISCOVER, which must still
// get its OFFER. The drop must be logged with its reason, and no reply may
// answer the hostile packet. A flood from one MAC then costs one log line.
func TestNetnsHostile(t *testing.T) {
	netnstest.NeedRoot(t)
	const clientMAC = "52:54:00:77:00:0a"
	nss := netnstest.LAN(t, "fbd", netnstest.Member{Name: "edge", Addr: "10.77.0.1/24"}, netnstest.Member{Name: "client", MAC: clientMAC})
	st := labState(proto.DHCPFull, proto.UnknownDiscover)
	reg := prometheus.NewRegistry()
	e, err := startEdge(t, nss["edge"], st, "", func(c *Config) {
		c.NoConflictCheck = true
		c.LogEvery = time.Nanosecond // every drop logged: each case checks its own line
		c.Metrics = reg
	})
	if err != nil {
		t.Fatal(err)
	}
	c := newPXEClient(t, nss["client"], clientMAC)
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}

	// offer sends a well-formed DISCOVER and returns every reply until its
	// OFFER, failing if a reply answers one of the hostile xids.
	good := byte(100)
	offer := func(t *testing.T) {
		t.Helper()
		good++
		disc := pkt(t, dhcpv4.MessageTypeDiscover, clientMAC, dhcpv4.WithBroadcast(true))
		disc.TransactionID = dhcpv4.TransactionID{0x60, 0x0d, 0, good}
		got := c.exchange(t, disc, bcast, func(rs []*dhcpv4.DHCPv4) bool { return len(rs) > 0 })
		if len(got) == 0 {
			t.Fatalf("no OFFER for a well-formed DISCOVER after the hostile input\n%s", e.logs.String())
		}
		if mt := got[0].MessageType(); mt != dhcpv4.MessageTypeOffer {
			t.Fatalf("reply %s, want OFFER", mt)
		}
	}
	waitLog := func(t *testing.T, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(e.logs.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no log line with %s\n%s", want, e.logs.String())
			}
			time.Sleep(10 * time.Millisecond) // polling a log, not waiting for readiness
		}
	}
	offer(t) // the server is up

	for i, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, b := range tc.pkts(t, clientMAC, byte(i)) {
				if _, err := c.conn.WriteToUDP(b, bcast); err != nil {
					t.Fatal(err)
				}
			}
			waitLog(t, fmt.Sprintf("reason=%q", tc.reason))
			offer(t) // exchange ignores replies to other xids; a reply to 0xbad0... would be a bug
		})
	}

	// Every refusal above is on /metrics under its reason, beside the
	// DISCOVERs and OFFERs of the well-formed exchanges.
	// A reply is counted once sent, which its client may see first: wait
	// for the counts.
	offers := float64(good - 100)
	want := map[string]float64{
		"fleetboot_dhcp_requests_total{type=discover}": offers,
		"fleetboot_dhcp_replies_total{type=offer}":     offers,
		"fleetboot_dhcp_handle_seconds_count":          offers,
	}
	for _, tc := range hostileCases() {
		want[fmt.Sprintf("fleetboot_dhcp_dropped_total{reason=%s}", reasonLabel(tc.reason))] = 1
	}
	var got map[string]float64
	waitfor.OK(t, "the exchanges counted", func() error {
		got = gather(t, reg)
		for k, min := range want {
			if got[k] < min {
				return fmt.Errorf("%s = %v, want ≥ %v", k, got[k], min)
			}
		}
		return nil
	})
	if got["fleetboot_dhcp_replies_total{type=nak}"] != 0 {
		t.Errorf("NAKs counted where none were sent: %v", got)
	}

	t.Run("flood from one MAC", func(t *testing.T) {
		e.stop(t)
		reg = prometheus.NewRegistry()
		e, err = startEdge(t, nss["edge"], st, "", func(c *Config) { c.NoConflictCheck = true; c.Metrics = reg })
		if err != nil {
			t.Fatal(err)
		}
		offer(t)
		flood := pkt(t, dhcpv4.MessageTypeDiscover, "52:54:00:66:66:66", dhcpv4.WithBroadcast(true)).ToBytes()
		const n = 500
		for range n {
			if _, err := c.conn.WriteToUDP(flood, bcast); err != nil {
				t.Fatal(err)
			}
		}
		waitLog(t, fmt.Sprintf("reason=%q", reasonClientFlood))
		offer(t) // another MAC is still served
		if got := gather(t, reg)["fleetboot_dhcp_dropped_total{reason=client_flood}"]; got < 1 {
			t.Errorf("client flood drops on /metrics: %v, want ≥ 1", got)
		}
		if got := strings.Count(e.logs.String(), fmt.Sprintf("reason=%q", reasonClientFlood)); got != 1 {
			t.Fatalf("%d log lines for a flood of %d packets, want 1 (rate-limited)\n%s", got, n, e.logs.String())
		}
	})
}

// gather reads reg as /metrics would: name{label=value,...} → value;
// histograms as name_count and name_sum.
func gather(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	v, err := promtest.Values(reg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestGrowReadBuffer: the DHCP sockets get a receive buffer that holds a
// burst (readBufferBytes), past rmem_max when the edge runs as root, as it
// does to bind port 67.
func TestGrowReadBuffer(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	size := func() int {
		rc, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var n int
		var gerr error
		if err := rc.Control(func(fd uintptr) { n, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) }); err != nil || gerr != nil {
			t.Fatal(err, gerr)
		}
		return n
	}
	before := size()
	if err := growReadBuffer(c, readBufferBytes); err != nil {
		t.Fatal(err)
	}
	after := size()
	if after < before {
		t.Errorf("receive buffer shrank from %d to %d bytes", before, after)
	}
	if os.Geteuid() == 0 && after < readBufferBytes {
		t.Errorf("receive buffer is %d bytes as root, want at least %d", after, readBufferBytes)
	}
}
