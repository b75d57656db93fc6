// Package tftp is the edge's read-only TFTP server for the bootstrap binaries
// (undionly.kpxe, ipxe.efi, snponly.efi, shim and GRUB) and for generated
// files such as per-client GRUB configs and iPXE scripts, and for image
// artifacts from the edge cache under artifacts/<image>/<file> (artifacts.go:
// the HTTP path, verified before the first byte).
//
// The protocol is this package's own (wire.go, transfer.go): read requests
// only (RFC 1350), with the options blksize (RFC 2348), tsize and timeout
// (RFC 2349) and windowsize (RFC 7440); every transfer has a socket of its
// own, retransmits its window from the last acknowledged block on a
// time-out and gives up after Retries. It replaced pin/tftp v3.2.0, which
// cannot be taught windowsize: its sender deletes from the OACK every
// option but blksize and tsize, it has no hook for options, and its only
// windowed mode (SetAnticipate) sends windows to every client without
// negotiating them, which an RFC 1350 client cannot follow. Firmware that
// asks for windowsize was held to one block per round trip: OVMF here
// (Debian's edk2 2022.11, its own PXE client) sends "tsize 0 blksize 1468
// windowsize 4" in every RRQ (captured on the wire). Owning the protocol also gives the right error
// codes (2 for writes, 4 for a bad mode, 5 for a stray transfer ID), the
// transfer mode without reflection, and link-local IPv6 listeners.
//
// Confinement is two layers: Resolve refuses traversal spellings before any
// lookup, and files are opened through an os.Root, which refuses every path
// (symlinks included) that would leave the root directory. Directories are
// never served and nothing can be written.
package tftp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetboot/fleetboot/edge/ratelimit"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/ratelog"
)

// Dynamic serves generated files (GRUB configs per MAC) before the root is
// consulted.
type Dynamic interface {
	Lookup(path string, remote net.Addr) (content []byte, ok bool)
}

// DynamicFunc adapts a function to Dynamic.
type DynamicFunc func(path string, remote net.Addr) ([]byte, bool)

// Lookup calls f.
func (f DynamicFunc) Lookup(path string, remote net.Addr) ([]byte, bool) { return f(path, remote) }

// EventSink records boot-chain events.
type EventSink interface {
	Emit(kind, mac string, detail map[string]string)
}

// Config of a TFTP server.
type Config struct {
	Listen   string              // UDP address; default ":69"
	Root     string              // directory of boot binaries; empty: Dynamic only
	Dynamic  Dynamic             // nil: none
	Events   EventSink           // nil: none
	Logger   *slog.Logger        // nil: discard
	Timeout  time.Duration       // retransmit timeout of a window (a client's timeout option replaces it); 0: 5 s
	Retries  int                 // retransmits of a window without progress before the transfer gives up; 0: 5
	MACForIP func(net.IP) string // maps a client address to its MAC (from DHCP leases); nil: events carry the IP only
	// Images and Cache serve image artifacts under artifacts/<image>/<file>
	// (artifacts.go), verified before any byte is sent; nil: none. Both or
	// neither.
	Images Images
	Cache  VerifiedFiles
	// Modules serves GRUB modules of the asking client's loader at GRUB's
	// prefix (grub/<platform>/<file>) from Cache; nil: those come from the
	// root directory only.
	Modules GrubModules
	// ArtifactWait bounds a request's wait for an artifact still being
	// fetched; 0: Timeout × (Retries-1), under the transfer's own patience.
	ArtifactWait time.Duration
	// MaxPerClient bounds transfers in flight from one IP address (default
	// 4: a firmware fetches one file at a time, plus a size probe); more are
	// refused at once with an error packet. MaxTransfers bounds them all
	// (default 1 024: a storm of a thousand machines, each fetching its
	// loader at once, needs them — with 256, a few percent waited past their
	// firmware's patience); a request beyond it waits up to Timeout for a
	// slot, in order of arrival (4 × MaxTransfers at most wait), else gets no
	// answer.
	// Each transfer holds a socket and a goroutine for up to Timeout ×
	// Retries when the client goes silent, so a flood from one address must
	// not be able to open them without limit.
	MaxPerClient int
	MaxTransfers int
	// LogEvery is the least time between two log lines about refused or
	// dropped requests of one reason (default 10 s); the next line counts
	// the rest.
	LogEvery time.Duration
	// RateLimit bounds requests per client address (limit.go).
	RateLimit RateLimit
	// Metrics receives fleetboot_tftp_*; nil keeps them unexported.
	Metrics prometheus.Registerer
}

