package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/fleetboot/fleetboot/edge/ratelimit"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/ratelog"
)

// ErrOtherServer is returned by NewServer in full mode when another DHCP
// server answers on the segment.
var ErrOtherServer = errors.New("dhcp: another DHCP server answers on this segment")

// Config configures a Server.
type Config struct {
	Interface  string // the segment's interface; the sockets are bound to it (SO_BINDTODEVICE)
	ServerIP   net.IP // the edge's address on Interface
	HTTPBase   string // e.g. http://10.0.0.1:8080
	TFTPServer net.IP // default ServerIP
	BootFiles  BootFiles
	Loaders    LoaderSource // nil: BootFiles for every machine
	LeaseFile  string       // JSON lease database; empty keeps leases in memory
	State      Policy
	Events     EventSink
	Logger     *slog.Logger
	// Force starts in full mode even when another DHCP server answers.
	Force bool
	// Prober checks an address before it is offered; nil uses ICMP echo with
	// ConflictTimeout (default 500 ms). NoConflictCheck turns the check off.
	Prober          AddressProber
	NoConflictCheck bool
	ConflictTimeout time.Duration
	// ProbeWait is how long the start-up probe listens for other DHCP
	// servers; negative skips the probe. The default, 4 s, outlasts the 3 s
	// ICMP check dnsmasq runs before its first OFFER to a new client.
	ProbeWait time.Duration
	// MaxInFlight bounds requests handled at once; more are dropped (clients
	// retry). Default 1024.
	MaxInFlight int
	// ServerPort and PXEPort default to 67 and 4011 (tests may move them).
	ServerPort, PXEPort int
	// ClientRate and ClientBurst limit requests per client hardware address
	// (a token bucket; more are dropped): default 2 per second after a
	// burst of 20. MaxClients bounds the addresses tracked (default 4096).
	ClientRate  float64
	ClientBurst int
	MaxClients  int
	// SourceRate and SourceBurst limit requests from MACs the site does not
	// know, per source address (see sourceLimits); negative SourceRate
	// turns the limit off. EventWindow and EventBudget: HandlerConfig.
	SourceRate  float64
	SourceBurst int
	EventWindow time.Duration
	EventBudget int
	// LogEvery is the least time between two log lines about dropped
	// packets of one reason (default 10 s); the next line counts the rest.
	LogEvery time.Duration
	// Metrics receives the server's Prometheus series (fleetboot_dhcp_*);
	// nil keeps them unexported.
	Metrics prometheus.Registerer
}

// Server is the socket adapter around a Handler. Its limits: limit per
// client MAC, source per source address for unknown MACs (nil: none).
type Server struct {
	cfg   Config
	h     *Handler
	log   *slog.Logger
	drops *slog.Logger // rate-limited: one line per reason per LogEvery
	m     *metrics
	// limit is a token bucket per client MAC: a PXE ROM sends four
	// DISCOVERs in half a minute and iPXE two packets per attempt, so the
	// defaults leave room for many reboots in a row, while a client sending
	// hundreds a second cannot fill the in-flight slots every other machine
	// needs. source bounds unknown MACs per source address (sourceLimits).
	limit  *ratelimit.PerSource
	source *ratelimit.PerSource
	conns  map[int]*net.UDPConn // local port -> socket
	closer func() error         // the default ICMP prober

	// probe is the client socket kept for a start-up probe that NewServer
	// deferred because the site's mode was not known yet (a fresh edge
	// before its first sync); nil when the probe ran or is off.
	probe     *net.UDPConn
	closeOnce sync.Once
}

