package tftp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

func ack(block uint16) []byte { return []byte{0, opACK, byte(block >> 8), byte(block)} }

// expectData reads the next packet and checks it is DATA with the block
// number given (modulo 2^16); it returns the payload.
func (c *rawClient) expectData(block uint16) []byte {
	c.t.Helper()
	p := c.recv()
	if p.op != opDATA || binary.BigEndian.Uint16(p.body) != block {
		c.t.Fatalf("got %v, want DATA #%d", p, block)
	}
	return p.body[2:]
}

// windowGet is a hand-written RFC 7440 client: it asks for name with opts
// (name, value pairs), acknowledges the OACK and then the last block of
// every window the OACK agreed to, and returns the file and the OACK's
// options (nil when the server answered with DATA: no option accepted).
func (c *rawClient) windowGet(srv *net.UDPAddr, name string, opts ...string) ([]byte, map[string]string) {
	c.t.Helper()
	c.send(srv, rrq(name, "octet", opts...))
	blksize, window := 512, 1
	p := c.recv()
	var oack map[string]string
	tid := p.from
	if p.op == opOACK {
		oack = p.options()
		if v, ok := oack["blksize"]; ok {
			blksize, _ = strconv.Atoi(v)
		}
		if v, ok := oack["windowsize"]; ok {
			window, _ = strconv.Atoi(v)
		}
		c.send(tid, ack(0))
		p = c.recv()
	}
	var out []byte
	for next, inWindow := uint16(1), 0; ; p = c.recv() {
		if p.op == opOACK && next == 1 {
			continue // sent again: the server's time-out passed before our ACK 0 came
		}
		// The transfer answers from its own port, at the address the
		// request was sent to.
		if p.op != opDATA || p.from.Port != tid.Port || !p.from.IP.Equal(srv.IP) {
			c.t.Fatalf("block %d: got %v from %v, want DATA from %v port %d", next, p, p.from, srv.IP, tid.Port)
		}
		if block := binary.BigEndian.Uint16(p.body); block != next {
			if block-next < 0x8000 {
				// A gap (a block lost): RFC 7440's receiver acknowledges
				// the last block it has in order.
				c.send(tid, ack(next-1))
				inWindow = 0
			}
			// Else a window sent again (the server's time-out passed
			// before our ACK came): those blocks are here already.
			continue
		}
		data := p.body[2:]
		if len(data) > blksize {
			c.t.Fatalf("block %d: %d bytes, blksize %d", next, len(data), blksize)
		}
		out = append(out, data...)
		if len(data) < blksize {
			c.send(tid, ack(next))
			return out, oack
		}
		if inWindow++; inWindow == window {
			c.send(tid, ack(next))
			inWindow = 0
		}
		next++
	}
}

// TestWindowNegotiation: what the OACK says for windowsize alone and with
// the other options, in range and out of it, and that the file arrives
// whole with the window the OACK agreed to (the client checks block order
// and acknowledges only each window's last block).
func TestWindowNegotiation(t *testing.T) {
	f := startServer(t, false)
	kpxe := fmt.Sprint(len(f.files["undionly.kpxe"]))
	tests := []struct {
		name string
		file string
		opts []string
		want map[string]string // the OACK; nil: none (DATA at once)
	}{
		{"windowsize 8", "undionly.kpxe", []string{"windowsize", "8"}, map[string]string{"windowsize": "8"}},
		{"windowsize 1", "undionly.kpxe", []string{"windowsize", "1"}, map[string]string{"windowsize": "1"}},
		{"blksize tsize windowsize", "undionly.kpxe", []string{"blksize", "1468", "tsize", "0", "windowsize", "8"},
			map[string]string{"blksize": "1468", "tsize": kpxe, "windowsize": "8"}},
		{"windowsize before blksize", "undionly.kpxe", []string{"windowsize", "32", "blksize", "1468", "timeout", "2"},
			map[string]string{"blksize": "1468", "timeout": "2", "windowsize": "32"}},
		{"names in capitals", "undionly.kpxe", []string{"WindowSize", "4", "BLKSIZE", "1024"},
			map[string]string{"blksize": "1024", "windowsize": "4"}},
		{"ends with an empty block", "EFI/BOOT/grub.efi", []string{"blksize", "1468", "windowsize", "8"},
			map[string]string{"blksize": "1468", "windowsize": "8"}},
		{"empty file", "empty.bin", []string{"tsize", "0", "windowsize", "8"}, map[string]string{"tsize": "0", "windowsize": "8"}},
		{"windowsize above the cap is lowered", "undionly.kpxe", []string{"windowsize", "1000"}, map[string]string{"windowsize": "64"}},
		{"windowsize 65535 is lowered", "undionly.kpxe", []string{"windowsize", "65535", "blksize", "1468"},
			map[string]string{"blksize": "1468", "windowsize": "44"}}, // 64 KiB
		{"big blocks take fewer in a window", "undionly.kpxe", []string{"blksize", "65464", "windowsize", "64"},
			map[string]string{"blksize": "65464", "windowsize": "1"}},
		{"windowsize 0 is left out", "undionly.kpxe", []string{"windowsize", "0"}, nil},
		{"windowsize 65536 is left out", "undionly.kpxe", []string{"windowsize", "65536"}, nil},
		{"windowsize negative is left out", "undionly.kpxe", []string{"windowsize", "-8"}, nil},
		{"windowsize not a number is left out", "undionly.kpxe", []string{"windowsize", "8x"}, nil},
		{"windowsize out of range, blksize kept", "undionly.kpxe", []string{"windowsize", "0", "blksize", "1468"},
			map[string]string{"blksize": "1468"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, oack := newRawClient(t, "127.0.0.1").windowGet(f.addr, tc.file, tc.opts...)
			if d := cmp.Diff(tc.want, oack); d != "" {
				t.Errorf("OACK (-want +got):\n%s", d)
			}
			if !bytes.Equal(got, f.files[tc.file]) {
				t.Fatalf("got %d bytes, want the %d of %s", len(got), len(f.files[tc.file]), tc.file)
			}
		})
	}
}