// Server is a read-only TFTP server.
type Server struct {
	cfg   Config
	log   *slog.Logger
	drops *slog.Logger // rate-limited: one line per reason per LogEvery
	root  *os.Root     // nil when Config.Root is empty

	mu      sync.Mutex
	ctx     context.Context // Serve's: ends waits for artifacts at shutdown
	conn    *net.UDPConn
	closed  bool // Close ran: no Listen or Serve after it
	serving bool

	slots    slots
	inflight inflight
	rate     *ratelimit.PerSource // nil: no limit
	m        *metrics
}

// NewServer checks the configuration and opens the root directory.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = ":69"
	}
	if cfg.Timeout < 0 || cfg.Retries < 0 || cfg.MaxPerClient < 0 || cfg.MaxTransfers < 0 {
		return nil, errors.New("tftp: timeout, retries and transfer limits must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Retries == 0 {
		cfg.Retries = defaultRetries
	}
	if cfg.MaxPerClient == 0 {
		cfg.MaxPerClient = 4
	}
	if cfg.MaxTransfers == 0 {
		cfg.MaxTransfers = 1024
	}
	if (cfg.Images == nil) != (cfg.Cache == nil) {
		return nil, errors.New("tftp: artifacts need both Images and Cache")
	}
	if cfg.Root == "" && cfg.Dynamic == nil && cfg.Images == nil {
		return nil, errors.New("tftp: nothing to serve: no root directory, dynamic source or artifacts")
	}
	l := cfg.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: l.With("component", "tftp"), ctx: context.Background(), m: m}
	s.drops = ratelog.Logger(s.log, cfg.LogEvery)
	s.slots = slots{perClient: cfg.MaxPerClient, total: cfg.MaxTransfers, queue: 4 * cfg.MaxTransfers, wait: cfg.Timeout,
		active: map[string]int{}}
	s.rate = newRateLimit(cfg.RateLimit)
	if cfg.Root != "" {
		root, err := os.OpenRoot(cfg.Root)
		if err != nil {
			return nil, fmt.Errorf("tftp: root: %w", err)
		}
		s.root = root
	}
	return s, nil
}

// Listen binds the UDP socket (Serve does it if it was not done), so callers
// can bind first and learn the address before starting goroutines.
func (s *Server) Listen() (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.conn != nil {
		return s.conn.LocalAddr(), nil
	}
	a, err := net.ResolveUDPAddr("udp", s.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("tftp: listen address %q: %w", s.cfg.Listen, err)
	}
	c, err := net.ListenUDP("udp", a)
	if err != nil {
		return nil, fmt.Errorf("tftp: %w", err)
	}
	// Ask for each datagram's destination address and interface now, not
	// when Serve starts: a request queued in between would otherwise arrive
	// without them, be answered from the wrong address and have blksize
	// capped at 512. By the bound address family (":69" binds a dual-stack
	// IPv6 socket, which reports IPv4 destinations as mapped).
	if c.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
		ipv4.NewPacketConn(c).SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
	} else {
		ipv6.NewPacketConn(c).SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
	}
	s.conn = c
	return c.LocalAddr(), nil
}

// ErrClosed is returned by Listen and Serve after Close.
var ErrClosed = errors.New("tftp: server closed")

// Close releases the socket and the root directory. Serve does it when it
// returns; Close is for a server that was bound but will not serve (a later
// step of the caller's start-up failed), and may be called more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.serving {
		return nil // Serve owns them now and releases them on return
	}
	return s.release()
}

