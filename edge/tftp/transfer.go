package tftp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Option limits.
const (
	// minBlksize: RFC 2348 allows 8, but no boot client asks for less than
	// 512 and tiny blocks multiply the packets per byte; a smaller request
	// is ignored (the client keeps 512).
	minBlksize     = 512
	maxBlksize     = 65464 // RFC 2348
	defaultBlksize = 512
	// maxWindow and maxWindowBytes bound windowsize (RFC 7440 lets the
	// server answer less than asked): the window is kept in memory for
	// retransmission, and read ahead in one read, so a transfer holds at
	// most 2 × maxWindowBytes, and all of them MaxTransfers times that
	// (128 MiB at the default 1 024). 44 blocks of 1468 bytes (what
	// firmware uses on a 1500-byte MTU) fit; past ~32 the loopback rate no
	// longer grows.
	maxWindow      = 64
	maxWindowBytes = 64 << 10
	// RFC 2349: the timeout option is 1..255 seconds.
	minTimeoutOpt = 1
	maxTimeoutOpt = 255
)

const (
	defaultTimeout = 5 * time.Second
	defaultRetries = 5
)

// peerError is an ERROR packet the client sent during a transfer.
type peerError struct {
	code uint16
	msg  string
}

func (e *peerError) Error() string {
	return fmt.Sprintf("client sent error code=%d: %s", e.code, e.msg)
}

// refusal is what the client is told when its request is not served: the
// error code and message of the ERROR packet.
type refusal struct {
	code uint16
	msg  string
}

func (r *refusal) Error() string { return r.msg }

// errTimeout: the client stopped answering; the transfer gave up after its
// retransmits.
var errTimeout = errors.New("transfer timed out: no acknowledgement from the client")

// transfer is one read request being answered, from a socket of its own
// (RFC 1350: the server's transfer ID is a fresh port).
type transfer struct {
	conn    *net.UDPConn
	remote  *net.UDPAddr
	req     request
	maxBlk  int           // blksize cap from the MTU of the interface the request came in on
	timeout time.Duration // per window; the client's timeout option replaces it
	retries int           // retransmits of one window without progress
	size    int64         // what tsize reports; -1: unknown (tsize is not acknowledged)
	settled *atomic.Bool  // set at the client's first packet to the transfer's port and by sendError; nil in tests

	// batch sends a window in one sendmmsg; nil: one write per block (a
	// dual-stack socket answering an IPv4 client, which sendmmsg's address
	// encoding cannot reach).
	batch func([]ipv4.Message, int) (int, error)

	// negotiated
	blksize int
	window  int

	recv []byte
	msgs []ipv4.Message

	// What send did, for the metrics: whether it ran, the file bytes it
	// read and sent, and how it ended.
	sending bool
	sent    int64
	sendErr error
}

// setBatch picks the batch writer for the socket's family.
func (t *transfer) setBatch() {
	switch local := t.conn.LocalAddr().(*net.UDPAddr); {
	case local.IP.To4() != nil:
		t.batch = ipv4.NewPacketConn(t.conn).WriteBatch
	case t.remote.IP.To4() == nil:
		t.batch = ipv6.NewPacketConn(t.conn).WriteBatch // ipv6.Message is ipv4.Message
	}
}

// writeWindow sends the packets of one window to the client.
func (t *transfer) writeWindow(pkts [][]byte) error {
	if t.batch == nil || len(pkts) == 1 {
		for _, p := range pkts {
			if _, err := t.conn.WriteToUDP(p, t.remote); err != nil {
				return err
			}
		}
		return nil
	}
	msgs := t.msgs[:0]
	for _, p := range pkts {
		msgs = append(msgs, ipv4.Message{Buffers: [][]byte{p}, Addr: t.remote})
	}
	t.msgs = msgs
	for len(msgs) > 0 {
		n, err := t.batch(msgs, 0)
		if err != nil {
			return err
		}
		msgs = msgs[n:]
	}
	return nil
}

