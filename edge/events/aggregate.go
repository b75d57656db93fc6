package events

import (
	"maps"
	"strconv"
	"sync"
	"time"
)

// Sink receives events; the Recorder is one.
type Sink interface {
	Emit(kind, mac string, detail map[string]string)
}

// AggregatorConfig configures an Aggregator. Zero fields take the defaults.
type AggregatorConfig struct {
	Sink Sink
	// Window is how long counts of one kind and source accumulate before
	// they are sent as one event. Default 1 minute.
	Window time.Duration
	// Pass is how many events of one kind and source go to the sink as
	// they come in each window, so a single machine's refusal or unknown
	// boot is seen at once and in full. Default 3.
	Pass int
	// MaxSources bounds the (kind, source) pairs tracked in a window;
	// past it, new pairs are counted together under source "other", with
	// none passed on. Default 1024.
	MaxSources int
	Now        func() time.Time // nil: time.Now
}

// Aggregator turns events a client can repeat at will (refusals, requests
// for unknown MACs, rate-limited requests) into a bounded number of events:
// per kind, source address and window, the first Pass as they come and the
// rest as one event of the same kind with no MAC and the detail count,
// source, window_s and last_mac. A flood of any size from one address thus
// costs at most Pass+1 events a window, and from any number of addresses at
// most MaxSources×Pass+MaxSources+1 per kind. Safe for concurrent use.
type Aggregator struct {
	cfg AggregatorConfig

	mu     sync.Mutex
	start  time.Time // of the current window
	counts map[aggKey]*tally
	timer  *time.Timer // flushes a window nobody adds to any more
	closed bool
}

type aggKey struct{ kind, source string }

type tally struct {
	seen    int
	lastMAC string
}

// otherSource collects pairs beyond MaxSources.
const otherSource = "other"

// NewAggregator returns an aggregator sending to cfg.Sink. Close it to send
// the counts of the last window.
func NewAggregator(cfg AggregatorConfig) *Aggregator {
	if cfg.Window <= 0 {
		cfg.Window = time.Minute
	}
	if cfg.Pass <= 0 {
		cfg.Pass = 3
	}
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = 1024
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Aggregator{cfg: cfg, counts: map[aggKey]*tally{}}
}

type pending struct {
	kind, mac string
	detail    map[string]string
}

// Count records one event of kind about mac from source (a client address).
func (a *Aggregator) Count(source, kind, mac string, detail map[string]string) {
	now := a.cfg.Now()
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		a.cfg.Sink.Emit(kind, mac, detail)
		return
	}
	out := a.rollLocked(now)
	k := aggKey{kind, source}
	t, ok := a.counts[k]
	if !ok && len(a.counts) >= a.cfg.MaxSources {
		k = aggKey{kind, otherSource}
		t, ok = a.counts[k]
	}
	if !ok {
		t = &tally{}
		a.counts[k] = t
		if a.timer == nil {
			a.timer = time.AfterFunc(a.cfg.Window, a.onTimer)
		}
	}
	t.seen++
	t.lastMAC = mac
	if t.seen <= a.cfg.Pass && k.source != otherSource {
		out = append(out, pending{kind, mac, maps.Clone(detail)})
	}
	a.mu.Unlock()
	a.send(out)
}

// rollLocked ends the current window if it is over, returning its counts.
func (a *Aggregator) rollLocked(now time.Time) []pending {
	if a.start.IsZero() {
		a.start = now
	}
	if now.Sub(a.start) < a.cfg.Window {
		return nil
	}
	out := a.summariesLocked()
	a.start = now
	return out
}

// summariesLocked returns the counted events of the window and clears it.
func (a *Aggregator) summariesLocked() []pending {
	var out []pending
	for k, t := range a.counts {
		passed := a.cfg.Pass
		if k.source == otherSource {
			passed = 0
		}
		if n := t.seen - passed; n > 0 {
			out = append(out, pending{k.kind, "", map[string]string{
				"count": strconv.Itoa(n), "source": k.source, "last_mac": t.lastMAC,
				"window_s": strconv.Itoa(int(a.cfg.Window / time.Second)),
			}})
		}
	}
	clear(a.counts)
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	return out
}

func (a *Aggregator) onTimer() {
	a.mu.Lock()
	var out []pending
	if !a.closed {
		a.timer = nil
		if out = a.rollLocked(a.cfg.Now()); out == nil && len(a.counts) > 0 {
			// Early (a clock that moved less than the timer): try again.
			a.timer = time.AfterFunc(a.cfg.Window-a.cfg.Now().Sub(a.start), a.onTimer)
		}
	}
	a.mu.Unlock()
	a.send(out)
}

func (a *Aggregator) send(out []pending) {
	for _, p := range out {
		a.cfg.Sink.Emit(p.kind, p.mac, p.detail)
	}
}

// Close sends the counts of the current window; later events go to the
// sink one by one.
func (a *Aggregator) Close() {
	a.mu.Lock()
	var out []pending
	if !a.closed {
		out = a.summariesLocked()
		a.closed = true
	}
	a.mu.Unlock()
	a.send(out)
}
