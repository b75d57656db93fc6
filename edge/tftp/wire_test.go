package tftp

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name string
		pkt  []byte
		want request
		err  string
	}{
		{"plain", rrq("a.efi", "octet"), request{op: opRRQ, filename: "a.efi", mode: "octet"}, ""},
		{"options, names lower-cased, first of a repeated name kept", rrq("a", "octet", "BlkSize", "1468", "blksize", "9", "windowsize", "4"),
			request{op: opRRQ, filename: "a", mode: "octet", opts: []option{{"blksize", "1468"}, {"windowsize", "4"}}}, ""},
		{"dangling option name ignored", rrq("a", "octet", "tsize"), request{op: opRRQ, filename: "a", mode: "octet"}, ""},
		{"write request", []byte("\x00\x02up\x00octet\x00"), request{op: opWRQ, filename: "up", mode: "octet"}, ""},
		{"last field not terminated", []byte("\x00\x01a\x00octet"), request{}, "not NUL-terminated"},
		{"no mode", []byte("\x00\x01a\x00"), request{}, "no transfer mode"},
		{"ACK on the server port", []byte{0, opACK, 0, 1}, request{}, "opcode 4"},
		{"one byte", []byte{0}, request{}, "1 bytes"},
		{"longer than 516 bytes", rrq(strings.Repeat("a", 600), "octet"), request{}, "more than 516"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRequest(tc.pkt)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got, cmp.AllowUnexported(request{}, option{})); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// FuzzParseRequest: any datagram is parsed or refused without a panic; a
// parsed request encodes back to itself, and the OACK negotiated from it
// holds every value inside the bounds the server promises.
func FuzzParseRequest(f *testing.F) {
	for _, b := range [][]byte{
		rrq("undionly.kpxe", "octet"),
		rrq("ipxe.efi", "octet", "tsize", "0", "blksize", "1468", "windowsize", "4"),
		rrq("a", "octet", "windowsize", "65535", "blksize", "65464", "timeout", "255"),
		rrq("a", "netascii", "WINDOWSIZE", "0", "blksize", "1", "timeout", "0", "tsize", "-1"),
		rrq("a", "octet", "windowsize", "999999999999"),
		[]byte("\x00\x02up\x00octet\x00"),
		{0, opACK, 0, 1},
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		req, err := parseRequest(pkt)
		if err != nil {
			return
		}
		if req.op != opRRQ && req.op != opWRQ {
			t.Fatalf("opcode %d parsed as a request", req.op)
		}
		var fields []string
		for _, o := range req.opts {
			if o.name != strings.ToLower(o.name) {
				t.Fatalf("option name %q not lower-cased", o.name)
			}
			fields = append(fields, o.name, o.value)
		}
		again, err := parseRequest(append([]byte{0, byte(req.op)}, rrq(req.filename, req.mode, fields...)[2:]...))
		if err != nil || !cmp.Equal(req, again, cmp.AllowUnexported(request{}, option{})) {
			t.Fatalf("re-encoded %+v parsed as %+v (%v)", req, again, err)
		}
		const maxBlk, size = 1452, 70000
		tr := &transfer{req: req, maxBlk: maxBlk, size: size, timeout: time.Second}
		oack := tr.negotiate()
		seen := map[string]bool{}
		for _, o := range oack {
			if _, asked := req.opt(o.name); !asked || seen[o.name] {
				t.Fatalf("OACK %v: %q not asked for, or twice", oack, o.name)
			}
			seen[o.name] = true
			n, err := strconv.Atoi(o.value)
			if err != nil {
				t.Fatalf("OACK %v: %s=%q", oack, o.name, o.value)
			}
			ok := map[string]bool{
				"blksize":    n >= minBlksize && n <= maxBlk && n == tr.blksize,
				"tsize":      n == size,
				"timeout":    n >= minTimeoutOpt && n <= maxTimeoutOpt && tr.timeout == time.Duration(n)*time.Second,
				"windowsize": n >= 1 && n <= maxWindow && n == tr.window && (n == 1 || n*tr.blksize <= maxWindowBytes),
			}[o.name]
			if !ok {
				t.Fatalf("OACK %v: %s=%d out of bounds (blksize %d, window %d)", oack, o.name, n, tr.blksize, tr.window)
			}
		}
		if !seen["windowsize"] && tr.window != 1 || !seen["blksize"] && tr.blksize != defaultBlksize {
			t.Fatalf("OACK %v but blksize %d, window %d", oack, tr.blksize, tr.window)
		}
		if b := packOACK(nil, oack); len(oack) > 0 && !bytes.HasSuffix(b, []byte{0}) {
			t.Fatalf("OACK packet %q", b)
		}
	})
}
