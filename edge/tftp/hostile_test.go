package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetboot/fleetboot/test/promtest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// syncBuf is an io.Writer for the server's log that the test reads.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// rrq builds a read request; opts are name, value pairs.
func rrq(name, mode string, opts ...string) []byte {
	b := []byte{0, opRRQ}
	for _, s := range append([]string{name, mode}, opts...) {
		b = append(append(b, s...), 0)
	}
	return b
}

// packet is one datagram the server sent.
type packet struct {
	op   uint16
	body []byte
	from *net.UDPAddr
}

func (p packet) String() string {
	switch p.op {
	case opERROR:
		return fmt.Sprintf("ERROR %d %q", binary.BigEndian.Uint16(p.body), bytes.TrimRight(p.body[2:], "\x00"))
	case opDATA:
		return fmt.Sprintf("DATA #%d (%d bytes)", binary.BigEndian.Uint16(p.body), len(p.body)-2)
	case opOACK:
		return fmt.Sprintf("OACK %q", p.body)
	}
	return fmt.Sprintf("op %d %q", p.op, p.body)
}

// options decodes an OACK's name, value pairs.
func (p packet) options() map[string]string {
	out := map[string]string{}
	parts := bytes.Split(bytes.TrimSuffix(p.body, []byte{0}), []byte{0})
	for i := 0; i+1 < len(parts); i += 2 {
		out[string(parts[i])] = string(parts[i+1])
	}
	return out
}

// rawClient speaks TFTP by hand from a loopback address, to send what no
// real client would.
type rawClient struct {
	t    *testing.T
	conn *net.UDPConn
}

func newRawClient(t *testing.T, ip string) *rawClient {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c}
}

func (c *rawClient) send(to *net.UDPAddr, b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDP(b, to); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next datagram; the deadline only bounds a broken server.
func (c *rawClient) recv() packet {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 70000)
	n, from, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		c.t.Fatalf("no answer from the server: %v", err)
	}
	if n < 4 {
		c.t.Fatalf("runt packet %q", buf[:n])
	}
	return packet{op: binary.BigEndian.Uint16(buf), body: append([]byte(nil), buf[2:n]...), from: from}
}

// nothingPending checks that no datagram waits on the socket. The server
// answers in order, so anything it sent for an earlier request has arrived
// by the time a later well-formed request got its whole answer.
func (c *rawClient) nothingPending() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 600)
	if n, _, err := c.conn.ReadFromUDP(buf); err == nil {
		c.t.Fatalf("the server answered the dropped request: % x", buf[:n])
	} else if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
		c.t.Fatal(err)
	}
}

// abort ends a transfer the client will not finish (error code 0), so the
// server frees its slot at once.
func (c *rawClient) abort(tid *net.UDPAddr) {
	c.send(tid, append([]byte{0, opERROR, 0, 0}, "test done\x00"...))
}

// fetch reads name in plain RFC 1350 (512-byte blocks, no options).
func (c *rawClient) fetch(srv *net.UDPAddr, name string) []byte {
	c.t.Helper()
	c.send(srv, rrq(name, "octet"))
	var out []byte
	for block := uint16(1); ; block++ {
		p := c.recv()
		if p.op != opDATA || binary.BigEndian.Uint16(p.body) != block {
			c.t.Fatalf("block %d: got %v", block, p)
		}
		out = append(out, p.body[2:]...)
		c.send(p.from, []byte{0, opACK, byte(block >> 8), byte(block)})
		if len(p.body)-2 < 512 {
			return out
		}
	}
}

func waitLog(t *testing.T, logs *syncBuf, want string) {
	t.Helper()
	waitfor.True(t, "a log line with "+want, func() bool { return strings.Contains(logs.String(), want) })
}