// NewServer opens the lease file, probes the segment for other DHCP servers
// and binds the sockets (port 67, and 4011 for PXE boot-server requests of
// proxy mode; both always, so a site switching modes needs no restart).
// Serve then answers requests; Close releases what NewServer opened when
// Serve never runs. On error nothing stays open.
//
// The probe's verdict depends on the site's mode (full refuses to run next
// to another server), so when the mode is not known yet NewServer binds the
// probe's socket and leaves the probe to Probe, which the caller runs once
// the state holds the site.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Interface == "" {
		return nil, errors.New("dhcp: interface is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ServerPort == 0 {
		cfg.ServerPort = dhcpv4.ServerPort
	}
	if cfg.PXEPort == 0 {
		cfg.PXEPort = pxePort
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1024
	}
	if cfg.ProbeWait == 0 {
		cfg.ProbeWait = 4 * time.Second
	}
	if cfg.ConflictTimeout <= 0 {
		cfg.ConflictTimeout = 500 * time.Millisecond
	}
	if cfg.ClientRate <= 0 {
		cfg.ClientRate = 2
	}
	if cfg.ClientBurst <= 0 {
		cfg.ClientBurst = 20
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 4096
	}
	cfg.SourceRate, cfg.SourceBurst = sourceLimits(cfg.SourceRate, cfg.SourceBurst)
	log := cfg.Logger.With("component", "dhcp", "iface", cfg.Interface)
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	leases, err := OpenLeases(cfg.LeaseFile)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: log, conns: map[int]*net.UDPConn{}, m: m,
		drops: ratelog.Logger(log, cfg.LogEvery),
		limit: ratelimit.New(ratelimit.Config{Rate: cfg.ClientRate, Burst: cfg.ClientBurst, MaxSources: cfg.MaxClients}, ratelimit.Config{}),
	}
	if cfg.SourceRate > 0 {
		s.source = ratelimit.New(ratelimit.Config{Rate: cfg.SourceRate, Burst: cfg.SourceBurst, MaxSources: maxSources}, ratelimit.Config{})
	}
	prober := cfg.Prober
	if prober == nil && !cfg.NoConflictCheck {
		ip, err := NewICMPProber(cfg.ConflictTimeout, log)
		if err != nil {
			return nil, err
		}
		prober, s.closer = ip, ip.Close
	}
	h, err := NewHandler(HandlerConfig{
		ServerIP: cfg.ServerIP, HTTPBase: cfg.HTTPBase, TFTPServer: cfg.TFTPServer, BootFiles: cfg.BootFiles, Loaders: cfg.Loaders,
		Policy: cfg.State, Leases: leases, Prober: prober, Events: cfg.Events, Logger: log,
		EventWindow: cfg.EventWindow, EventBudget: cfg.EventBudget,
	})
	if err != nil {
		s.close()
		return nil, err
	}
	s.h = h
	if cfg.ProbeWait > 0 {
		if _, known := cfg.State.Site(); known {
			if err := s.probeOthers(context.Background(), nil); err != nil {
				s.close()
				return nil, err
			}
		} else if s.probe, err = probeConn(cfg.Interface); err != nil {
			s.close()
			return nil, err
		}
	}
	for _, port := range []int{cfg.ServerPort, cfg.PXEPort} {
		c, err := server4.NewIPv4UDPConn(cfg.Interface, &net.UDPAddr{Port: port})
		if err != nil {
			s.close()
			return nil, fmt.Errorf("dhcp: listen on %s port %d: %w", cfg.Interface, port, err)
		}
		if err := growReadBuffer(c, readBufferBytes); err != nil {
			log.Warn("dhcp: could not enlarge the socket's receive buffer; bursts may be dropped", "port", port, "err", err)
		}
		s.conns[port] = c
	}
	return s, nil
}

// readBufferBytes is the receive buffer of the DHCP sockets: about 500
// requests. The kernel default (rmem_default, some 200 KiB: about a hundred
// requests as the kernel accounts them) overflows whenever the read loop
// is held up for a few tens of milliseconds (a GC pause, a busy host) while
// a rack powers on, and a request dropped there costs its client seconds
// (the firmware's retry timer). Not more: past a few hundred milliseconds
// of queue the edge would answer requests whose clients have given up on
// them (perfdhcp at 4 MiB: half the answers came too late).
const readBufferBytes = 1 << 20

// growReadBuffer sets c's receive buffer to n bytes: past the system's
// rmem_max when the edge may (SO_RCVBUFFORCE, CAP_NET_ADMIN), else as far
// as rmem_max allows.
func growReadBuffer(c *net.UDPConn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	if serr == nil {
		return nil
	}
	return c.SetReadBuffer(n)
}

// Handler is the server's decision step (for explain and tests).
func (s *Server) Handler() *Handler { return s.h }

// ProbePending reports whether NewServer deferred the start-up probe for
// other DHCP servers because the site's mode was unknown.
func (s *Server) ProbePending() bool { return s.probe != nil }

// Probe runs a start-up probe NewServer deferred (nothing when none is
// pending), once the state holds the site: in full mode another server on
// the segment is ErrOtherServer, as at NewServer. Call it before Serve.
func (s *Server) Probe(ctx context.Context) error {
	if s.probe == nil {
		return nil
	}
	conn := s.probe
	s.probe = nil
	defer conn.Close()
	return s.probeOthers(ctx, conn)
}

