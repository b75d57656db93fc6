package ra

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

const (
	// maxPendingReplies bounds the unicast answers waiting for their
	// random delay; past it one multicast advertisement answers everybody
	// (a boot storm of solicitations costs one packet, not thousands).
	maxPendingReplies = 256
	// foreignHold is how long the sender stays quiet after another router
	// advertised on the segment: that router ends iPXE's wait already, and
	// iPXE takes the first advertisement it hears, so ours (no prefix, no
	// DHCPv6) could only keep the segment's real IPv6 configuration from it.
	foreignHold = 30 * time.Minute
	// inactivePoll is how often an inactive sender checks whether it has
	// become active (the site's DHCP mode arrives with the first sync).
	inactivePoll = 2 * time.Second
)

// Config configures a Sender.
type Config struct {
	Interface string // the DHCP interface
	// Active, when set, says whether to advertise now (the edge's "auto"
	// follows the site's DHCP mode, which may change at run time). nil:
	// always.
	Active    func() bool
	Intervals Intervals
	Logger    *slog.Logger
}

// Sender is the socket adapter: it answers router solicitations and sends
// unsolicited advertisements on one interface.
type Sender struct {
	cfg    Config
	iv     Intervals
	log    *slog.Logger
	ifi    *net.Interface
	conn   *net.IPConn
	pc     *ipv6.PacketConn
	advert []byte

	pending      atomic.Int32
	multicastReq chan struct{} // coalescing: a solicitation wants a multicast answer
	lastForeign  atomic.Int64  // unix nanoseconds of another router's last advertisement
	sendFailing  atomic.Bool   // log a failing send once, not per packet
	closeOnce    sync.Once
}

// New opens the raw ICMPv6 socket on the interface (needs CAP_NET_RAW) and
// joins the all-routers group, where solicitations arrive: a host that is
// not forwarding is not in it. The socket lives in the caller's network
// namespace. On error nothing stays open.
func New(cfg Config) (*Sender, error) {
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("ra: interface %s: %w", cfg.Interface, err)
	}
	// A raw socket opens and joins groups on an interface with IPv6 off;
	// only every send would fail.
	if off, _ := os.ReadFile("/proc/sys/net/ipv6/conf/" + ifi.Name + "/disable_ipv6"); strings.TrimSpace(string(off)) == "1" {
		return nil, fmt.Errorf("ra: IPv6 is disabled on %s", ifi.Name)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifi.Name)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := lc.ListenPacket(context.Background(), "ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, fmt.Errorf("ra: ICMPv6 socket on %s: %w", ifi.Name, err)
	}
	conn := c.(*net.IPConn)
	pc := ipv6.NewPacketConn(conn)
	if err := setup(pc, ifi); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ra: ICMPv6 socket on %s: %w", ifi.Name, err)
	}
	s := &Sender{
		cfg: cfg, iv: cfg.Intervals.bounded(), log: log.With("iface", ifi.Name), ifi: ifi, conn: conn, pc: pc,
		advert:       Advert{SourceLinkAddr: ifi.HardwareAddr}.Marshal(),
		multicastReq: make(chan struct{}, 1),
	}
	return s, nil
}

