package edge

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/net/ipv6"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/netnstest"
)

// An edge in full mode, with no --ipv6-ra (auto), answers a machine's
// router solicitation on its DHCP interface with an advertisement that
// names no router (lifetime 0): what ends iPXE's IPv6 wait.
func TestNetnsAgentAdvertisesInFullMode(t *testing.T) {
	netnstest.NeedRoot(t)
	edgeNS, otherNS := newSegment(t)
	ns, fc := startNATS(t)
	fc.put(proto.BucketSites, "lab", proto.Site{V: 1, Name: "lab", DHCP: proto.DHCPFull, Networks: []proto.Network{{
		Subnet: "10.77.0.0/24", RangeStart: "10.77.0.100", RangeEnd: "10.77.0.120"}}})
	cfg := baseConfig(t)
	cfg.NATSURL, cfg.NATSOptions = ns.ClientURL(), []nats.Option{nats.SetCustomDialer(outsideDialer{})}
	cfg.Interface, cfg.ServerIP = netnstest.LanIf, net.IPv4(10, 77, 0, 1)
	logs := &netnstest.Buffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- netnstest.InNS(edgeNS, func() error { return Run(ctx, cfg) }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge: %v", err)
		}
		if t.Failed() {
			t.Logf("edge log:\n%s", logs.String())
		}
	}()

	err := netnstest.InNS(otherNS, func() error {
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
		pc.SetICMPFilter(&f)
		pc.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst, true)
		pc.SetMulticastHopLimit(255)
		pc.SetMulticastInterface(ifi)
		rs := append([]byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 1}, ifi.HardwareAddr...)
		buf := make([]byte, 1500)
		// Bounded: 60 solicitations a second apart (the link-local
		// addresses need a moment for duplicate address detection).
		for round := 0; round < 60; round++ {
			// A send fails while this side's link-local address is tentative.
			pc.WriteTo(rs, &ipv6.ControlMessage{IfIndex: ifi.Index}, &net.IPAddr{IP: net.ParseIP("ff02::2"), Zone: ifi.Name})
			pc.SetReadDeadline(time.Now().Add(time.Second))
			for {
				n, cm, _, err := pc.ReadFrom(buf)
				if err != nil {
					break
				}
				if cm == nil || cm.Dst.IsMulticast() || n < 16 {
					continue // the periodic multicast one: not an answer
				}
				if cm.HopLimit != 255 || binary.BigEndian.Uint16(buf[6:]) != 0 || buf[5] != 0 {
					return fmt.Errorf("answer: hop limit %d, router lifetime %d, flags %#x; want 255, 0, 0",
						cm.HopLimit, binary.BigEndian.Uint16(buf[6:]), buf[5])
				}
				return nil
			}
		}
		return fmt.Errorf("no answer to 60 router solicitations")
	})
	if err != nil {
		t.Fatal(err)
	}
}
