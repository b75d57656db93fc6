// Package ra sends ICMPv6 router advertisements (RFC 4861) on the edge's
// DHCP segment so that iPXE's IPv6 autoconfiguration ends at once instead
// of timing out, without making the edge anybody's router.
//
// Why: each time iPXE configures a NIC it also starts IPv6
// autoconfiguration, solicits routers and, on a segment with no router
// advertisements (IPv4-only provisioning VLANs), waits for its retry timer
// to give up: about 12–16 s per iPXE instance, twice in a chain boot. iPXE
// ends the wait on the first advertisement it receives while the wait runs,
// whatever it carries; then it starts DHCPv6 only when the M or O flag is
// set. So the edge advertises:
//
//   - router lifetime 0: no host makes the edge its default router;
//   - no prefix information: no host gets an address from the edge;
//   - M and O clear: iPXE does not go on to wait for a DHCPv6 server;
//   - current hop limit, reachable time and retransmit timer 0
//     ("unspecified"): hosts keep their own values;
//   - the source link-layer address, as RFC 4861 §4.2 recommends.
//
// Advert and Classify are pure functions; Sender is the thin adapter that
// owns the raw ICMPv6 socket and the RFC 4861 timers.
package ra

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
)

// ICMPv6 types and NDP option types (RFC 4861 §4.1, §4.2, §4.6).
const (
	typeRouterSolicitation  = 133
	typeRouterAdvertisement = 134
	optSourceLinkAddr       = 1

	flagManaged = 0x80 // M: addresses from DHCPv6
	flagOther   = 0x40 // O: other configuration from DHCPv6

	// ndpHopLimit is the IPv6 hop limit every NDP message is sent with and
	// must arrive with (RFC 4861 §6.1): proof it was not forwarded.
	ndpHopLimit = 255
)

// Advert is the content of a router advertisement. The zero value plus a
// SourceLinkAddr is what the edge sends (see the package doc).
type Advert struct {
	CurHopLimit    uint8  // 0: unspecified
	Managed        bool   // M flag
	Other          bool   // O flag
	RouterLifetime uint16 // seconds; 0: not a default router
	ReachableTime  uint32 // milliseconds; 0: unspecified
	RetransTimer   uint32 // milliseconds; 0: unspecified
	SourceLinkAddr net.HardwareAddr
}

// Marshal builds the ICMPv6 message of the advertisement. The checksum is
// left 0: on a raw ICMPv6 socket the kernel always computes it (RFC 3542
// §3.1), from the source address it picks.
func (a Advert) Marshal() []byte {
	b := make([]byte, 16, 16+8)
	b[0] = typeRouterAdvertisement
	b[4] = a.CurHopLimit
	if a.Managed {
		b[5] |= flagManaged
	}
	if a.Other {
		b[5] |= flagOther
	}
	binary.BigEndian.PutUint16(b[6:], a.RouterLifetime)
	binary.BigEndian.PutUint32(b[8:], a.ReachableTime)
	binary.BigEndian.PutUint32(b[12:], a.RetransTimer)
	if len(a.SourceLinkAddr) > 0 {
		// Option length is in units of 8 octets, type and length included.
		n := (2 + len(a.SourceLinkAddr) + 7) / 8
		opt := make([]byte, n*8)
		opt[0], opt[1] = optSourceLinkAddr, byte(n)
		copy(opt[2:], a.SourceLinkAddr)
		b = append(b, opt...)
	}
	return b
}

// Kind is what a received ICMPv6 message means to the sender.
type Kind int

const (
	Ignore        Kind = iota // not for us, or invalid: drop silently
	Solicitation              // a valid router solicitation: answer it
	ForeignAdvert             // a valid advertisement from another router
)

// ErrInvalid marks a message that fails RFC 4861 validation.
var ErrInvalid = errors.New("ra: invalid neighbour discovery message")

// Classify validates a received ICMPv6 message by RFC 4861 §6.1.1 (router
// solicitation) and §6.1.2 (router advertisement). hopLimit is the IPv6 hop
// limit it arrived with (-1 when unknown, which fails validation), src its
// source address. An invalid message is Ignore with an error saying why.
func Classify(b []byte, hopLimit int, src netip.Addr) (Kind, error) {
	if len(b) < 8 {
		return Ignore, errors.Join(ErrInvalid, errors.New("shorter than 8 bytes"))
	}
	var kind Kind
	var optStart int
	switch b[0] {
	case typeRouterSolicitation:
		kind, optStart = Solicitation, 8
	case typeRouterAdvertisement:
		kind, optStart = ForeignAdvert, 16
	default:
		return Ignore, nil
	}
	switch {
	case hopLimit != ndpHopLimit:
		return Ignore, errors.Join(ErrInvalid, errors.New("hop limit is not 255"))
	case b[1] != 0:
		return Ignore, errors.Join(ErrInvalid, errors.New("ICMP code is not 0"))
	case len(b) < optStart:
		return Ignore, errors.Join(ErrInvalid, errors.New("truncated"))
	case kind == ForeignAdvert && !src.Is6() || kind == ForeignAdvert && !src.IsLinkLocalUnicast():
		return Ignore, errors.Join(ErrInvalid, errors.New("advertisement source is not link-local"))
	}
	hasSLLA := false
	for o := b[optStart:]; len(o) > 0; {
		if len(o) < 2 || o[1] == 0 || int(o[1])*8 > len(o) {
			return Ignore, errors.Join(ErrInvalid, errors.New("malformed option"))
		}
		if o[0] == optSourceLinkAddr {
			hasSLLA = true
		}
		o = o[int(o[1])*8:]
	}
	if kind == Solicitation && src.IsUnspecified() && hasSLLA {
		return Ignore, errors.Join(ErrInvalid, errors.New("solicitation from :: carries a link-layer address"))
	}
	return kind, nil
}
