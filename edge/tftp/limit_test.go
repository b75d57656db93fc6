package tftp

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

type countRec struct {
	mu sync.Mutex
	n  map[string]int // kind source -> count
}

func (c *countRec) Count(source, kind, _ string, _ map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[kind+" "+source]++
}

func (c *countRec) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

// TestRateLimitPerAddress: over a real socket, an address past its burst
// gets an error packet at once for each request, counted as tftp.limited;
// its refusals before that are counted as tftp.error, not emitted one by
// one; another address is served meanwhile.
func TestRateLimitPerAddress(t *testing.T) {
	rep := &countRec{n: map[string]int{}}
	f := startServerWith(t, false, func(c *Config) {
		c.RateLimit = RateLimit{Rate: 0.001, Burst: 5, Repeats: rep} // no refill within the test
	})
	flooder := newRawClient(t, "127.0.0.1")
	for i := range 20 {
		flooder.send(f.addr, rrq("nope.efi", "octet"))
		p := flooder.recv()
		want := "file not found"
		if i >= 5 {
			want = "too many requests from 127.0.0.1"
		}
		if p.op != opERROR || !bytes.Contains(p.body, []byte(want)) {
			t.Fatalf("request %d: got %v, want an error packet saying %q", i+1, p, want)
		}
	}
	if got := newRawClient(t, "127.0.0.2").fetch(f.addr, "undionly.kpxe"); !bytes.Equal(got, f.files["undionly.kpxe"]) {
		t.Fatalf("other address: %d bytes", len(got))
	}
	if a, b := rep.get(proto.EventTFTPLimited+" 127.0.0.1"), rep.get(proto.EventTFTPError+" 127.0.0.1"); a != 15 || b != 5 {
		t.Errorf("counted %d tftp.limited and %d tftp.error, want 15 and 5", a, b)
	}
}

// TestRateLimitWrites: write requests count against the address's rate as
// read requests do. Every WRQ costs the edge a socket of its own and an
// error packet to whatever address the datagram names, so a WRQ flood must
// become a trickle of counted tftp.limited events, not one refusal each.
// (Issue 12 item 4.)
func TestRateLimitWrites(t *testing.T) {
	rep := &countRec{n: map[string]int{}}
	f := startServerWith(t, false, func(c *Config) {
		c.RateLimit = RateLimit{Rate: 0.001, Burst: 5, Repeats: rep} // no refill within the test
	})
	flooder := newRawClient(t, "127.0.0.1")
	wrq := append([]byte{0, 2}, "up.efi\x00octet\x00"...)
	for i := range 20 {
		flooder.send(f.addr, wrq)
		if p := flooder.recv(); p.op != opERROR {
			t.Fatalf("write request %d: got %v, want an error packet", i+1, p)
		}
	}
	count := func() (limited, refused int) {
		return rep.get(proto.EventTFTPLimited + " 127.0.0.1"), rep.get(proto.EventTFTPError + " 127.0.0.1")
	}
	waitfor.True(t, "20 write requests counted", func() bool { a, b := count(); return a+b == 20 })
	if a, b := count(); a != 15 || b != 5 {
		t.Errorf("counted %d tftp.limited and %d tftp.error, want 15 and 5", a, b)
	}
}

// TestTransfersPerIPv6Prefix: the cap on transfers in flight per client
// counts an IPv6 client by its /64, as the rate limit does; per address, a
// machine rotating addresses in its /64 could hold every transfer slot of
// the edge and no other machine could boot. (Issue 12 item 4.)
func TestTransfersPerIPv6Prefix(t *testing.T) {
	release := make(chan struct{})
	// A transfer holds its slot while its content is looked up: the
	// dynamic source waits for the test (a client that never ACKs, without
	// needing one at each address).
	f := startServerWith(t, false, func(c *Config) {
		c.MaxPerClient, c.MaxTransfers = 2, 10
		c.Dynamic = DynamicFunc(func(string, net.Addr) ([]byte, bool) { <-release; return nil, false })
	})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(release); wg.Wait() })
	// start begins a transfer from ip and reports whether it holds a
	// slot (true) or was refused at once (false).
	start := func(ip string) bool {
		before, _ := f.srv.slots.inFlight()
		// An IPv4 socket: once released, the transfer fails at its first
		// send to the IPv6 address.
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		tr := &transfer{conn: conn, remote: &net.UDPAddr{IP: net.ParseIP(ip), Port: 40000},
			req: request{op: opRRQ, filename: "undionly.kpxe", mode: "octet"}, timeout: time.Second, retries: 1, size: -1}
		errc := make(chan error, 1)
		wg.Go(func() { errc <- f.srv.read(tr) })
		held := false
		waitfor.True(t, "the transfer from "+ip+" to take a slot or be refused", func() bool {
			if n, _ := f.srv.slots.inFlight(); n > before {
				held = true
				return true
			}
			return len(errc) > 0
		})
		return held
	}
	var got []bool
	for i := range 4 {
		got = append(got, start(fmt.Sprintf("fe80::%x:1", i+1)))
	}
	got = append(got, start("2001:db8:0:1::1"))
	if d := cmp.Diff([]bool{true, true, false, false, true}, got); d != "" {
		t.Errorf("slots held (4 addresses of one /64, then another /64) (-want +got):\n%s", d)
	}
}