// TestHostileRequests sends each hostile request over a real socket and
// checks the refusal (an error packet, or a drop that is logged), then that
// the server still serves a well-formed request.
func TestHostileRequests(t *testing.T) {
	f := startServerWith(t, false, func(c *Config) { c.LogEvery = time.Nanosecond })
	want := f.files["undionly.kpxe"]
	wellFormed := func(t *testing.T) {
		t.Helper()
		if got := newRawClient(t, "127.0.0.1").fetch(f.addr, "undionly.kpxe"); !bytes.Equal(got, want) {
			t.Fatalf("well-formed request after the hostile one: %d bytes, want %d", len(got), len(want))
		}
	}
	// first checks the server's first answer to the hostile request.
	type check func(t *testing.T, c *rawClient, p packet)
	dataBlock1 := func(t *testing.T, c *rawClient, p packet) {
		// The option was dropped: no OACK, plain 512-byte blocks.
		if p.op != opDATA || binary.BigEndian.Uint16(p.body) != 1 || len(p.body)-2 != 512 {
			t.Fatalf("got %v, want DATA #1 of 512 bytes", p)
		}
		c.abort(p.from)
	}
	oack := func(want map[string]string) check {
		return func(t *testing.T, c *rawClient, p packet) {
			if p.op != opOACK {
				t.Fatalf("got %v, want an OACK", p)
			}
			if d := cmp.Diff(want, p.options()); d != "" {
				t.Fatalf("OACK options (-want +got):\n%s", d)
			}
			c.abort(p.from)
		}
	}
	errorPacket := func(msg string) check {
		return func(t *testing.T, c *rawClient, p packet) {
			if p.op != opERROR || !bytes.Contains(p.body, []byte(msg)) {
				t.Fatalf("got %v, want an error packet saying %q", p, msg)
			}
		}
	}
	size := fmt.Sprint(len(want))
	tests := []struct {
		name  string
		pkt   []byte
		first check  // nil: the request is dropped without an answer
		log   string // the reason of its log line
	}{
		{"no NUL terminators", append([]byte{0, opRRQ}, "undionly.kpxe"...), nil, reasonMalformed},
		{"only the opcode", []byte{0, opRRQ}, nil, reasonMalformed},
		{"unknown opcode", []byte{0, 99, 'x', 0}, nil, reasonMalformed},
		{"64 KiB file name (all a datagram holds)", rrq(strings.Repeat("a", 65507-2-7), "octet"), nil, reasonMalformed},
		{"500-byte file name", rrq(strings.Repeat("a/", 250), "octet"), errorPacket("file not found"), reasonNotFound},
		{"blksize 0", rrq("undionly.kpxe", "octet", "blksize", "0"), dataBlock1, ""},
		{"blksize 1", rrq("undionly.kpxe", "octet", "blksize", "1"), dataBlock1, ""},
		{"blksize 70000", rrq("undionly.kpxe", "octet", "blksize", "70000"), dataBlock1, ""},
		{"blksize not a number", rrq("undionly.kpxe", "octet", "blksize", "big"), dataBlock1, ""},
		{"timeout 0", rrq("undionly.kpxe", "octet", "timeout", "0"), dataBlock1, ""},
		{"timeout 9999", rrq("undionly.kpxe", "octet", "timeout", "9999"), dataBlock1, ""},
		{"tsize negative", rrq("undionly.kpxe", "octet", "tsize", "-1"), oack(map[string]string{"tsize": size}), ""},
		{"tsize huge", rrq("undionly.kpxe", "octet", "tsize", "99999999999999999999999"), oack(map[string]string{"tsize": size}), ""},
		{"tsize with absurd blksize and timeout", rrq("undionly.kpxe", "octet", "tsize", "0", "blksize", "1", "timeout", "9999"), oack(map[string]string{"tsize": size}), ""},
		{"mode mail", rrq("undionly.kpxe", "mail"), errorPacket("transfer mode"), reasonMode},
		{"mode garbage", rrq("undionly.kpxe", strings.Repeat("\xff", 300)), errorPacket("transfer mode"), reasonMode},
		{"mode empty", rrq("undionly.kpxe", ""), errorPacket("transfer mode"), reasonMode},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newRawClient(t, "127.0.0.1")
			c.send(f.addr, tc.pkt)
			if tc.first != nil {
				tc.first(t, c, c.recv())
			}
			if tc.log != "" {
				waitLog(t, f.logs, fmt.Sprintf("reason=%q", tc.log))
			}
			wellFormed(t)
			if tc.first == nil {
				c.nothingPending()
			}
		})
	}
	t.Run("mode octet in capitals is served", func(t *testing.T) {
		c := newRawClient(t, "127.0.0.1")
		c.send(f.addr, rrq("undionly.kpxe", "OCTET"))
		dataBlock1(t, c, c.recv())
	})
}