// TestWindowLoss plays the losses RFC 7440 describes with a hand-written
// client, block by block.
func TestWindowLoss(t *testing.T) {
	// windowsize 4, blksize 512 over undionly.kpxe (70 000 bytes, 137 blocks).
	begin := func(t *testing.T, f *fixture) (*rawClient, *net.UDPAddr) {
		c := newRawClient(t, "127.0.0.1")
		c.send(f.addr, rrq("undionly.kpxe", "octet", "windowsize", "4"))
		p := c.recv()
		if p.op != opOACK || p.options()["windowsize"] != "4" {
			t.Fatalf("got %v, want an OACK with windowsize 4", p)
		}
		c.send(p.from, ack(0))
		return c, p.from
	}
	window := func(c *rawClient, from, to uint16) {
		for b := from; b <= to; b++ {
			c.expectData(b)
		}
	}
	t.Run("lost ACK: the window is sent again", func(t *testing.T) {
		f := startServerWith(t, false, func(c *Config) { c.Timeout = 200 * time.Millisecond })
		c, tid := begin(t, f)
		window(c, 1, 4)
		// The client's ACK 4 is lost: the server's time-out resends 1-4.
		window(c, 1, 4)
		c.send(tid, ack(4))
		window(c, 5, 8)
		c.abort(tid)
	})
	t.Run("duplicate ACK is not answered with a window", func(t *testing.T) {
		// A long time-out: nothing is resent by the timer during the test,
		// so a second copy of 5-8 could only come from the duplicate.
		f := startServerWith(t, false, func(c *Config) { c.Timeout = time.Minute })
		c, tid := begin(t, f)
		window(c, 1, 4)
		c.send(tid, ack(4))
		c.send(tid, ack(4))
		window(c, 5, 8)
		c.send(tid, ack(8))
		window(c, 9, 12) // not 5-8 again
		c.abort(tid)
	})
	t.Run("ACK in mid-window restarts after it", func(t *testing.T) {
		f := startServerWith(t, false, func(c *Config) { c.Timeout = time.Minute })
		c, tid := begin(t, f)
		window(c, 1, 4)
		// Block 3 was lost: the client acknowledges 2, the last in order.
		c.send(tid, ack(2))
		window(c, 3, 6)
		// A stale ACK (older than the window) changes nothing either.
		c.send(tid, ack(1))
		c.send(tid, ack(6))
		window(c, 7, 10)
		c.abort(tid)
	})
	t.Run("packet from another port gets error 5", func(t *testing.T) {
		f := startServerWith(t, false, func(c *Config) { c.Timeout = time.Minute })
		c, tid := begin(t, f)
		window(c, 1, 4)
		stranger := newRawClient(t, "127.0.0.1")
		stranger.send(tid, ack(4))
		if p := stranger.recv(); p.op != opERROR || binary.BigEndian.Uint16(p.body) != codeUnknownTID {
			t.Fatalf("stranger got %v, want ERROR 5", p)
		}
		// The transfer did not take the stranger's ACK as its client's.
		c.send(tid, ack(4))
		window(c, 5, 8)
		c.abort(tid)
	})
	t.Run("a client that stops: bounded retransmits, then an error", func(t *testing.T) {
		const retries = 2
		f := startServerWith(t, false, func(c *Config) { c.Timeout, c.Retries = 100*time.Millisecond, retries })
		c, _ := begin(t, f)
		for range retries + 1 {
			window(c, 1, 4)
		}
		p := c.recv()
		if p.op != opERROR || binary.BigEndian.Uint16(p.body) != codeUndefined || !bytes.Contains(p.body, []byte("timed out")) {
			t.Fatalf("after %d retransmits got %v, want ERROR 0 (timed out)", retries, p)
		}
		e := waitEvent(t, f.events, proto.EventTFTPError, "undionly.kpxe")
		if !strings.Contains(e.Detail["error"], "timed out") {
			t.Errorf("event = %+v", e)
		}
		waitfor.True(t, "the transfer's slot back", func() bool { return f.srv.slots.of("127.0.0.1") == 0 })
		c.nothingPending()
	})
}