// TestRefusalsLeaveNoOpenTransfer: a refused request (a missing file) whose
// tftp.error the aggregator holds back must not leave a tftp.start behind
// either, or the timeline calls the transfer stalled. Shim and Debian's
// network GRUB ask for seven missing files every Secure Boot boot
// (revocations, the .lst files), past the aggregator's three a window:
// before, the last four showed as "tftp-stalled" in every such boot
// (TestFleetbootSecureBoot).
func TestRefusalsLeaveNoOpenTransfer(t *testing.T) {
	rep := &countRec{n: map[string]int{}}
	f := startServerWith(t, false, func(c *Config) { c.RateLimit.Repeats = rep })
	c := newRawClient(t, "127.0.0.1")
	missing := []string{"grub/x86_64-efi/command.lst", "grub/x86_64-efi/fs.lst", "../escape", "nope.efi"}
	for _, name := range missing {
		c.send(f.addr, rrq(name, "octet"))
		if p := c.recv(); p.op != opERROR {
			t.Fatalf("%s: got %v, want an error packet", name, p)
		}
	}
	if got := c.fetch(f.addr, "undionly.kpxe"); !bytes.Equal(got, f.files["undionly.kpxe"]) {
		t.Fatalf("undionly.kpxe: %d bytes", len(got))
	}
	// The events come in order: read them up to the served file's end.
	var starts []string
	for done := false; !done; {
		select {
		case e := <-f.events:
			if e.Kind == proto.EventTFTPStart {
				starts = append(starts, e.Detail["file"])
			}
			done = e.Kind == proto.EventTFTPDone && e.Detail["file"] == "undionly.kpxe"
		case <-time.After(30 * time.Second):
			t.Fatalf("no tftp.done for undionly.kpxe; starts so far %v", starts)
		}
	}
	if diff := cmp.Diff([]string{"undionly.kpxe"}, starts); diff != "" {
		t.Errorf("tftp.start events (-want +got); refused requests must record only their (counted) tftp.error:\n%s", diff)
	}
	if got := rep.get(proto.EventTFTPError+" 127.0.0.1") + rep.get(proto.EventTFTPError+" 127.0.0.1|probe"); got != len(missing) {
		t.Errorf("counted %d tftp.error, want %d", got, len(missing))
	}
}

// TestHarmlessMissesCountedApart: the files every Secure Boot start asks
// for and goes on without (shim's revocation lists, GRUB's .lst files, its
// per-MAC config names) are counted apart from other refusals, so a
// machine's real refusal after them still passes the per-address allowance
// of refusal events whole. Before, the seven misses used it up.
func TestHarmlessMissesCountedApart(t *testing.T) {
	rep := &countRec{n: map[string]int{}}
	f := startServerWith(t, false, func(c *Config) { c.RateLimit.Repeats = rep })
	c := newRawClient(t, "127.0.0.1")
	harmless := []string{"revocations_sku.efi", "revocations_sbat.efi", "shim_certificate_0.efi",
		"grub/x86_64-efi/command.lst", "grub/x86_64-efi/fs.lst", "grub/x86_64-efi/crypto.lst", "grub/x86_64-efi/terminal.lst"}
	real := []string{"artifacts/nope/vmlinuz", "nope.efi"}
	for _, name := range append(append([]string{}, harmless...), real...) {
		c.send(f.addr, rrq(name, "octet"))
		if p := c.recv(); p.op != opERROR {
			t.Fatalf("%s: got %v, want an error packet", name, p)
		}
	}
	if got := rep.get(proto.EventTFTPError + " 127.0.0.1|probe"); got != len(harmless) {
		t.Errorf("harmless misses counted apart: %d, want %d", got, len(harmless))
	}
	if got := rep.get(proto.EventTFTPError + " 127.0.0.1"); got != len(real) {
		t.Errorf("real refusals counted for the address: %d, want %d", got, len(real))
	}
}