// TestFloodFromOneAddress: transfers from one address beyond MaxPerClient are
// refused with an error packet and one log line, other addresses are served
// meanwhile, and the slots come back when the transfers end.
func TestFloodFromOneAddress(t *testing.T) {
	f := startServerWith(t, false, func(c *Config) { c.MaxPerClient = 4 })
	var (
		hung     []*net.UDPAddr
		flooders []*rawClient
	)
	for range 4 {
		// Each RRQ, from a port of its own (a copy from the same port
		// would be dropped as a repeat), gets its own transfer; never
		// ACKed, it waits for the client until aborted.
		flooder := newRawClient(t, "127.0.0.1")
		flooder.send(f.addr, rrq("undionly.kpxe", "octet"))
		p := flooder.recv()
		if p.op != opDATA {
			t.Fatalf("transfer %d: got %v", len(hung)+1, p)
		}
		hung, flooders = append(hung, p.from), append(flooders, flooder)
	}
	const extra = 50
	for i := range extra {
		flooder := newRawClient(t, "127.0.0.1")
		flooder.send(f.addr, rrq("undionly.kpxe", "octet"))
		p := flooder.recv()
		if p.op != opERROR || !bytes.Contains(p.body, []byte("too many transfers from 127.0.0.1")) {
			t.Fatalf("request %d over the cap: got %v, want an error packet", i+5, p)
		}
	}
	if got := strings.Count(f.logs.String(), fmt.Sprintf("reason=%q", reasonBusy)); got != 1 {
		t.Fatalf("%d log lines for %d refused requests, want 1\n%s", got, extra, f.logs.String())
	}
	if total, clients := f.srv.slots.inFlight(); total != 4 || clients != 1 {
		t.Fatalf("in flight: %d transfers from %d clients, want 4 from 1", total, clients)
	}
	// Another machine is served while 127.0.0.1 is at its cap.
	if got := newRawClient(t, "127.0.0.2").fetch(f.addr, "undionly.kpxe"); !bytes.Equal(got, f.files["undionly.kpxe"]) {
		t.Fatalf("other client: %d bytes", len(got))
	}
	for i, tid := range hung {
		flooders[i].abort(tid)
	}
	deadline := time.Now().Add(10 * time.Second)
	for total, _ := f.srv.slots.inFlight(); total != 0; total, _ = f.srv.slots.inFlight() {
		if time.Now().After(deadline) {
			t.Fatalf("%d transfers still in flight after the client aborted them", total)
		}
		time.Sleep(10 * time.Millisecond) // polling the server's counter
	}
	if got := newRawClient(t, "127.0.0.1").fetch(f.addr, "undionly.kpxe"); !bytes.Equal(got, f.files["undionly.kpxe"]) {
		t.Fatalf("after the flood: %d bytes", len(got))
	}
}

// TestServerFullIsSilent: with every transfer slot taken, a request from a
// machine within its own allowance gets no answer at all (a PXE ROM would
// take an ERROR packet for the end of its boot, silence makes it ask again),
// one log line and the dropped count; its retry once a slot is free is
// served.
func TestServerFullIsSilent(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := startServerWith(t, false, func(c *Config) { c.MaxTransfers, c.Metrics = 2, reg })
	var (
		hung    []*net.UDPAddr
		holders []*rawClient
	)
	for range 2 {
		holder := newRawClient(t, "127.0.0.1")
		holder.send(f.addr, rrq("undionly.kpxe", "octet"))
		p := holder.recv()
		if p.op != opDATA {
			t.Fatalf("transfer %d: got %v", len(hung)+1, p)
		}
		hung, holders = append(hung, p.from), append(holders, holder)
	}
	var lates []*rawClient
	for range 3 {
		late := newRawClient(t, "127.0.0.3")
		late.send(f.addr, rrq("undionly.kpxe", "octet"))
		lates = append(lates, late)
	}
	late := lates[0]
	// The server answers requests in order: a request it serves after
	// these from another address has its answer once they were dropped.
	waitfor.OK(t, "the dropped requests counted", func() error {
		v, err := promtest.Values(reg)
		if err != nil {
			return err
		}
		if got := v["fleetboot_tftp_transfers_total{result=dropped,windowsize=1}"]; got != 3 {
			return fmt.Errorf("dropped = %v, want 3", got)
		}
		return nil
	})
	for _, l := range lates {
		l.nothingPending()
	}
	if got := strings.Count(f.logs.String(), fmt.Sprintf("reason=%q", reasonFull)); got != 1 {
		t.Errorf("%d log lines for 3 dropped requests, want 1\n%s", got, f.logs.String())
	}
	holders[0].abort(hung[0])
	waitfor.True(t, "a slot freed", func() bool { n, _ := f.srv.slots.inFlight(); return n < 2 })
	if got := late.fetch(f.addr, "undionly.kpxe"); !bytes.Equal(got, f.files["undionly.kpxe"]) {
		t.Fatalf("the retry once a slot is free: %d bytes", len(got))
	}
	holders[1].abort(hung[1])
}

