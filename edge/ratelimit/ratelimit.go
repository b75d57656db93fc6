// Package ratelimit bounds the requests one source (an address, or a DHCP
// client MAC) may make of the edge's HTTP, TFTP and DHCP servers: a token
// bucket per source (a burst, then a steady rate), kept in a table of
// bounded size. Anyone on the boot network
// can send requests; this keeps one of them from taking the edge's work,
// its logs or its event stream for itself.
package ratelimit

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Config of a PerSource limiter. Zero fields take the defaults the caller
// passes to New.
type Config struct {
	Rate       float64          // tokens per second per source; negative: no limit
	Burst      int              // tokens a quiet source has
	MaxSources int              // sources tracked; the least recently seen is forgotten first
	Now        func() time.Time // nil: time.Now
}

// PerSource is a token bucket per source. Safe for concurrent use.
//
// A source forgotten because MaxSources newer ones came since starts again
// with a full bucket: an attacker with more addresses than the table holds
// gets a burst per address, and memory stays bounded whatever it sends.
type PerSource struct {
	rate  float64
	burst float64
	now   func() time.Time
	mu    sync.Mutex
	seen  *simplelru.LRU[string, *bucket]
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a limiter for cfg, with def filling its zero fields; nil when
// the rate is negative (no limit: Allow on a nil *PerSource is true).
func New(cfg, def Config) *PerSource {
	if cfg.Rate == 0 {
		cfg.Rate = def.Rate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = def.Burst
	}
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = def.MaxSources
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rate < 0 {
		return nil
	}
	lru, _ := simplelru.NewLRU[string, *bucket](max(cfg.MaxSources, 1), nil)
	return &PerSource{rate: cfg.Rate, burst: float64(max(cfg.Burst, 1)), now: cfg.Now, seen: lru}
}

// Allow takes a token for source, or reports that it has none left.
func (l *PerSource) Allow(source string) bool {
	if l == nil {
		return true
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.seen.Get(source)
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.seen.Add(source, b)
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// AddrKey is the source key of a client address: the address itself for
// IPv4 (an IPv4-mapped IPv6 address included), and its /64 for IPv6, the
// least a single machine can pick addresses from at will (SLAAC and
// link-local both hand a host a whole /64), so that rotating addresses
// does not buy a new bucket each time. "" for no address.
func AddrKey(ip net.IP) string {
	if ip == nil {
		return ""
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return ip.String()
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.String()
}
