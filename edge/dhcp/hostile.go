package dhcp

import (
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/fleetboot/fleetboot/proto"
)

// Reasons a packet is dropped before the handler decides anything. They key
// the rate-limited log: one line per reason per interval, whatever the flood.
const (
	reasonTruncated   = "truncated header"
	reasonCookie      = "bad magic cookie"
	reasonOptionEnd   = "option past the end"
	reasonNoEnd       = "no end option"
	reasonNotRequest  = "not a client request"
	reasonOverload    = "option overload"
	reasonOptionLong  = "option too long"
	reasonClientFlood = "client flood"
	reasonSourceFlood = "source flood"
	reasonOverloaded  = "server overloaded"
	reasonNotServed   = "not served"
	reasonNotSent     = "reply not sent" // the socket refused the reply
)

// bootpHeader is the fixed part of a DHCP packet up to and including the
// magic cookie.
const bootpHeader = 240

// parsePacket decodes one datagram into a request the handler may see, or
// refuses it with the reason for the log. Refusals happen here, in the read
// loop, before a goroutine and an in-flight slot are spent on the packet
// (Handle parses the machine again: it is cheap, and keeps Handle whole).
func parsePacket(pkt []byte) (*dhcpv4.DHCPv4, string, error) {
	req, err := dhcpv4.FromBytes(pkt)
	if err != nil {
		return nil, parseReason(pkt, err), fmt.Errorf("dhcp: malformed packet: %w", err)
	}
	if _, err := ParseMachine(req); err != nil {
		return nil, machineReason(err), err
	}
	return req, "", nil
}

// parseReason names why dhcpv4.FromBytes refused pkt. The library already
// checks every length (a short header, an option running past the end, a
// missing End option, as when a datagram longer than the read buffer is cut
// off); this only sorts its errors for the log.
func parseReason(pkt []byte, err error) string {
	switch {
	case len(pkt) < bootpHeader:
		return reasonTruncated
	case pkt[236] != 99 || pkt[237] != 130 || pkt[238] != 83 || pkt[239] != 99:
		return reasonCookie
	case errors.Is(err, io.ErrUnexpectedEOF):
		return reasonNoEnd
	}
	return reasonOptionEnd
}

// machineReason names why ParseMachine refused a request.
func machineReason(err error) string {
	switch {
	case errors.Is(err, ErrOptionOverload):
		return reasonOverload
	case errors.Is(err, ErrOptionTooLong):
		return reasonOptionLong
	}
	return reasonNotRequest
}

// Default limits on requests from unknown MACs per source address. The
// source is the address the datagram came from: a relay's, for machines
// behind a relay (the giaddr inside the packet is not used: anyone can
// write it); 0.0.0.0 for machines on the edge's own segment that have no
// address yet, which therefore share one bucket.
//
// A rack of 200 new machines powering on behind one relay sends about six
// packets each (DISCOVER and REQUEST from the PXE ROM, again from iPXE,
// again from the OS it boots): some 400 in the first seconds, 400 more
// seconds later, the rest over the next minutes. A burst of 1000 takes the
// first two rounds of the whole rack at once, with room for retries; 50 per
// second refills it in 20 s and carries the third round. A flood of random
// MACs from one source gets the same: 1000, then 50 a second, whatever it
// sends, and other sources keep their own buckets. Hosts the site knows are
// never limited per source (only per MAC, as every client): a rack of known
// machines boots however busy its relay is.
const (
	DefaultSourceRate  = 50
	DefaultSourceBurst = 1000
	maxSources         = 4096 // sources tracked (an LRU, as for clients)
)

// sourceLimits fills in the defaults: 0 means the default, a negative rate
// no limit (returned as 0).
func sourceLimits(rate float64, burst int) (float64, int) {
	if rate < 0 {
		return 0, 0
	}
	if rate == 0 {
		rate = DefaultSourceRate
	}
	if burst <= 0 {
		burst = DefaultSourceBurst
	}
	return rate, burst
}

// admit applies the rate limits in the read loop, before a request costs a
// goroutine: per client MAC, then per source address for MACs the site
// does not know. A refusal is logged (rate-limited) and counted into one
// event per window, never one event per packet.
func (s *Server) admit(req *dhcpv4.DHCPv4, peer *net.UDPAddr) bool {
	mac := req.ClientHWAddr.String()
	if !s.limit.Allow(mac) {
		s.m.dropped(reasonClientFlood)
		s.drops.Warn("dhcp: packet dropped", "reason", reasonClientFlood, "mac", mac,
			"rate", s.cfg.ClientRate, "burst", s.cfg.ClientBurst)
		s.h.counted.Count(proto.EventDHCPRateLimited, reasonClientFlood)
		return false
	}
	if s.source == nil {
		return true
	}
	if _, known := s.cfg.State.Host(mac); known {
		return true
	}
	src := "0.0.0.0"
	if peer != nil && peer.IP != nil {
		src = peer.IP.String()
	}
	if !s.source.Allow(src) {
		s.m.dropped(reasonSourceFlood)
		s.drops.Warn("dhcp: packet dropped", "reason", reasonSourceFlood, "source", src, "mac", mac,
			"rate", s.cfg.SourceRate, "burst", s.cfg.SourceBurst)
		s.h.counted.Count(proto.EventDHCPRateLimited, reasonSourceFlood)
		return false
	}
	return true
}