// negotiate picks the options to acknowledge (RFC 2347: a server leaves out
// what it does not support or finds invalid, and the client keeps that
// option's default) and sets the transfer's parameters from them. Values
// out of range are left out, not clamped, except where the RFC lets the
// server answer less than asked: blksize (to the interface MTU) and
// windowsize (to the memory bound).
func (t *transfer) negotiate() []option {
	t.blksize, t.window = defaultBlksize, 1
	var oack []option
	for _, o := range t.req.opts {
		n, ok := parseNumber(o.value)
		switch o.name {
		case "blksize":
			if !ok || n < minBlksize || n > maxBlksize {
				continue
			}
			t.blksize = min(n, max(t.maxBlk, minBlksize))
			oack = append(oack, option{o.name, strconv.Itoa(t.blksize)})
		case "tsize":
			// Whatever the client sent (RFC 2349 asks for 0): the answer is
			// the true size, never an echo of the client's value.
			if t.size < 0 {
				continue
			}
			oack = append(oack, option{o.name, strconv.FormatInt(t.size, 10)})
		case "timeout":
			if !ok || n < minTimeoutOpt || n > maxTimeoutOpt {
				continue
			}
			t.timeout = time.Duration(n) * time.Second
			oack = append(oack, option{o.name, strconv.Itoa(n)})
		case "windowsize":
			if !ok || n < 1 || n > 65535 {
				continue
			}
			oack = append(oack, option{o.name, ""}) // the value needs the final blksize
		}
	}
	for i := range oack {
		if oack[i].name == "windowsize" {
			n, _ := parseNumber(t.req.optValue("windowsize"))
			t.window = min(n, maxWindow, max(1, maxWindowBytes/t.blksize))
			oack[i].value = strconv.Itoa(t.window)
		}
	}
	return oack
}

// optValue is opt without the presence flag.
func (r request) optValue(name string) string { v, _ := r.opt(name); return v }

// sendError tells the client why the transfer ends; best effort (the
// client may be gone).
func (t *transfer) sendError(code uint16, msg string) {
	if t.settled != nil {
		// Before the packet: the client may ask again as soon as it has it.
		t.settled.Store(true)
	}
	t.conn.WriteToUDP(packError(code, msg), t.remote)
}

// send negotiates the options and sends r in windows of t.window blocks
// (RFC 7440; a window of 1 is RFC 1350's lock-step). It returns the bytes
// read from r and why it stopped: nil when the client acknowledged the last
// block, a *peerError when the client aborted (code 8 after the OACK is the
// UEFI size probe), errTimeout, or r's error (the client got an ERROR
// packet saying so).
//
// Loss recovery follows RFC 7440: the client acknowledges the last block of
// a window, or the last block it received in order; the next window starts
// after the block acknowledged. An acknowledgement of a block already
// acknowledged (a duplicate, or the client's own time-out) changes nothing:
// answering each with a window would multiply the traffic (the Sorcerer's
// Apprentice syndrome); the server's time-out resends the window instead.
func (t *transfer) send(r io.Reader) (int64, error) {
	n, err := t.sendBlocks(r)
	t.sending, t.sent, t.sendErr = true, n, err
	return n, err
}

func (t *transfer) sendBlocks(r io.Reader) (int64, error) {
	oack := t.negotiate()
	t.recv = make([]byte, 1500)
	// Block numbers are counted in 64 bits and sent modulo 2^16 (rolling
	// over to 0, as tftp-hpa, iPXE and edk2 expect). The OACK is block 0:
	// the client acknowledges it with ACK 0.
	var acked int64 // highest block acknowledged
	if len(oack) > 0 {
		pkt := packOACK(make([]byte, 0, 512), oack)
		acked = -1
		for tries := 0; acked < 0; tries++ {
			if tries > t.retries {
				t.sendError(codeUndefined, errTimeout.Error())
				return 0, errTimeout
			}
			if _, err := t.conn.WriteToUDP(pkt, t.remote); err != nil {
				return 0, fmt.Errorf("send OACK: %w", err)
			}
			a, err := t.await(-1, 0)
			if err != nil && !errors.Is(err, errTimeout) {
				return 0, err
			}
			acked = a
		}
	}
	// ring holds the blocks of the current window: block b in slot
	// b % window, valid for acked < b <= read.
	ring := make([][]byte, t.window)
	lens := make([]int, t.window)
	pkts := make([][]byte, 0, t.window)
	// One read a window, or a few dozen blocks, instead of one a block:
	// in lock-step (window 1, what GRUB and most ROMs use) a read system
	// call per block sat between each ACK and the next DATA.
	r = bufio.NewReaderSize(r, max(t.window*t.blksize, 16<<10))
	var (
		read  int64 // highest block read from r
		last  int64 // the final (short) block; 0 until read
		n     int64 // bytes read from r
		tries int   // windows sent without progress
	)
	for {
		end := acked + int64(t.window)
		for read < end && last == 0 {
			read++
			slot := read % int64(t.window)
			if ring[slot] == nil {
				ring[slot] = make([]byte, 4+t.blksize)
				binary.BigEndian.PutUint16(ring[slot], opDATA)
			}
			l, err := io.ReadFull(r, ring[slot][4:])
			n += int64(l)
			switch {
			case err == io.EOF || err == io.ErrUnexpectedEOF:
				last = read
			case err != nil:
				msg := "read error"
				if errors.Is(err, errNotAvailable) {
					msg = errNotAvailable.Error()
				}
				t.sendError(codeUndefined, msg)
				return n, err
			case l < t.blksize:
				last = read
			}
			binary.BigEndian.PutUint16(ring[slot][2:], uint16(read))
			lens[slot] = 4 + l
		}
		if last != 0 {
			end = min(end, last)
		}
		if tries > t.retries {
			t.sendError(codeUndefined, errTimeout.Error())
			return n, errTimeout
		}
		pkts = pkts[:0]
		for b := acked + 1; b <= end; b++ {
			slot := b % int64(t.window)
			pkts = append(pkts, ring[slot][:lens[slot]])
		}
		if err := t.writeWindow(pkts); err != nil {
			return n, fmt.Errorf("send blocks %d-%d: %w", acked+1, end, err)
		}
		a, err := t.await(acked, end)
		switch {
		case errors.Is(err, errTimeout):
			tries++
			continue
		case err != nil:
			return n, err
		}
		acked, tries = a, 0 // progress: await returns only blocks past acked
		if last != 0 && acked == last {
			return n, nil
		}
	}
}