// TestATFTPWindowsize fetches with atftp's client, which asks for
// windowsize, and checks the bytes and the window in the server's log.
func TestATFTPWindowsize(t *testing.T) {
	if _, err := exec.LookPath("atftp"); err != nil {
		t.Fatalf("atftp is required (apt-get install atftp): %v", err)
	}
	f := startServer(t, true)
	for _, tc := range []struct {
		file    string
		opts    []string
		window  string
		blksize string
	}{
		{"undionly.kpxe", []string{"windowsize 8", "blksize 1468"}, "8", "1468"},
		{"EFI/BOOT/grub.efi", []string{"windowsize 8", "blksize 1468", "tsize 0"}, "8", "1468"},
		{"large.bin", []string{"windowsize 32", "blksize 1468"}, "32", "1468"},
		// 81 920 blocks: the block number rolls over inside a window.
		{"large.bin", []string{"windowsize 16", "blksize 512"}, "16", "512"},
	} {
		t.Run(tc.file+"/"+strings.Join(tc.opts, ","), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			args := []string{"-g", "-r", tc.file, "-l", out}
			for _, o := range tc.opts {
				args = append(args, "--option", o)
			}
			args = append(args, "127.0.0.1", fmt.Sprint(f.addr.Port))
			if b, err := exec.Command("atftp", args...).CombinedOutput(); err != nil {
				t.Fatalf("atftp %v: %v: %s", args, err, b)
			}
			got, err := os.ReadFile(out)
			if err != nil || !bytes.Equal(got, f.files[tc.file]) {
				t.Fatalf("got %d bytes (err %v), want %d", len(got), err, len(f.files[tc.file]))
			}
			// The window the server used, from its log line of the transfer.
			want := []string{"msg=sent", "file=" + tc.file + " ", fmt.Sprintf("bytes=%d ", len(got)),
				"blksize=" + tc.blksize + " ", "windowsize=" + tc.window}
			waitfor.True(t, fmt.Sprintf("a log line with %q", want), func() bool {
				for _, l := range strings.Split(f.logs.String(), "\n") {
					if containsAll(l, want) {
						return true
					}
				}
				return false
			})
		})
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func TestNetascii(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"a\nb\n", "a\r\nb\r\n"},
		{"a\rb", "a\r\x00b"},
		{"\r\n", "\r\x00\r\n"},
		{strings.Repeat("\n", 5000), strings.Repeat("\r\n", 5000)},
	}
	for _, tc := range tests {
		for _, read := range []struct {
			name string
			r    func(io.Reader) io.Reader
		}{
			{"whole", func(r io.Reader) io.Reader { return r }},
			{"one byte at a time", iotest.OneByteReader},
		} {
			t.Run(fmt.Sprintf("%q/%s", tc.in[:min(len(tc.in), 8)], read.name), func(t *testing.T) {
				got, err := io.ReadAll(read.r(newNetascii(strings.NewReader(tc.in))))
				if err != nil || string(got) != tc.want {
					t.Fatalf("got %q (err %v), want %q", got, err, tc.want)
				}
			})
		}
	}
}