// release closes the socket and the root; s.mu is held.
func (s *Server) release() error {
	var err error
	if s.conn != nil {
		err = s.conn.Close()
	}
	if s.root != nil {
		s.root.Close()
	}
	return err
}

// Serve answers requests until ctx ends, then waits for transfers in flight
// (each is bounded by Timeout × Retries) and closes the socket and the root.
// An error that stops it early (binding, or the socket failing) comes back
// at once, not when ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	if _, err := s.Listen(); err != nil {
		s.Close() // the root: Serve releases it on every return
		return err
	}
	s.mu.Lock()
	if s.closed || s.serving {
		s.mu.Unlock()
		return ErrClosed
	}
	s.serving = true
	s.ctx = ctx
	conn := s.conn
	s.mu.Unlock()
	var transfers sync.WaitGroup
	defer func() {
		transfers.Wait()
		s.mu.Lock()
		s.closed = true
		s.release()
		s.mu.Unlock()
	}()
	// Closing the socket is what ends the read below.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	s.log.Info("serving", "addr", conn.LocalAddr().String(), "root", s.cfg.Root)
	read := packetReader(conn)
	buf := make([]byte, 65536)
	for {
		n, p, err := read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tftp: read: %w", err)
		}
		req, err := parseRequest(buf[:n])
		if err != nil {
			s.drops.Warn("tftp: packet dropped", "reason", reasonMalformed, "ip", p.remote.IP.String(), "err", err)
			continue
		}
		key := inflightKey{addr: p.remote.AddrPort(), op: req.op, filename: req.filename}
		e := s.inflight.add(key, buf[:n])
		if e == nil {
			s.m.repeat()
			continue
		}
		transfers.Go(func() {
			defer s.inflight.remove(key, e)
			s.handle(req, p, e)
		})
	}
}

// arrival is where a request came from and what it came to.
type arrival struct {
	remote *net.UDPAddr
	local  *net.UDPAddr // the request's destination address: a transfer answers from it
	maxBlk int          // largest blksize the interface's MTU carries unfragmented
}

// packetReader reads datagrams with their destination address and
// interface (Listen asked for both). Answering from the destination address
// gives the right source on a multi-homed edge; the interface's MTU bounds
// blksize. The family is the bound address's: ":69" binds a dual-stack IPv6
// socket, which reports IPv4 destinations as mapped. The options are set
// again on the reader: x/net parses a control message only for the flags
// its own PacketConn set (the socket already has them since Listen).
func packetReader(c *net.UDPConn) func([]byte) (int, arrival, error) {
	if c.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
		pc := ipv4.NewPacketConn(c)
		pc.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
		return func(b []byte) (int, arrival, error) {
			n, cm, src, err := pc.ReadFrom(b)
			if err != nil {
				return 0, arrival{}, err
			}
			a := arrival{remote: src.(*net.UDPAddr), local: &net.UDPAddr{}, maxBlk: defaultBlksize}
			if cm != nil {
				a.local.IP = cm.Dst
				a.setInterface(cm.IfIndex, 20+8)
			}
			return n, a, nil
		}
	}
	pc := ipv6.NewPacketConn(c)
	pc.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
	return func(b []byte) (int, arrival, error) {
		n, cm, src, err := pc.ReadFrom(b)
		if err != nil {
			return 0, arrival{}, err
		}
		a := arrival{remote: src.(*net.UDPAddr), local: &net.UDPAddr{}, maxBlk: defaultBlksize}
		if cm != nil {
			a.local.IP = cm.Dst
			overhead := 40 + 8
			if cm.Dst.To4() != nil {
				overhead = 20 + 8
			}
			a.setInterface(cm.IfIndex, overhead)
		}
		return n, a, nil
	}
}