func TestSlots(t *testing.T) {
	s := slots{perClient: 2, total: 3, active: map[string]int{}}
	var got []string
	var releases []func()
	try := func(ip string) {
		r, err := s.acquire(context.Background(), ip)
		if err != nil {
			got = append(got, ip+": "+err.Error())
			return
		}
		releases = append(releases, r)
		got = append(got, ip+": ok")
	}
	try("a")
	try("a")
	try("a")
	try("b")
	try("c")
	releases[0]()
	releases[0]() // twice is harmless
	try("c")
	want := []string{
		"a: ok", "a: ok", "a: too many transfers from a (at most 2 at once): try again later",
		"b: ok", "c: server busy (3 transfers at once): try again later", "c: ok",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
	for _, r := range releases {
		r()
	}
	if n, clients := s.inFlight(); n != 0 || clients != 0 {
		t.Fatalf("after release: %d in flight, %d clients tracked; want 0, 0", n, clients)
	}
}

// TestSlotWait: with every slot taken, requests wait for one in order of
// arrival, as many as the queue holds; the rest, and those whose wait runs
// out, are told the server is full. A slot freed goes to the oldest waiter.
func TestSlotWait(t *testing.T) {
	s := slots{perClient: 4, total: 1, queue: 2, wait: time.Minute, active: map[string]int{}}
	ctx := context.Background()
	first, err := s.acquire(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 3)
	for _, ip := range []string{"b", "c"} {
		go func() {
			r, err := s.acquire(ctx, ip)
			if err != nil {
				got <- ip + ": " + err.Error()
				return
			}
			got <- ip
			r()
		}()
		// b queues before c.
		waitfor.True(t, ip+" waiting", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.active[ip] == 1 })
	}
	if _, err := s.acquire(ctx, "d"); !errors.Is(err, errServerFull) {
		t.Fatalf("a request past the queue: %v, want %v", err, errServerFull)
	}
	first()
	if a, b := <-got, <-got; a != "b" || b != "c" {
		t.Fatalf("slots went to %s, %s; want b, then c", a, b)
	}

	short := slots{perClient: 4, total: 1, queue: 2, wait: 20 * time.Millisecond, active: map[string]int{}}
	hold, err := short.acquire(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := short.acquire(ctx, "b"); !errors.Is(err, errServerFull) {
		t.Fatalf("after its wait: %v, want %v", err, errServerFull)
	}
	hold()
	if n, clients := short.inFlight(); n != 0 || clients != 0 || len(short.waiters) != 0 {
		t.Fatalf("after release: %d in flight, %d clients, %d waiting; want none", n, clients, len(short.waiters))
	}
	waitfor.True(t, "b's and c's slots released", func() bool { n, clients := s.inFlight(); return n == 0 && clients == 0 })
}

// FuzzRequest sends arbitrary datagrams to a real server's port from one
// loopback address and checks after each that another address is still
// served. Seeded with the hostile requests of TestHostileRequests.
func FuzzRequest(f *testing.F) {
	for _, b := range [][]byte{
		rrq("undionly.kpxe", "octet"),
		rrq("undionly.kpxe", "octet", "tsize", "0", "blksize", "1468"),
		append([]byte{0, opRRQ}, "undionly.kpxe"...),
		{0, opRRQ},
		{0, 99, 'x', 0},
		{0, 2, 'u', 0, 'o', 'c', 't', 'e', 't', 0}, // WRQ
		{0, opACK, 0, 1},
		rrq(strings.Repeat("a", 600), "octet"),
		rrq("undionly.kpxe", "octet", "blksize", "0"),
		rrq("undionly.kpxe", "octet", "blksize", "70000"),
		rrq("undionly.kpxe", "octet", "timeout", "9999"),
		rrq("undionly.kpxe", "octet", "tsize", "-1"),
		rrq("undionly.kpxe", "mail"),
		rrq("../secret", "octet"),
		rrq("nope", "netascii", "windowsize", "64"),
	} {
		f.Add(b)
	}
	srv := startServerWith(f, false, func(c *Config) {
		c.Timeout, c.Retries = 100*time.Millisecond, 1
		c.Logger = nil // the log would grow with every input
		// The fuzzer runs hundreds of inputs a second, each with a check
		// from 127.0.0.2: the default rate (10 a second after a burst of
		// 100) would refuse the check, not a broken server. The limiter
		// stays in the path.
		c.RateLimit = RateLimit{Rate: 1e9, Burst: math.MaxInt32}
	})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) > 65507 {
			pkt = pkt[:65507]
		}
		// The previous check's transfer may still wait on the server side
		// for the final ACK the client already sent: its slot must come
		// back (a leak would fail here).
		deadline := time.Now().Add(10 * time.Second)
		for srv.srv.slots.of("127.0.0.2") != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("slots of 127.0.0.2 not released")
			}
			time.Sleep(time.Millisecond) // polling the server's counter
		}
		newRawClient(t, "127.0.0.1").send(srv.addr, pkt)
		if got := newRawClient(t, "127.0.0.2").fetch(srv.addr, "empty.bin"); len(got) != 0 {
			t.Fatalf("empty.bin: %d bytes", len(got))
		}
	})
}

