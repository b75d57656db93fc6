package dhcp

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// ICMPProber finds addresses in use with an ICMP echo. One raw socket is
// opened at construction (in the caller's network namespace) and shared by
// all probes; a reader goroutine hands replies to the waiting probes.
type ICMPProber struct {
	conn    *icmp.PacketConn
	timeout time.Duration
	id      int
	log     *slog.Logger

	mu      sync.Mutex
	seq     uint16
	waiters map[netip.Addr][]chan struct{}
	done    chan struct{}
}

// NewICMPProber opens the raw ICMP socket (needs CAP_NET_RAW, as the DHCP
// server itself needs port 67).
func NewICMPProber(timeout time.Duration, log *slog.Logger) (*ICMPProber, error) {
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("dhcp: conflict probe socket: %w", err)
	}
	var id [2]byte
	rand.Read(id[:])
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &ICMPProber{conn: c, timeout: timeout, id: int(binary.BigEndian.Uint16(id[:])), log: log,
		waiters: map[netip.Addr][]chan struct{}{}, done: make(chan struct{})}
	go p.read()
	return p, nil
}

// Close stops the prober.
func (p *ICMPProber) Close() error {
	err := p.conn.Close()
	<-p.done
	return err
}

func (p *ICMPProber) read() {
	defer close(p.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		msg, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || msg.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := msg.Body.(*icmp.Echo)
		if !ok || echo.ID != p.id {
			continue
		}
		ipa, ok := from.(*net.IPAddr)
		if !ok {
			continue
		}
		a := addr4(ipa.IP)
		p.mu.Lock()
		for _, w := range p.waiters[a] {
			close(w)
		}
		delete(p.waiters, a)
		p.mu.Unlock()
	}
}

// InUse sends one echo request to ip and waits up to the timeout for a reply.
func (p *ICMPProber) InUse(ctx context.Context, ip netip.Addr) (bool, error) {
	w := make(chan struct{})
	p.mu.Lock()
	p.seq++
	seq := p.seq
	p.waiters[ip] = append(p.waiters[ip], w)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		ws := p.waiters[ip]
		for i, x := range ws {
			if x == w {
				p.waiters[ip] = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(p.waiters[ip]) == 0 {
			delete(p.waiters, ip)
		}
		p.mu.Unlock()
	}()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: int(seq), Data: []byte("fleetboot dhcp conflict check")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return false, fmt.Errorf("dhcp: icmp: %w", err)
	}
	if _, err := p.conn.WriteTo(b, &net.IPAddr{IP: ip.AsSlice()}); err != nil {
		return false, fmt.Errorf("dhcp: icmp echo to %s: %w", ip, err)
	}
	t := time.NewTimer(p.timeout)
	defer t.Stop()
	select {
	case <-w:
		return true, nil
	case <-t.C:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// ProbeOtherServers broadcasts a DISCOVER from iface with a random MAC and
// collects the server identifiers of the OFFERs that arrive within wait.
func ProbeOtherServers(ctx context.Context, iface string, wait time.Duration) ([]net.IP, error) {
	conn, err := probeConn(iface)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return probeOn(ctx, conn, iface, wait)
}

// probeConn binds the client port on iface for a probe.
func probeConn(iface string) (*net.UDPConn, error) {
	conn, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{Port: dhcpv4.ClientPort})
	if err != nil {
		return nil, fmt.Errorf("dhcp: probe for other servers on %s: %w", iface, err)
	}
	return conn, nil
}

// probeOn runs the probe on a bound client socket (which it leaves open).
func probeOn(ctx context.Context, conn *net.UDPConn, iface string, wait time.Duration) ([]net.IP, error) {
	mac := make(net.HardwareAddr, 6)
	rand.Read(mac)
	mac[0] = mac[0]&^1 | 2 // unicast, locally administered: never a real NIC
	disc, err := dhcpv4.NewDiscovery(mac, dhcpv4.WithBroadcast(true))
	if err != nil {
		return nil, fmt.Errorf("dhcp: probe: %w", err)
	}
	if _, err := conn.WriteToUDP(disc.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}); err != nil {
		return nil, fmt.Errorf("dhcp: probe: send DISCOVER on %s: %w", iface, err)
	}
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// The deadline is set before the cancel hook: set after, it would
	// overwrite a cancel that landed first, and the probe would run its
	// whole wait.
	conn.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	var found []net.IP
	seen := map[string]bool{}
	buf := make([]byte, 4096)
	for {
		n, peer, err := conn.ReadFromUDP(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return found, nil
			}
			return found, fmt.Errorf("dhcp: probe: %w", err)
		}
		p, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || p.TransactionID != disc.TransactionID || p.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		if p.MessageType() != dhcpv4.MessageTypeOffer {
			continue
		}
		ip := p.ServerIdentifier()
		if ip == nil {
			ip = peer.IP
		}
		if !seen[ip.String()] {
			seen[ip.String()] = true
			found = append(found, ip)
		}
	}
}
