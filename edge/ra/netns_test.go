package ra

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv6"

	"github.com/fleetboot/fleetboot/test/netnstest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// These tests run the sender in a network namespace the test makes and a
// peer machine in another on the same LAN; nothing leaves them.

// linkLocal waits until the namespace's LAN interface has a link-local
// address that is no longer tentative (duplicate address detection takes
// a moment after the link comes up) and returns it.
func linkLocal(t *testing.T, ns string) net.IP {
	t.Helper()
	var ip net.IP
	waitfor.OK(t, "a usable link-local address in "+ns, func() error {
		out, err := exec.Command("ip", "-n", ns, "-6", "-o", "addr", "show", "dev", netnstest.LanIf, "scope", "link").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		s := string(out)
		if strings.Contains(s, "tentative") || !strings.Contains(s, "inet6 fe80::") {
			return errors.New(s)
		}
		f := strings.Fields(s[strings.Index(s, "inet6 "):])
		ip, _, err = net.ParseCIDR(f[1])
		return err
	})
	return ip
}

// startSender runs a Sender in ns until the test ends.
func startSender(t *testing.T, ns string, cfg Config) (*Sender, *netnstest.Buffer) {
	t.Helper()
	logs := &netnstest.Buffer{}
	cfg.Interface, cfg.Logger = netnstest.LanIf, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var s *Sender
	if err := netnstest.InNS(ns, func() (err error) { s, err = New(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("sender log:\n%s", logs.String())
		}
	})
	return s, logs
}

// received is an advertisement a peer received.
type received struct {
	msg      []byte
	hopLimit int
	dst, src net.IP
}

