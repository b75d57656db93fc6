package ra

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestAdvertMarshal(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Advert
		want []byte
	}{
		{
			// What the edge sends: lifetime 0, M=O=0, nothing
			// specified, its MAC as source link-layer address.
			name: "edge",
			in:   Advert{SourceLinkAddr: mac("52:54:00:12:34:56")},
			want: []byte{
				134, 0, 0, 0, // type RA, code 0, checksum (kernel's)
				0, 0x00, 0, 0, // cur hop limit, flags, router lifetime
				0, 0, 0, 0, // reachable time
				0, 0, 0, 0, // retrans timer
				1, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // SLLA, 1×8 bytes
			},
		},
		{
			name: "no link-layer address",
			in:   Advert{},
			want: []byte{134, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		},
		{
			// Field positions and byte order, for a reader checking the
			// edge's zeros are in the right places.
			name: "every field set",
			in: Advert{CurHopLimit: 64, Managed: true, Other: true, RouterLifetime: 1800,
				ReachableTime: 30000, RetransTimer: 1000, SourceLinkAddr: mac("02:00:00:00:00:01")},
			want: []byte{
				134, 0, 0, 0,
				64, 0xc0, 0x07, 0x08,
				0, 0, 0x75, 0x30,
				0, 0, 0x03, 0xe8,
				1, 1, 2, 0, 0, 0, 0, 1,
			},
		},
		{name: "M only", in: Advert{Managed: true}, want: []byte{134, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{name: "O only", in: Advert{Other: true}, want: []byte{134, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{
			// An 8-byte (EUI-64) link-layer address needs two blocks.
			name: "long link-layer address",
			in:   Advert{SourceLinkAddr: net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8}},
			want: []byte{134, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
				1, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.in.Marshal()); diff != "" {
				t.Errorf("Marshal() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	ll := netip.MustParseAddr("fe80::5054:ff:fe12:3456")
	unspec := netip.IPv6Unspecified()
	rs := []byte{133, 0, 0, 0, 0, 0, 0, 0}
	rsSLLA := append(append([]byte{}, rs...), 1, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56)
	ra := Advert{RouterLifetime: 1800, SourceLinkAddr: mac("52:54:00:aa:bb:cc")}.Marshal()
	for _, tc := range []struct {
		name    string
		b       []byte
		hop     int
		src     netip.Addr
		want    Kind
		invalid bool
	}{
		{name: "iPXE's solicitation", b: rsSLLA, hop: 255, src: ll, want: Solicitation},
		{name: "solicitation from ::", b: rs, hop: 255, src: unspec, want: Solicitation},
		{name: "solicitation from :: with SLLA", b: rsSLLA, hop: 255, src: unspec, invalid: true},
		{name: "forwarded solicitation", b: rsSLLA, hop: 254, src: ll, invalid: true},
		{name: "hop limit unknown", b: rsSLLA, hop: -1, src: ll, invalid: true},
		{name: "code not 0", b: []byte{133, 1, 0, 0, 0, 0, 0, 0}, hop: 255, src: ll, invalid: true},
		{name: "short", b: []byte{133, 0, 0, 0}, hop: 255, src: ll, invalid: true},
		{name: "zero-length option", b: append(append([]byte{}, rs...), 1, 0, 0, 0, 0, 0, 0, 0), hop: 255, src: ll, invalid: true},
		{name: "option past the end", b: append(append([]byte{}, rs...), 1, 2, 0, 0, 0, 0, 0, 0), hop: 255, src: ll, invalid: true},
		{name: "option of one byte", b: append(append([]byte{}, rs...), 1), hop: 255, src: ll, invalid: true},
		{name: "another router's advertisement", b: ra, hop: 255, src: ll, want: ForeignAdvert},
		{name: "advertisement from a global address", b: ra, hop: 255, src: netip.MustParseAddr("2001:db8::1"), invalid: true},
		{name: "truncated advertisement", b: ra[:12], hop: 255, src: ll, invalid: true},
		{name: "echo request", b: []byte{128, 0, 0, 0, 0, 0, 0, 0}, hop: 64, src: ll, want: Ignore},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Classify(tc.b, tc.hop, tc.src)
			if tc.invalid {
				if !errors.Is(err, ErrInvalid) || got != Ignore {
					t.Fatalf("Classify = %v, %v; want Ignore, ErrInvalid", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Classify = %v, %v; want %v, nil", got, err, tc.want)
			}
		})
	}
}

func TestIntervals(t *testing.T) {
	lo := func(int64) int64 { return 0 }
	hi := func(n int64) int64 { return n - 1 }
	for _, tc := range []struct {
		name           string
		in             Intervals
		sent           int
		rnd            func(int64) int64
		want           time.Duration
		wantReplyDelay time.Duration
	}{
		{name: "defaults, shortest", in: Intervals{}, sent: 5, rnd: lo, want: 200 * time.Second, wantReplyDelay: 0},
		{name: "defaults, longest", in: Intervals{}, sent: 5, rnd: hi, want: 600 * time.Second, wantReplyDelay: 40 * time.Millisecond},
		{name: "initial adverts come within 16 s", in: Intervals{}, sent: 2, rnd: hi, want: 16 * time.Second, wantReplyDelay: 40 * time.Millisecond},
		{name: "max held to 1800 s", in: Intervals{Max: time.Hour}, sent: 5, rnd: hi, want: 1800 * time.Second, wantReplyDelay: 40 * time.Millisecond},
		{name: "max held to 4 s, min to 3 s", in: Intervals{Max: time.Second}, sent: 5, rnd: lo, want: 3 * time.Second},
		{name: "min held to 0.75 max", in: Intervals{Max: 100 * time.Second, Min: 99 * time.Second}, sent: 5, rnd: lo, want: 75 * time.Second},
		{name: "reply delay held to 500 ms", in: Intervals{ReplyDelay: time.Minute}, sent: 5, rnd: hi, want: 600 * time.Second, wantReplyDelay: 500 * time.Millisecond},
		{name: "no reply delay", in: Intervals{ReplyDelay: -1}, sent: 5, rnd: hi, want: 600 * time.Second, wantReplyDelay: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iv := tc.in.bounded()
			if got := iv.next(tc.sent, tc.rnd); got != tc.want {
				t.Errorf("next = %v, want %v", got, tc.want)
			}
			if got := iv.replyDelay(tc.rnd); got != tc.wantReplyDelay {
				t.Errorf("replyDelay = %v, want %v", got, tc.wantReplyDelay)
			}
		})
	}
}
