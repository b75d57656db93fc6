package tftp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// What the server does with hostile requests (wire.go, transfer.go):
//
//   - A request longer than 516 bytes (a 64 KiB file name), one whose last
//     field is not NUL-terminated, one without a mode, and any other opcode
//     on the server port are dropped without an answer and logged,
//     rate-limited.
//   - blksize outside 512..65464, timeout outside 1..255 s, windowsize
//     outside 1..65535, any value that is not plain digits, and unknown
//     options are left out of the OACK (RFC 2347): the client keeps the
//     default. blksize is lowered to the interface MTU, windowsize to the
//     memory bound (maxWindow, maxWindowBytes).
//   - tsize is answered with the true size whatever the client sent.
//   - A mode other than octet or netascii is refused with code 4.
//   - A packet to a transfer's port from another address or port gets
//     error 5 and does not disturb the transfer; stale or duplicate ACKs
//     neither resend a window nor extend its deadline.

// Reasons of refusals and drops: they key the rate-limited log.
const (
	reasonMalformed  = "malformed request"
	reasonSocket     = "no socket for a transfer"
	reasonBusy       = "too many transfers"
	reasonFull       = "all transfer slots taken"
	reasonMode       = "transfer mode"
	reasonBadPath    = "bad path"
	reasonNotFound   = "not found"
	reasonWrite      = "write request"
	maxModeInMessage = 32
)

// errServerFull: every transfer slot is taken. Such a request gets no
// answer at all, unlike a client over its own allowance: a PXE ROM takes an
// ERROR packet for the end of its boot attempt, while silence makes it send
// its RRQ again a few seconds later, when a slot may be free (a boot storm
// of a thousand machines waits instead of failing).
var errServerFull = errors.New("server busy")

// errDropped is answer's outcome for a request answered with nothing.
var errDropped = errors.New("tftp: request dropped")

// inflight holds the requests being answered, by client address and port,
// operation and file name. A client that hears nothing for a while sends
// its RRQ again from the same port; answering that copy too started a second
// transfer the client ignores (it keeps the first server port that
// answers), which then held a slot for Timeout × Retries. In a storm of a
// thousand machines, where first answers can be late, those copies filled
// every slot and the machines behind them timed out. A copy, byte for byte,
// of a request whose transfer has neither heard from the client nor given
// it a final answer (an error packet) is dropped:
// that transfer resends its first packet on its own time-out. Once the
// client has answered the transfer, the same request again is a new one
// (a firmware's size probe, aborted, then the download).
type inflight struct {
	mu sync.Mutex
	m  map[inflightKey]*pending
}

type inflightKey struct {
	addr     netip.AddrPort
	op       uint16
	filename string
}

// pending is one request being answered.
type pending struct {
	packet  string                      // the request as it came, options and all
	settled atomic.Bool                 // a copy is a new request: the client answered, or was answered for good
	conn    atomic.Pointer[net.UDPConn] // the transfer's socket, once open
}

// isSettled reports whether a copy of the request is a new one: the
// transfer sent its final error, or the client has sent it anything,
// read by it already, or still queued on its socket. A client that aborts
// a transfer (UEFI's size probe, error 8) and asks again at once sends
// the abort first; the transfer may not have read it yet when the request
// comes, but the kernel has queued it.
func (p *pending) isSettled() bool {
	if p.settled.Load() {
		return true
	}
	c := p.conn.Load()
	if c == nil {
		return false
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return true // cannot tell: a new transfer, as without this check
	}
	// Control, not Read: Read queues behind the transfer's own blocked
	// read, which holds the socket's read lock until its time-out.
	queued := false
	var b [1]byte
	rc.Control(func(fd uintptr) {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		queued = err == nil
	})
	return queued
}

// add records a request, or returns nil when it repeats one in progress.
func (f *inflight) add(k inflightKey, packet []byte) *pending {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.m[k]; p != nil && p.packet == string(packet) && !p.isSettled() {
		return nil
	}
	if f.m == nil {
		f.m = map[inflightKey]*pending{}
	}
	p := &pending{packet: string(packet)}
	f.m[k] = p
	return p
}