// solicit sends router solicitations from the peer (as iPXE does: from its
// link-local address, with its link-layer address, to all-routers) and
// returns the first n advertisements unicast back to it: answers to its
// solicitations, not the sender's periodic multicast ones.
func solicit(t *testing.T, ns string, from net.IP, n int) []received {
	t.Helper()
	var got []received
	err := netnstest.InNS(ns, func() error {
		ifi, err := net.InterfaceByName(netnstest.LanIf)
		if err != nil {
			return err
		}
		c, err := net.ListenPacket("ip6:ipv6-icmp", "::")
		if err != nil {
			return err
		}
		defer c.Close()
		pc := ipv6.NewPacketConn(c)
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeRouterAdvertisement)
		if err := pc.SetICMPFilter(&f); err != nil {
			return err
		}
		if err := pc.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst|ipv6.FlagSrc, true); err != nil {
			return err
		}
		pc.SetMulticastHopLimit(255)
		pc.SetMulticastInterface(ifi)
		rs := append([]byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 1}, ifi.HardwareAddr...)
		buf := make([]byte, 1500)
		// Bounded: 60 rounds of at most a second each.
		for round := 0; round < 60 && len(got) < n; round++ {
			cm := &ipv6.ControlMessage{Src: from, IfIndex: ifi.Index}
			if _, err := pc.WriteTo(rs, cm, &net.IPAddr{IP: net.IPv6linklocalallrouters, Zone: ifi.Name}); err != nil {
				return fmt.Errorf("send solicitation: %w", err)
			}
			pc.SetReadDeadline(time.Now().Add(time.Second))
			for len(got) < n {
				m, rcm, _, err := pc.ReadFrom(buf)
				if err != nil {
					break // deadline: solicit again
				}
				if rcm == nil || !rcm.Dst.Equal(from) {
					continue // a multicast advertisement
				}
				got = append(got, received{msg: append([]byte{}, buf[:m]...), hopLimit: rcm.HopLimit, dst: rcm.Dst, src: rcm.Src})
				break
			}
		}
		if len(got) < n {
			return fmt.Errorf("%d of %d solicitations answered", len(got), n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// A machine's router solicitation is answered, to it, with an advertisement
// that does not make the edge its router: hop limit 255, router lifetime 0,
// no M or O flag (iPXE would wait for DHCPv6), no prefix; and the peer's
// Linux, which takes advertisements (accept_ra), installs no default route
// and no address from it.
func TestNetnsAnswersSolicitation(t *testing.T) {
	netnstest.NeedRoot(t)
	nss := netnstest.LAN(t, "fbra", netnstest.Member{Name: "edge", Addr: "10.78.0.1/24"}, netnstest.Member{Name: "peer", Addr: "10.78.0.2/24"})
	edgeLL := linkLocal(t, nss["edge"])
	peerLL := linkLocal(t, nss["peer"])
	if out := netnstest.Run(t, "ip", "netns", "exec", nss["peer"], "sysctl", "-n", "net.ipv6.conf.lan0.accept_ra"); strings.TrimSpace(out) == "0" {
		t.Fatal("the peer ignores router advertisements: the route check below would prove nothing")
	}
	startSender(t, nss["edge"], Config{})

	// Two answers: the kernel handles the first completely (routes,
	// addresses) before it takes in the second.
	for i, r := range solicit(t, nss["peer"], peerLL, 2) {
		if !r.src.Equal(edgeLL) {
			t.Errorf("answer %d from %v, want the edge's link-local %v", i, r.src, edgeLL)
		}
		if r.hopLimit != 255 {
			t.Errorf("answer %d: hop limit %d, want 255", i, r.hopLimit)
		}
		if len(r.msg) < 16 || r.msg[0] != 134 {
			t.Fatalf("answer %d is not a router advertisement: % x", i, r.msg)
		}
		if lt := binary.BigEndian.Uint16(r.msg[6:]); lt != 0 {
			t.Errorf("answer %d: router lifetime %d s, want 0", i, lt)
		}
		if r.msg[5]&(flagManaged|flagOther) != 0 {
			t.Errorf("answer %d: flags %#x, want M and O clear", i, r.msg[5])
		}
		for o := r.msg[16:]; len(o) >= 8 && o[1] > 0 && int(o[1])*8 <= len(o); o = o[int(o[1])*8:] {
			if o[0] != optSourceLinkAddr {
				t.Errorf("answer %d carries option %d; want only the source link-layer address", i, o[0])
			}
		}
	}
	if routes := netnstest.Run(t, "ip", "-n", nss["peer"], "-6", "route", "show"); strings.Contains(routes, "default") || strings.Contains(routes, "proto ra") {
		t.Errorf("the peer took a route from the advertisement:\n%s", routes)
	}
	if addrs := netnstest.Run(t, "ip", "-n", nss["peer"], "-6", "addr", "show", "scope", "global"); strings.TrimSpace(addrs) != "" {
		t.Errorf("the peer configured an address from the advertisement:\n%s", addrs)
	}
}

// Another router advertising on the segment (here with a router lifetime,
// as a real one does) makes the sender stand down: iPXE takes the first
// advertisement it hears, and ours would keep the real router's prefix and
// DHCPv6 flags from it.
func TestNetnsStandsDownForAnotherRouter(t *testing.T) {
	netnstest.NeedRoot(t)
	nss := netnstest.LAN(t, "fbrr", netnstest.Member{Name: "edge", Addr: "10.78.0.1/24"}, netnstest.Member{Name: "rtr", Addr: "10.78.0.254/24"})
	linkLocal(t, nss["edge"])
	linkLocal(t, nss["rtr"])
	s, logs := startSender(t, nss["edge"], Config{})
	if !s.active() {
		t.Fatal("sender inactive before any other router advertised")
	}
	// The other router's socket, opened in its namespace, used from here.
	var pc *ipv6.PacketConn
	var ifi *net.Interface
	err := netnstest.InNS(nss["rtr"], func() (err error) {
		if ifi, err = net.InterfaceByName(netnstest.LanIf); err != nil {
			return err
		}
		c, err := net.ListenPacket("ip6:ipv6-icmp", "::")
		if err != nil {
			return err
		}
		t.Cleanup(func() { c.Close() })
		pc = ipv6.NewPacketConn(c)
		pc.SetMulticastHopLimit(255)
		return pc.SetMulticastInterface(ifi)
	})
	if err != nil {
		t.Fatal(err)
	}
	ra := Advert{RouterLifetime: 1800, SourceLinkAddr: ifi.HardwareAddr}.Marshal()
	waitfor.OK(t, "the sender to notice the other router", func() error {
		if _, err := pc.WriteTo(ra, &ipv6.ControlMessage{IfIndex: ifi.Index}, &net.IPAddr{IP: net.IPv6linklocalallnodes, Zone: ifi.Name}); err != nil {
			return err
		}
		if s.active() {
			return errors.New("still advertising")
		}
		// The sender stops, then says why: wait for both.
		if !strings.Contains(logs.String(), "another IPv6 router advertises") {
			return fmt.Errorf("no warning about the other router:\n%s", logs.String())
		}
		return nil
	})
	if s.active() {
		t.Fatal("the sender still advertises next to another router")
	}
}
