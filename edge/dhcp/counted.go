package dhcp

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// eventCounter keeps what strangers on the boot network can cause at will
// (requests from MACs the site does not know, requests refused by a rate
// limit) from becoming one event each: a flood of random MACs would
// otherwise grow the EVENTS stream without bound and push real history out.
// Unknown-MAC events pass as they are while the window's budget lasts (so
// the first new machines of a window still show their boot chain); the rest,
// and every rate-limited request, are counted and reported as one event per
// kind and reason when the window ends.
type eventCounter struct {
	sink   EventSink // nil discards
	window time.Duration
	budget int
	now    func() time.Time

	mu     sync.Mutex
	start  time.Time        // of the budget's window
	passed int              // unknown-MAC events passed in it
	counts map[countKey]int // counted since the last flush
	timer  *time.Timer      // the pending flush, nil when nothing is counted
}

type countKey struct{ kind, reason string }

func newEventCounter(sink EventSink, window time.Duration, budget int, now func() time.Time) *eventCounter {
	return &eventCounter{sink: sink, window: window, budget: budget, now: now, counts: map[countKey]int{}}
}

// pass reports whether an event of kind about an unknown MAC may be
// emitted as it is, using the budget; past it the event is counted under
// proto.EventDHCPUnknown (reason: its kind) instead. The handler asks
// before building the event's details: a flood of strangers costs a count,
// not a map per event.
func (c *eventCounter) pass(kind string) bool {
	if c.sink == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); now.Sub(c.start) >= c.window {
		c.start, c.passed = now, 0
	}
	if c.passed < c.budget {
		c.passed++
		return true
	}
	c.countLocked(countKey{proto.EventDHCPUnknown, kind})
	return false
}

// Count counts one request refused for reason under kind.
func (c *eventCounter) Count(kind, reason string) {
	if c.sink == nil {
		return
	}
	c.mu.Lock()
	c.countLocked(countKey{kind, reason})
	c.mu.Unlock()
}

func (c *eventCounter) countLocked(k countKey) {
	c.counts[k]++
	if c.timer == nil {
		c.timer = time.AfterFunc(c.window, c.flush)
	}
}

// flush emits one event per kind and reason counted since the last flush,
// with the count. The server calls it when it stops, so nothing counted is
// lost.
func (c *eventCounter) flush() {
	if c.sink == nil {
		return
	}
	c.mu.Lock()
	counts := c.counts
	c.counts = map[countKey]int{}
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.mu.Unlock()
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b countKey) int {
		return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.reason, b.reason))
	})
	for _, k := range keys {
		c.sink.Emit(k.kind, "", map[string]string{
			"count": strconv.Itoa(counts[k]), "reason": k.reason, "window": c.window.String(),
		})
	}
}

// windowBudget lets budget takers through per window, then refuses the rest
// of the window.
type windowBudget struct {
	window time.Duration
	budget int
	now    func() time.Time

	mu    sync.Mutex
	start time.Time
	taken int
}

// take reports whether the window's budget has room, using one slot.
func (b *windowBudget) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now := b.now(); now.Sub(b.start) >= b.window {
		b.start, b.taken = now, 0
	}
	if b.taken >= b.budget {
		return false
	}
	b.taken++
	return true
}

// minLevel passes only records at min or above to next. The attributes
// given With are kept and handed to next only for a record that passes:
// a request whose lines are all below min costs no formatting.
type minLevel struct {
	next  slog.Handler
	min   slog.Level
	attrs []slog.Attr
}

func (h *minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.next.Enabled(ctx, l)
}

func (h *minLevel) Handle(ctx context.Context, r slog.Record) error {
	next := h.next
	if len(h.attrs) > 0 {
		next = next.WithAttrs(h.attrs)
	}
	return next.Handle(ctx, r)
}

func (h *minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return &minLevel{next: h.next, min: h.min, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *minLevel) WithGroup(name string) slog.Handler {
	next := h.next
	if len(h.attrs) > 0 {
		next = next.WithAttrs(h.attrs)
	}
	return &minLevel{next: next.WithGroup(name), min: h.min}
}