// setInterface bounds blksize by the interface's MTU and names the zone of
// a link-local destination (a socket bound to fe80::… needs it).
func (a *arrival) setInterface(index, overhead int) {
	if a.local.IP.Equal(net.IPv4bcast) {
		// A request to the broadcast address cannot be answered from it:
		// the kernel picks the source.
		a.local.IP = nil
	}
	ifi, err := net.InterfaceByIndex(index)
	if err != nil {
		return
	}
	a.maxBlk = max(ifi.MTU-overhead, defaultBlksize)
	if a.local.IP.IsLinkLocalUnicast() && a.local.IP.To4() == nil {
		a.local.Zone = ifi.Name
	}
}

// handle answers one request from a socket of its own (the transfer ID of
// RFC 1350), bound to the address the request came to.
func (s *Server) handle(req request, p arrival, e *pending) {
	conn, err := net.ListenUDP("udp", p.local)
	if err != nil {
		s.drops.Warn("tftp: request dropped", "reason", reasonSocket, "ip", p.remote.IP.String(), "err", err)
		return
	}
	defer conn.Close()
	e.conn.Store(conn)
	// A copy arriving between the end and remove starts a transfer anew.
	defer e.settled.Store(true)
	t := &transfer{conn: conn, remote: p.remote, req: req, maxBlk: p.maxBlk, size: -1,
		timeout: s.cfg.Timeout, retries: s.cfg.Retries, settled: &e.settled}
	t.setBatch()
	start := time.Now()
	err = s.answer(t)
	var r *refusal
	if errors.As(err, &r) {
		t.sendError(r.code, r.msg)
	}
	s.m.finished(t, err, start)
}

// answer serves a read request or refuses a write request; a *refusal is
// sent to the client as an ERROR packet.
func (s *Server) answer(t *transfer) error {
	if t.req.op == opWRQ {
		return s.write(t.req.filename, t.remote.IP)
	}
	return s.read(t)
}

// baseContext is Serve's context: a request waiting for an artifact stops
// waiting when the server shuts down.
func (s *Server) baseContext() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ctx
}

func (s *Server) macFor(ip net.IP) string {
	if s.cfg.MACForIP == nil {
		return ""
	}
	return s.cfg.MACForIP(ip)
}

func (s *Server) emit(kind string, ip net.IP, detail map[string]string) {
	if s.cfg.Events == nil {
		return
	}
	detail["ip"] = ip.String()
	s.cfg.Events.Emit(kind, s.macFor(ip), detail)
}

// open finds the content for a resolved name: the dynamic source first,
// then a regular file under the root.
func (s *Server) open(name string, remote net.Addr) (io.Reader, int64, func(), error) {
	if s.cfg.Dynamic != nil {
		if b, ok := s.cfg.Dynamic.Lookup(name, remote); ok {
			return bytes.NewReader(b), int64(len(b)), func() {}, nil
		}
	}
	if s.root == nil {
		return nil, 0, nil, fs.ErrNotExist
	}
	f, err := s.root.Open(name)
	if err != nil {
		return nil, 0, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, nil, fmt.Errorf("%s is not a regular file", name)
	}
	return f, fi.Size(), func() { f.Close() }, nil
}

// isSizeProbe recognises the UEFI PXE client's habit: it asks for the file
// with tsize, reads the size from the OACK and aborts with error 8 before the
// real transfer.
func isSizeProbe(err error) bool {
	pe, ok := errors.AsType[*peerError](err)
	return ok && pe.code == codeOptions
}