// await reads the client's packets until one acknowledges a block in
// (acked, end] and returns that block, or until t.timeout passes
// (errTimeout). The deadline is not moved by packets that bring no
// progress, so a client repeating stale ACKs cannot hold the transfer.
// Packets from another port or address are answered with error 5 (RFC
// 1350) and do not disturb the transfer.
func (t *transfer) await(acked, end int64) (int64, error) {
	t.conn.SetReadDeadline(time.Now().Add(t.timeout))
	for {
		n, from, err := t.conn.ReadFromUDP(t.recv)
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				return acked, errTimeout
			}
			return acked, fmt.Errorf("receive: %w", err)
		}
		if !from.IP.Equal(t.remote.IP) || from.Port != t.remote.Port {
			t.conn.WriteToUDP(packError(codeUnknownTID, "unknown transfer ID"), from)
			continue
		}
		if t.settled != nil && !t.settled.Load() {
			t.settled.Store(true)
		}
		if n < 4 {
			continue
		}
		switch binary.BigEndian.Uint16(t.recv) {
		case opACK:
			// The 16-bit number names the block in the window that it
			// matches modulo 2^16; anything else is stale.
			next := acked + 1
			b := next + int64(binary.BigEndian.Uint16(t.recv[2:])-uint16(next))
			if b <= end {
				return b, nil
			}
		case opERROR:
			msg := t.recv[4:n]
			if i := bytes.IndexByte(msg, 0); i >= 0 {
				msg = msg[:i]
			}
			return acked, &peerError{code: binary.BigEndian.Uint16(t.recv[2:]), msg: string(msg)}
		}
	}
}

// netasciiReader converts a file to netascii (RFC 764, as RFC 1350 asks):
// LF becomes CR LF and a bare CR becomes CR NUL. Nothing a boot client
// fetches is text; it is here because RFC 1350 clients may ask for it.
type netasciiReader struct {
	r       io.Reader
	pending int // a byte owed from the last conversion; -1: none
	buf     []byte
}

func newNetascii(r io.Reader) *netasciiReader {
	return &netasciiReader{r: r, pending: -1, buf: make([]byte, 4096)}
}

func (n *netasciiReader) Read(p []byte) (int, error) {
	out := 0
	if n.pending >= 0 && len(p) > 0 {
		p[0] = byte(n.pending)
		n.pending = -1
		out = 1
	}
	// Read at most half of the room: each byte may become two.
	room := (len(p) - out) / 2
	if room == 0 {
		if out > 0 {
			return out, nil
		}
		room = 1 // a 1-byte p: the second byte of a pair waits in pending
	}
	k, err := n.r.Read(n.buf[:min(room, len(n.buf))])
	for _, c := range n.buf[:k] {
		var second int = -1
		switch c {
		case '\n':
			c, second = '\r', '\n'
		case '\r':
			second = 0
		}
		p[out] = c
		out++
		if second >= 0 {
			if out < len(p) {
				p[out] = byte(second)
				out++
			} else {
				n.pending = second
			}
		}
	}
	if err == io.EOF && n.pending >= 0 {
		err = nil // the owed byte comes with the next Read
	}
	return out, err
}