// remove forgets p, unless a newer request from the port took its place.
func (f *inflight) remove(k inflightKey, p *pending) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m[k] == p {
		delete(f.m, k)
	}
}

// size reports the requests in progress (for tests).
func (f *inflight) size() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.m)
}

// slots bounds transfers in flight, per client address and in all. When
// all are taken, a request waits for one, in order of arrival, for up to
// wait (at most queue requests wait; beyond that, or after the wait, it is
// dropped). Dropping at once left each machine of a storm to its own
// retransmit timer: a slot freed a millisecond after a drop sat idle until
// some client happened to ask again, and the unlucky ones asked into a full
// server until they gave up (17 of 1 000 machines in the storm benchmark,
// their RRQs dropped for 16 s, while others were served).
type slots struct {
	perClient, total int
	queue            int           // requests that may wait for a slot
	wait             time.Duration // how long one may wait

	mu      sync.Mutex
	active  map[string]int // client IP -> transfers, waiting ones too; entries at 0 are deleted
	n       int
	waiters []chan struct{} // oldest first; a freed slot is handed to waiters[0] by closing it
}

// acquire takes a slot for ip, waiting for one if all are taken, or refuses
// with the message for the client (errServerFull: answer nothing).
func (s *slots) acquire(ctx context.Context, ip string) (release func(), err error) {
	s.mu.Lock()
	if s.active[ip] >= s.perClient {
		s.mu.Unlock()
		return nil, fmt.Errorf("too many transfers from %s (at most %d at once): try again later", ip, s.perClient)
	}
	if s.n < s.total {
		s.n++
		s.active[ip]++
		s.mu.Unlock()
		return s.releaser(ip), nil
	}
	if len(s.waiters) >= s.queue || s.wait <= 0 {
		s.mu.Unlock()
		return nil, s.full()
	}
	handed := make(chan struct{})
	s.waiters = append(s.waiters, handed)
	s.active[ip]++ // a waiting request counts against its client's allowance
	s.mu.Unlock()
	timer := time.NewTimer(s.wait)
	defer timer.Stop()
	select {
	case <-handed:
		return s.releaser(ip), nil
	case <-timer.C:
	case <-ctx.Done():
	}
	s.mu.Lock()
	if i := slices.Index(s.waiters, handed); i >= 0 {
		s.waiters = slices.Delete(s.waiters, i, i+1)
		s.leaveLocked(ip)
		s.mu.Unlock()
		return nil, s.full()
	}
	s.mu.Unlock()
	// Handed a slot as the wait ended: pass it on.
	s.releaser(ip)()
	return nil, s.full()
}

// full is the refusal of a request that found no slot (answered with
// silence; the message is for the log).
func (s *slots) full() error {
	return fmt.Errorf("%w (%d transfers at once): try again later", errServerFull, s.total)
}

// releaser returns the function that gives ip's slot back (once): to the
// oldest waiter if any, else to the pool.
func (s *slots) releaser(ip string) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.leaveLocked(ip)
			if len(s.waiters) > 0 {
				close(s.waiters[0])
				s.waiters = s.waiters[1:]
				return // the slot passes on: n is unchanged
			}
			s.n--
		})
	}
}

func (s *slots) leaveLocked(ip string) {
	if s.active[ip]--; s.active[ip] <= 0 {
		delete(s.active, ip)
	}
}

// of reports the transfers in flight from ip (for tests).
func (s *slots) of(ip string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[ip]
}

// inFlight reports the transfers in flight (for tests).
func (s *slots) inFlight() (total, clients int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, len(s.active)
}

// checkMode refuses a read request whose mode is neither octet nor netascii
// (RFC 1350, case-insensitive; "mail" is obsolete and means nothing to a
// read-only server).
func checkMode(mode string) error {
	if strings.EqualFold(mode, "octet") || strings.EqualFold(mode, "netascii") {
		return nil
	}
	if len(mode) > maxModeInMessage {
		mode = mode[:maxModeInMessage] + "..."
	}
	return fmt.Errorf("transfer mode %q not supported: use octet or netascii", mode)
}