func setup(pc *ipv6.PacketConn, ifi *net.Interface) error {
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	f.Accept(ipv6.ICMPTypeRouterAdvertisement)
	steps := []func() error{
		func() error { return pc.SetICMPFilter(&f) },
		func() error { return pc.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagSrc|ipv6.FlagInterface, true) },
		func() error { return pc.SetHopLimit(ndpHopLimit) },
		func() error { return pc.SetMulticastHopLimit(ndpHopLimit) },
		func() error { return pc.SetMulticastInterface(ifi) },
		// Our own multicast advertisements must not look like another
		// router's.
		func() error { return pc.SetMulticastLoopback(false) },
		func() error { return pc.JoinGroup(ifi, &net.IPAddr{IP: net.IPv6linklocalallrouters}) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// Close releases the socket; Serve does it on return. It may be called
// more than once.
func (s *Sender) Close() error {
	s.closeOnce.Do(func() { s.conn.Close() })
	return nil
}

// Serve advertises until ctx ends, then closes the socket.
func (s *Sender) Serve(ctx context.Context) error {
	defer s.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readErr := make(chan error, 1)
	go func() { readErr <- s.readLoop(ctx) }()
	timerDone := make(chan struct{})
	go func() { s.timerLoop(ctx); close(timerDone) }()
	s.log.Info("IPv6 router advertisements: router lifetime 0, no prefix, no DHCPv6 (ends iPXE's IPv6 wait)")
	var err error
	select {
	case <-ctx.Done():
		s.Close() // ends the read loop
		err = <-readErr
	case err = <-readErr: // the socket failed: stop advertising too
	}
	cancel()
	<-timerDone
	return err
}

// active says whether to advertise now.
func (s *Sender) active() bool {
	if t := s.lastForeign.Load(); t != 0 && time.Since(time.Unix(0, t)) < foreignHold {
		return false
	}
	return s.cfg.Active == nil || s.cfg.Active()
}

// timerLoop sends the unsolicited advertisements and the multicast answers
// to solicitations, at most one per MIN_DELAY_BETWEEN_RAS.
func (s *Sender) timerLoop(ctx context.Context) {
	sent := 0
	var lastMulticast time.Time
	next := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.multicastReq:
			at := time.Now().Add(s.iv.replyDelay(rand.Int64N))
			if earliest := lastMulticast.Add(minDelayBetweenRAs); at.Before(earliest) {
				at = earliest
			}
			if at.Before(next) {
				next = at
				timer.Reset(time.Until(next))
			}
			continue
		case <-timer.C:
		}
		now := time.Now()
		if now.Before(next) {
			timer.Reset(next.Sub(now))
			continue
		}
		if !s.active() {
			// Start over with the initial burst once active again.
			sent, next = 0, now.Add(inactivePoll)
			timer.Reset(inactivePoll)
			continue
		}
		s.send(&net.IPAddr{IP: net.IPv6linklocalallnodes})
		sent++
		lastMulticast = now
		next = now.Add(s.iv.next(sent, rand.Int64N))
		timer.Reset(next.Sub(now))
	}
}

// readLoop answers solicitations and notices other routers.
func (s *Sender) readLoop(ctx context.Context) error {
	buf := make([]byte, 1500)
	for {
		n, cm, src, err := s.pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("ra: read: %w", err)
		}
		if cm == nil || cm.IfIndex != s.ifi.Index {
			s.log.Debug("dropped neighbour discovery message from another interface", "cm", cm)
			continue
		}
		ipa, ok := src.(*net.IPAddr)
		if !ok {
			continue
		}
		from, _ := netip.AddrFromSlice(ipa.IP)
		kind, err := Classify(buf[:n], cm.HopLimit, from)
		switch {
		case err != nil:
			s.log.Debug("dropped invalid neighbour discovery message", "src", from, "err", err)
		case kind == ForeignAdvert:
			if s.lastForeign.Swap(time.Now().UnixNano()) == 0 {
				s.log.Warn("another IPv6 router advertises on this segment: not sending router advertisements while it does", "router", from)
			}
		case kind == Solicitation:
			s.log.Debug("router solicitation", "src", from)
			s.solicited(ctx, ipa)
		}
	}
}

// solicited schedules the answer to a router solicitation: unicast to the
// soliciting machine after the random delay, or multicast when it has no
// address yet (::) or too many answers are pending (RFC 4861 §6.2.6).
func (s *Sender) solicited(ctx context.Context, src *net.IPAddr) {
	if !s.active() {
		return
	}
	if src.IP.IsUnspecified() || s.pending.Add(1) > maxPendingReplies {
		if !src.IP.IsUnspecified() {
			s.pending.Add(-1)
		}
		select {
		case s.multicastReq <- struct{}{}:
		default:
		}
		return
	}
	dst := &net.IPAddr{IP: src.IP, Zone: s.ifi.Name}
	time.AfterFunc(s.iv.replyDelay(rand.Int64N), func() {
		defer s.pending.Add(-1)
		if ctx.Err() == nil {
			s.send(dst)
		}
	})
}

// send writes the advertisement. The kernel picks the interface's
// link-local address as source (the destination is link-scoped) and fills
// in the checksum. A failure is logged once until a send works again: an
// interface whose link-local address is still tentative fails for a moment.
func (s *Sender) send(dst *net.IPAddr) {
	_, err := s.pc.WriteTo(s.advert, &ipv6.ControlMessage{HopLimit: ndpHopLimit, IfIndex: s.ifi.Index}, dst)
	if err != nil {
		if !s.sendFailing.Swap(true) {
			s.log.Warn("cannot send router advertisement", "dst", dst.String(), "err", err)
		}
		return
	}
	if s.sendFailing.Swap(false) {
		s.log.Info("router advertisements sent again")
	}
	s.log.Debug("router advertisement sent", "dst", dst.String())
}