// TestRepeatedRequest: a client that hears nothing sends its RRQ again from
// the same port; while the transfer has not heard from it, those copies
// start nothing (each would hold a slot, ignored by the client, until its
// time-out) and are counted as repeats. Once the client has answered the
// transfer, the same request is a new one.
func TestRepeatedRequest(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := startServerWith(t, false, func(c *Config) { c.Metrics = reg })
	c := newRawClient(t, "127.0.0.1")
	c.send(f.addr, rrq("undionly.kpxe", "octet"))
	first := c.recv()
	if first.op != opDATA || binary.BigEndian.Uint16(first.body) != 1 {
		t.Fatalf("first answer %v, want DATA 1", first)
	}
	for range 3 {
		c.send(f.addr, rrq("undionly.kpxe", "octet"))
	}
	waitGathered(t, reg, map[string]float64{"fleetboot_tftp_transfers_total{result=repeat,windowsize=1}": 3})
	if n, _ := f.srv.slots.inFlight(); n != 1 {
		t.Fatalf("%d transfers in flight after 3 copies of one request, want 1", n)
	}
	// The client answers: the same request from the same port is now a new
	// one, with a transfer of its own.
	c.send(first.from, []byte{0, opACK, 0, 1})
	c.send(f.addr, rrq("undionly.kpxe", "octet"))
	for {
		p := c.recv()
		if p.from.String() != first.from.String() {
			if p.op != opDATA || binary.BigEndian.Uint16(p.body) != 1 {
				t.Fatalf("the request after the client answered: %v, want DATA 1", p)
			}
			c.abort(p.from)
			break
		}
	}
	c.abort(first.from)
	waitfor.True(t, "both transfers ended", func() bool { n, _ := f.srv.slots.inFlight(); return n == 0 })
	waitfor.True(t, "no request left in progress", func() bool { return f.srv.inflight.size() == 0 })
	// What the first transfer sent before its abort arrived (DATA 2).
	for {
		c.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, _, err := c.conn.ReadFromUDP(make([]byte, 600)); err != nil {
			break
		}
	}
	if got := c.fetch(f.addr, "undionly.kpxe"); !bytes.Equal(got, f.files["undionly.kpxe"]) {
		t.Fatalf("a fetch from the same port afterwards: %d bytes", len(got))
	}
}
