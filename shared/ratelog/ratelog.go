// Package ratelog is a slog.Handler that lets a log line through at most
// once per interval for each reason, and tells on the next line how many it
// held back. Ports that face the network log hostile input through it: a
// flood of bad packets must cost one line per interval, not one per packet,
// or the log becomes the attack's amplifier.
//
// The reason is the record's message plus the value of its "reason"
// attribute, if any; other attributes (addresses, MACs) vary per packet and
// do not make a new reason. Only the first line of a burst carries its
// attributes: the rest are counted, not stored.
//
// It lives under edge/dhcp for now; it has no dependency on DHCP and is meant
// for shared/ratelog.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// MaxReasons bounds the reasons tracked at once. Reasons are messages
// written in code, so the set is small; the bound only matters if a caller
// puts packet data into a message or reason by mistake. Past it, new reasons
// share one slot: still limited, never unbounded memory.
const MaxReasons = 256

// overflowKey is the shared slot for reasons beyond MaxReasons.
const overflowKey = "\x00overflow"

// Handler limits the records it passes to the next handler.
type Handler struct {
	next  slog.Handler
	state *state // shared by every handler derived with WithAttrs/WithGroup
	// reason is a "reason" attribute attached with WithAttrs: it keys the
	// records of this handler too.
	reason string
}

type state struct {
	every time.Duration
	now   func() time.Time
	mu    sync.Mutex
	seen  map[string]*entry
}

type entry struct {
	last       time.Time // when a line last went through
	suppressed int       // lines held back since then
}

// New returns a handler that passes at most one record per reason every
// interval to next. A non-positive interval means 10 s.
func New(next slog.Handler, every time.Duration) *Handler {
	return newWithClock(next, every, time.Now)
}

func newWithClock(next slog.Handler, every time.Duration, now func() time.Time) *Handler {
	if every <= 0 {
		every = 10 * time.Second
	}
	return &Handler{next: next, state: &state{every: every, now: now, seen: map[string]*entry{}}}
}

// Logger is a shorthand: a *slog.Logger over l's handler, rate-limited.
func Logger(l *slog.Logger, every time.Duration) *slog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return slog.New(New(l.Handler(), every))
}

// Enabled reports whether next handles the level.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle passes r on if its reason has had no line for an interval, with
// the count of records held back since the last one as "suppressed".
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	key := r.Message + "\x00" + h.reason
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "reason" {
			key = r.Message + "\x00" + a.Value.String()
			return false
		}
		return true
	})
	n, ok := h.state.admit(key)
	if !ok {
		return nil
	}
	if n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", n))
	}
	return h.next.Handle(ctx, r)
}

// admit decides for one record of key: whether it goes through and, if so,
// how many of its kind were held back before it.
func (s *state) admit(key string) (int, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.seen[key]
	if !ok {
		if len(s.seen) >= MaxReasons {
			s.prune(now)
		}
		if len(s.seen) >= MaxReasons {
			key = overflowKey
			e = s.seen[key]
		}
		if e == nil {
			s.seen[key] = &entry{last: now}
			return 0, true
		}
	}
	if now.Sub(e.last) < s.every {
		e.suppressed++
		return 0, false
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return n, true
}

// prune forgets reasons quiet for an interval with nothing held back: the
// next line of such a reason goes through anyway.
func (s *state) prune(now time.Time) {
	for k, e := range s.seen {
		if e.suppressed == 0 && now.Sub(e.last) >= s.every {
			delete(s.seen, k)
		}
	}
}

// WithAttrs returns a handler with attrs that shares this one's limits.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	for _, a := range attrs {
		if a.Key == "reason" {
			c.reason = a.Value.String()
		}
	}
	c.next = h.next.WithAttrs(attrs)
	return &c
}

// WithGroup returns a handler with the group that shares this one's limits.
func (h *Handler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}
