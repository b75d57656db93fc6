// Package tftp is the edge's read-only TFTP server for the bootstrap binaries
// (undionly.kpxe, ipxe.efi, snponly.efi, shim and GRUB) and for generated
// files such as per-client GRUB configs and iPXE scripts, and for image
// artifacts from the edge cache under artifacts/<image>/<file> (artifacts.go:
// the HTTP path, verified before the first byte). It wraps pin/tftp: that library owns
// the protocol (blksize and tsize negotiation, retransmits, block-number
// rollover); this package decides what a request may read.
//
// Confinement is two layers: Resolve refuses traversal spellings before any
// lookup, and files are opened through an os.Root, which refuses every path
// (symlinks included) that would leave the root directory. Directories are
// never served and nothing can be written.
//
// pin/tftp v3.2.0 does not negotiate windowsize (RFC 7440): it leaves the
// option out of its OACK, so clients fall back to one block per ACK.
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

	ptftp "github.com/pin/tftp/v3"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

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
	Timeout  time.Duration       // per-packet retransmit timeout; 0: the library's 5 s
	Retries  int                 // retransmits per packet; 0: the library's 5
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
	// (default 256). Each transfer holds a socket and a goroutine for up to
	// Timeout × Retries when the client goes silent, so a flood from one
	// address must not be able to open them without limit.
	MaxPerClient int
	MaxTransfers int
	// LogEvery is the least time between two log lines about refused or
	// dropped requests of one reason (default 10 s); the next line counts
	// the rest.
	LogEvery time.Duration
	// RateLimit bounds requests per client address (limit.go).
	RateLimit RateLimit
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

	slots slots
	rate  *ratelimit.PerSource // nil: no limit
}