// probeOthers probes on conn, or on a socket of its own when conn is nil.
func (s *Server) probeOthers(ctx context.Context, conn *net.UDPConn) error {
	if site, ok := s.cfg.State.Site(); ok && site.DHCP == proto.DHCPOff {
		return nil // off means silent on the segment, the probe included
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ProbeWait+time.Second)
	defer cancel()
	var others []net.IP
	var err error
	if conn != nil {
		others, err = probeOn(ctx, conn, s.cfg.Interface, s.cfg.ProbeWait)
	} else {
		others, err = ProbeOtherServers(ctx, s.cfg.Interface, s.cfg.ProbeWait)
	}
	if err != nil {
		return err
	}
	if len(others) == 0 {
		return nil
	}
	mode := ""
	if site, ok := s.cfg.State.Site(); ok {
		mode = site.DHCP
	}
	if mode == proto.DHCPFull && !s.cfg.Force {
		return fmt.Errorf("%w: %s answered on %s (use proxy or reservations mode, or force)", ErrOtherServer, others[0], s.cfg.Interface)
	}
	for _, o := range others {
		s.log.Warn("dhcp: another DHCP server answers on this segment", "server", o.String(), "mode", mode)
	}
	return nil
}

// Close releases the sockets and the ICMP prober; Serve does it on return.
// It may be called more than once.
func (s *Server) Close() error {
	s.close()
	return nil
}

func (s *Server) close() {
	s.closeOnce.Do(func() {
		for _, c := range s.conns {
			c.Close()
		}
		if s.probe != nil {
			s.probe.Close()
		}
		if s.closer != nil {
			s.closer()
		}
		if s.h != nil {
			// Waits for a commit in progress; one still to come (a
			// request Serve is finishing) opens the journal again, and
			// Serve closes it once they are done.
			s.h.cfg.Leases.Close()
		}
	})
}

// Serve answers requests until ctx is cancelled, then closes the sockets.
func (s *Server) Serve(ctx context.Context) error {
	var wg, writers sync.WaitGroup
	sem := make(chan struct{}, s.cfg.MaxInFlight)
	errc := make(chan error, len(s.conns))
	var outs []chan reply
	for port, c := range s.conns {
		out := make(chan reply, s.cfg.MaxInFlight)
		outs = append(outs, out)
		writers.Go(func() { s.writeLoop(c, out) })
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- s.readLoop(ctx, c, port, sem, out, &wg)
		}()
	}
	s.log.Info("dhcp: serving", "ports", []int{s.cfg.ServerPort, s.cfg.PXEPort})
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.close()
	wg.Wait()
	for _, out := range outs {
		close(out) // every request is done: nothing more to send
	}
	writers.Wait()
	s.h.counted.flush() // what was counted since the last report
	if cerr := s.h.cfg.Leases.Close(); cerr != nil {
		s.log.Warn("dhcp: close lease journal", "err", cerr)
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// readBatch is the most datagrams one read takes from the socket (recvmmsg):
// under load a queue builds up between two reads, and taking it in one
// system call instead of one each is what keeps the read loop ahead of
// it. A datagram longer than readBuf is cut short, as by a single read,
// and then refused by the parser (no end option).
const (
	readBatch = 32
	readBuf   = 4096
)

func (s *Server) readLoop(ctx context.Context, c *net.UDPConn, port int, sem chan struct{}, out chan<- reply, wg *sync.WaitGroup) error {
	pc := ipv4.NewPacketConn(c)
	msgs := make([]ipv4.Message, readBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, readBuf)}
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dhcp: read on port %d: %w", port, err)
		}
		for i := range msgs[:n] {
			peer, _ := msgs[i].Addr.(*net.UDPAddr)
			// The parsed request copies what it keeps: the buffer is
			// read into again by the next batch.
			s.accept(ctx, port, sem, out, wg, msgs[i].Buffers[0][:msgs[i].N], peer)
		}
	}
}