func (s *Server) read(t *transfer) error {
	start := time.Now()
	filename, remote := t.req.filename, *t.remote
	if err := s.limited(remote.IP); err != nil {
		return &refusal{codeUndefined, err.Error()}
	}
	// A flood is refused before anything else, with no event: one rate-
	// limited log line per interval is all it may cost.
	// Per /64 for IPv6, as the rate limit: a machine picks addresses in
	// its /64 at will.
	release, err := s.slots.acquire(s.baseContext(), ratelimit.AddrKey(remote.IP))
	if errors.Is(err, errServerFull) {
		s.drops.Warn("tftp: request dropped", "reason", reasonFull, "ip", remote.IP.String(), "err", err)
		return errDropped
	}
	if err != nil {
		s.drops.Warn("tftp: request refused", "reason", reasonBusy, "ip", remote.IP.String(), "err", err)
		return &refusal{codeUndefined, err.Error()}
	}
	defer release()
	log := s.log.With("ip", remote.IP.String(), "file", filename)
	if mac := s.macFor(remote.IP); mac != "" {
		log = log.With("mac", mac)
	}
	fail := func(reason string, err error, code uint16, clientMsg string) error {
		s.drops.Warn("tftp: request refused", "reason", reason, "ip", remote.IP.String(), "file", filename, "err", err)
		s.emitRefusal(remote.IP, map[string]string{"file": filename, "error": err.Error()})
		return &refusal{code, clientMsg}
	}
	if err := checkMode(t.req.mode); err != nil {
		return fail(reasonMode, err, codeIllegalOp, err.Error())
	}
	// tftp.start only once there is a file to send: a refusal's tftp.error
	// is counted (the aggregator passes a few a minute per address), and a
	// start whose end was held back reads as a stalled transfer in the
	// timeline. Shim and GRUB ask for seven missing files every boot.
	begin := func() { s.emit(proto.EventTFTPStart, remote.IP, map[string]string{"file": filename}) }
	name, err := Resolve(filename)
	if err != nil {
		// A refused name and a missing one look the same to the client
		// (code 1, file not found), and it gets the answer at once, not a
		// time-out.
		return fail(reasonBadPath, err, codeNotFound, "file not found")
	}
	if s.cfg.Images != nil {
		if set, file, lookup, ok := s.isArtifact(name); ok {
			return s.serveArtifact(t, name, set, file, lookup, fail, begin)
		}
	}
	if a, ok := s.grubModule(name, remote.IP); ok {
		found := func(string, string) (proto.Artifact, error) { return a, nil }
		return s.serveArtifact(t, name, "", "", found, fail, begin)
	}
	r, size, closeFn, err := s.open(name, &remote)
	if err != nil {
		return fail(reasonNotFound, fmt.Errorf("tftp: open %s: %w", name, err), codeNotFound, "file not found")
	}
	defer closeFn()
	begin()
	t.size = size
	n, err := t.send(modeReader(t.req.mode, r))
	ms := strconv.FormatInt(time.Since(start).Milliseconds(), 10)
	switch {
	case isSizeProbe(err):
		// Normal: the real transfer follows. Recorded as done (the client
		// got what it asked for) with probe=true, not as an error.
		log.Debug("size probe", "duration_ms", ms)
		s.emit(proto.EventTFTPDone, remote.IP, map[string]string{"file": name, "bytes": "0", "duration_ms": ms, "probe": "true"})
		return nil
	case err != nil:
		log.Warn("transfer failed", "bytes", n, "duration_ms", ms, "err", err)
		s.emit(proto.EventTFTPError, remote.IP, map[string]string{"file": name, "bytes": strconv.FormatInt(n, 10), "duration_ms": ms, "error": err.Error()})
		return nil // send told the client, or the client told us
	}
	log.Info("sent", "bytes", n, "duration_ms", ms, "blksize", t.blksize, "windowsize", t.window)
	s.emit(proto.EventTFTPDone, remote.IP, map[string]string{"file": name, "bytes": strconv.FormatInt(n, 10), "duration_ms": ms})
	return nil
}

// modeReader converts r for a netascii transfer.
func modeReader(mode string, r io.Reader) io.Reader {
	if strings.EqualFold(mode, "netascii") {
		return newNetascii(r)
	}
	return r
}

// write refuses every WRQ with error code 2 (access violation).
func (s *Server) write(filename string, ip net.IP) error {
	// Limited as reads are: each refusal costs a socket and a packet to
	// whatever source address the datagram names.
	if err := s.limited(ip); err != nil {
		return &refusal{codeUndefined, err.Error()}
	}
	s.drops.Warn("tftp: request refused", "reason", reasonWrite, "ip", ip.String(), "file", filename)
	s.emitRefusal(ip, map[string]string{"file": filename, "error": "write refused: read-only server"})
	return &refusal{codeAccess, "access violation: read-only server"}
}