// NewServer checks the configuration and opens the root directory.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = ":69"
	}
	if cfg.Timeout < 0 || cfg.Retries < 0 || cfg.MaxPerClient < 0 || cfg.MaxTransfers < 0 {
		return nil, errors.New("tftp: timeout, retries and transfer limits must not be negative")
	}
	if cfg.MaxPerClient == 0 {
		cfg.MaxPerClient = 4
	}
	if cfg.MaxTransfers == 0 {
		cfg.MaxTransfers = 256
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
	s := &Server{cfg: cfg, log: l.With("component", "tftp"), ctx: context.Background()}
	s.drops = ratelog.Logger(s.log, cfg.LogEvery)
	s.slots = slots{perClient: cfg.MaxPerClient, total: cfg.MaxTransfers, active: map[string]int{}}
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
	// without them, and pin/tftp would answer from the wrong address and cap
	// blksize at 512. (pin/tftp sets the same options again; that is
	// harmless.)
	// Same choice as pin/tftp: by the bound address family (":69" binds a
	// dual-stack IPv6 socket, which reports IPv4 destinations as mapped).
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
// An error that stops it early (binding, or the library refusing the
// socket) comes back at once, not when ctx ends.
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
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.closed = true
		s.release()
		s.mu.Unlock()
	}()
	srv := ptftp.NewServer(s.read, s.write)
	srv.SetTimeout(s.cfg.Timeout)
	srv.SetRetries(s.cfg.Retries)
	srv.SetHook(dropHook{s.drops})
	// The library returns only after Shutdown, or at once when it cannot
	// use the socket; in that case nothing must wait for ctx.
	returned := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
			srv.Shutdown()
		case <-returned:
		}
	}()
	s.log.Info("serving", "addr", s.conn.LocalAddr().String(), "root", s.cfg.Root)
	// Hand the *net.UDPConn itself to the library: it then reads the
	// destination address of each request and answers from it (right
	// source address on a multi-homed edge) and clamps blksize to the MTU
	// of the interface the request came in on.
	err := srv.Serve(s.conn)
	close(returned)
	<-stopped
	if err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	if ctx.Err() == nil {
		return errors.New("tftp: server stopped unasked")
	}
	return nil
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
func (s *Server) open(name string, remote net.Addr) (io.ReadSeeker, int64, func(), error) {
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
// real transfer. pin/tftp reports the client's error packet only as text.
func isSizeProbe(err error) bool {
	return err != nil && strings.Contains(err.Error(), "code=8")
}

func (s *Server) read(filename string, rf io.ReaderFrom) error {
	start := time.Now()
	var remote net.UDPAddr
	if ot, ok := rf.(ptftp.OutgoingTransfer); ok {
		remote = ot.RemoteAddr()
	}
	if err := s.limited(remote.IP); err != nil {
		return err
	}
	// A flood is refused before anything else, with no event: one rate-
	// limited log line per interval is all it may cost. The library sends
	// the returned error as the client's error packet.
	// Per /64 for IPv6, as the rate limit: a machine picks addresses in
	// its /64 at will.
	release, err := s.slots.acquire(ratelimit.AddrKey(remote.IP))
	if err != nil {
		s.drops.Warn("tftp: request refused", "reason", reasonBusy, "ip", remote.IP.String(), "err", err)
		return err
	}
	defer release()
	log := s.log.With("ip", remote.IP.String(), "file", filename)
	if mac := s.macFor(remote.IP); mac != "" {
		log = log.With("mac", mac)
	}
	fail := func(reason string, err error, clientMsg string) error {
		s.drops.Warn("tftp: request refused", "reason", reason, "ip", remote.IP.String(), "file", filename, "err", err)
		s.emitRefusal(remote.IP, map[string]string{"file": filename, "error": err.Error()})
		// The library sends this as the client's error packet (code 1,
		// file not found): a refused name and a missing one look the same
		// to the client, and it gets the answer at once, not a time-out.
		return errors.New(clientMsg)
	}
	if err := checkMode(rf); err != nil {
		return fail(reasonMode, err, err.Error())
	}
	// tftp.start only once there is a file to send: a refusal's tftp.error
	// is counted (the aggregator passes a few a minute per address), and a
	// start whose end was held back reads as a stalled transfer in the
	// timeline. Shim and GRUB ask for seven missing files every boot.
	begin := func() { s.emit(proto.EventTFTPStart, remote.IP, map[string]string{"file": filename}) }
	name, err := Resolve(filename)
	if err != nil {
		return fail(reasonBadPath, err, "file not found")
	}
	if s.cfg.Images != nil {
		if set, file, lookup, ok := s.isArtifact(name); ok {
			return s.serveArtifact(rf, remote, name, set, file, lookup, fail, begin)
		}
	}
	if a, ok := s.grubModule(name, remote.IP); ok {
		found := func(string, string) (proto.Artifact, error) { return a, nil }
		return s.serveArtifact(rf, remote, name, "", "", found, fail, begin)
	}
	r, size, closeFn, err := s.open(name, &remote)
	if err != nil {
		return fail(reasonNotFound, fmt.Errorf("tftp: open %s: %w", name, err), "file not found")
	}
	defer closeFn()
	begin()
	if ot, ok := rf.(ptftp.OutgoingTransfer); ok {
		// The OACK's tsize is the file's true size whatever the client put
		// in its request: pin/tftp echoes any non-zero value it is sent
		// (negative, or past 2^63), which would hand the client our lie.
		ot.SetSize(size)
	}
	n, err := rf.ReadFrom(r)
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
		return nil // the library already aborted the transfer
	}
	log.Info("sent", "bytes", n, "duration_ms", ms)
	s.emit(proto.EventTFTPDone, remote.IP, map[string]string{"file": name, "bytes": strconv.FormatInt(n, 10), "duration_ms": ms})
	return nil
}

// write refuses every WRQ with error code 2 (access violation). pin/tftp
// answers a failed handler with code 1 only, so the packet is sent here from
// a socket of our own, bound to the address the request came to; it reaches
// the client first (the library's transfer socket sends nothing before the
// handler returns), and the library's later code-1 packet goes to a client
// that has already stopped.
func (s *Server) write(filename string, wt io.WriterTo) error {
	var remote net.UDPAddr
	if it, ok := wt.(ptftp.IncomingTransfer); ok {
		remote = it.RemoteAddr()
	}
	// Limited as reads are: each refusal below costs a socket and a
	// packet to whatever source address the datagram names.
	if err := s.limited(remote.IP); err != nil {
		return err
	}
	var local net.IP
	if pi, ok := wt.(ptftp.RequestPacketInfo); ok {
		local = pi.LocalIP()
	}
	s.drops.Warn("tftp: request refused", "reason", reasonWrite, "ip", remote.IP.String(), "file", filename)
	s.emitRefusal(remote.IP, map[string]string{"file": filename, "error": "write refused: read-only server"})
	const msg = "access violation: read-only server"
	if c, err := net.ListenUDP("udp", &net.UDPAddr{IP: local}); err == nil {
		pkt := make([]byte, 0, 5+len(msg))
		pkt = append(pkt, 0, 5, 0, 2) // ERROR, code 2
		pkt = append(pkt, msg...)
		pkt = append(pkt, 0)
		c.WriteToUDP(pkt, &remote)
		c.Close()
	}
	return errors.New(msg)
}