// accept parses, admits and hands one datagram to a goroutine of its own.
func (s *Server) accept(ctx context.Context, port int, sem chan struct{}, out chan<- reply, wg *sync.WaitGroup, pkt []byte, peer *net.UDPAddr) {
	req, reason, err := parsePacket(pkt)
	if err != nil {
		s.drops.Warn("dhcp: packet dropped", "reason", reason, "peer", peer.String(), "bytes", len(pkt), "err", err)
		s.m.dropped(reason)
		return
	}
	if !s.admit(req, peer) {
		return
	}
	s.m.request(req.MessageType())
	select {
	case sem <- struct{}{}:
	default:
		s.m.dropped(reasonOverloaded)
		s.drops.Warn("dhcp: packet dropped", "reason", reasonOverloaded, "mac", req.ClientHWAddr.String(), "max_in_flight", s.cfg.MaxInFlight)
		s.h.counted.Count(proto.EventDHCPRateLimited, reasonOverloaded)
		return
	}
	wg.Add(1)
	go func() {
		defer func() { <-sem; wg.Done() }()
		s.serveOne(ctx, port, peer, req, out)
	}()
}

func (s *Server) serveOne(ctx context.Context, port int, peer *net.UDPAddr, req *dhcpv4.DHCPv4, out chan<- reply) {
	start := time.Now()
	in := Input{Port: pxePort}
	if port == s.cfg.ServerPort {
		in.Port = dhcpv4.ServerPort
	}
	resp, err := s.h.Handle(ctx, req, in)
	if err != nil {
		s.drops.Warn("dhcp: request not served", "reason", reasonNotServed, "mac", req.ClientHWAddr.String(), "err", err)
		s.m.dropped(reasonNotServed)
		return
	}
	if resp == nil {
		s.m.answered(dhcpv4.MessageTypeNone, start)
		return
	}
	out <- reply{b: resp.ToBytes(), dst: replyAddr(req, resp, in.Port, peer), typ: resp.MessageType(), start: start}
}

// reply is one datagram for a socket's writer.
type reply struct {
	b     []byte
	dst   *net.UDPAddr
	typ   dhcpv4.MessageType
	start time.Time // when its request was admitted, for the latency metric
}

// writeLoop sends the replies of one socket until out is closed, as many
// at once as are waiting (sendmmsg, up to readBatch): the ACKs one group
// commit releases leave together in one system call instead of one each.
func (s *Server) writeLoop(c *net.UDPConn, out <-chan reply) {
	pc := ipv4.NewPacketConn(c)
	msgs := make([]ipv4.Message, readBatch)
	batch := make([]reply, 0, readBatch)
	for first := range out {
		batch = append(batch[:0], first)
	more:
		for len(batch) < readBatch {
			select {
			case r, ok := <-out:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		s.send(pc, msgs, batch)
	}
}

// send writes batch, skipping (and counting) a reply the socket refuses.
func (s *Server) send(pc *ipv4.PacketConn, msgs []ipv4.Message, batch []reply) {
	for i, r := range batch {
		msgs[i] = ipv4.Message{Buffers: [][]byte{r.b}, Addr: r.dst}
	}
	for next := 0; next < len(batch); {
		n, err := pc.WriteBatch(msgs[next:len(batch)], 0)
		for _, r := range batch[next : next+n] {
			s.m.answered(r.typ, r.start)
		}
		next += n
		if err != nil && next < len(batch) {
			s.log.Warn("dhcp: send reply", "dst", batch[next].dst.String(), "err", err)
			s.m.dropped(reasonNotSent)
			next++
		} else if n == 0 {
			break // nothing sent and no error: never loop on it
		}
	}
	clear(msgs[:len(batch)]) // the replies' buffers are garbage now
}

// replyAddr applies RFC 2131 §4.1: relayed replies go to the relay's server
// port; NAKs and replies to clients without an address are broadcast (we
// cannot unicast to an address the client has not configured without
// writing ARP entries); renewing and informing clients get unicast. PXE
// boot-server replies go back to where the request came from.
func replyAddr(req, resp *dhcpv4.DHCPv4, port int, peer *net.UDPAddr) *net.UDPAddr {
	if gi := req.GatewayIPAddr.To4(); gi != nil && !gi.IsUnspecified() {
		return &net.UDPAddr{IP: gi, Port: dhcpv4.ServerPort}
	}
	if port == pxePort && peer != nil && !peer.IP.IsUnspecified() {
		return peer
	}
	if resp.MessageType() != dhcpv4.MessageTypeNak && !req.IsBroadcast() {
		if ci := req.ClientIPAddr.To4(); ci != nil && !ci.IsUnspecified() {
			return &net.UDPAddr{IP: ci, Port: dhcpv4.ClientPort}
		}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}

// MACForIP names the machine that holds a lease on ip ("" if none).
func (s *Server) MACForIP(ip net.IP) string {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok {
		return ""
	}
	return s.h.cfg.Leases.MACFor(a)
}
