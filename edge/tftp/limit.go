package tftp

import (
	"fmt"
	"net"

	"github.com/fleetboot/fleetboot/edge/ratelimit"
	"github.com/fleetboot/fleetboot/proto"
)

// Repeats records events a client can repeat at will (refused and limited
// requests): per address and window, the first few as they come and the
// rest as one counted event. events.Aggregator satisfies it.
type Repeats interface {
	Count(source, kind, mac string, detail map[string]string)
}

// RateLimit bounds the requests one client address may make. A firmware
// fetches one to three files a boot (plus a size probe), so the default, 10
// a second after a burst of 100, leaves room for a rack rebooting in a loop
// and still turns a flood into a trickle. A negative Rate turns it off.
type RateLimit struct {
	Rate       float64
	Burst      int
	MaxClients int     // addresses tracked; default 4096
	Repeats    Repeats // nil: refusals are emitted one by one
}

const reasonRate = "rate limit"

func newRateLimit(r RateLimit) *ratelimit.PerSource {
	return ratelimit.New(ratelimit.Config{Rate: r.Rate, Burst: r.Burst, MaxSources: r.MaxClients},
		ratelimit.Config{Rate: 10, Burst: 100, MaxSources: 4096})
}

// limited refuses a request over its address's rate, before a slot or an
// event is spent on it: one log line an interval, one counted event a window.
func (s *Server) limited(ip net.IP) error {
	// Keyed by ratelimit.AddrKey: an IPv6 client has a /64 to pick from.
	if s.rate.Allow(ratelimit.AddrKey(ip)) {
		return nil
	}
	s.drops.Warn("tftp: request refused", "reason", reasonRate, "ip", ip.String())
	if r := s.cfg.RateLimit.Repeats; r != nil {
		r.Count(ratelimit.AddrKey(ip), proto.EventTFTPLimited, s.macFor(ip), map[string]string{"ip": ip.String()})
	}
	return fmt.Errorf("too many requests from %s: try again later", ip)
}

// emitRefusal records a refused request, counted per address when the
// server has Repeats.
func (s *Server) emitRefusal(ip net.IP, detail map[string]string) {
	r := s.cfg.RateLimit.Repeats
	if r == nil {
		s.emit(proto.EventTFTPError, ip, detail)
		return
	}
	detail["ip"] = ip.String()
	key := ratelimit.AddrKey(ip)
	if proto.HarmlessTFTPMiss(detail["file"]) {
		// Every Secure Boot start asks for seven of these: counted apart,
		// they do not use up the events that carry a machine's real
		// refusals (a grub.cfg or kernel it cannot get) with its MAC.
		key += "|probe"
	}
	r.Count(key, proto.EventTFTPError, s.macFor(ip), detail)
}
