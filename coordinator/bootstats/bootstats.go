// Package bootstats counts boots as the edges report them, for /metrics:
// boots started, completed, and failed by the timeline's diagnosis. It
// groups each machine's events into boots with the same rules as `host
// timeline` (package timeline), so a failure counted here is one an
// operator can look up there.
//
// Each coordinator counts every boot it sees on the EVENTS stream: with
// several coordinators, scrape one or aggregate with max(), not sum().
package bootstats

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetboot/fleetboot/coordinator/eventlog"
	"github.com/fleetboot/fleetboot/coordinator/timeline"
	"github.com/fleetboot/fleetboot/proto"
)

// Bounds on what the tracker holds: machines with a boot open, and events
// per open boot (a boot is tens of events; more is a flood, and the boot's
// outcome shows in its first events anyway).
const (
	DefaultMaxMachines = 100_000
	maxEvents          = 512
)

// Tracker follows boots. Add and Sweep are safe for concurrent use.
type Tracker struct {
	mu          sync.Mutex
	open        map[string]*openBoot // by MAC
	settle      time.Duration
	gap         time.Duration
	maxMachines int
	m           metrics
	// hourly counts boots started per site and hour for the web panel's
	// sparklines: since this coordinator started, like the counters.
	hourly map[string]*[hoursKept]hourCount
}

// hoursKept is how many hours of boots per site the tracker keeps, and
// maxSites how many sites (an edge names its own site only, so there are
// as many as the fleet has; the bound stops a bug from growing it).
const (
	hoursKept = 24
	maxSites  = 10_000
)

// hourCount is one hour's boots: hour is the hour's Unix time / 3600, so a
// slot left from a day before reads as zero.
type hourCount struct {
	hour int64
	n    int
}

// openBoot is the current boot of one machine.
type openBoot struct {
	events  []proto.Event
	last    time.Time // the newest event's time
	started bool      // counted in started_total
}

type metrics struct {
	started, completed prometheus.Counter
	failed             *prometheus.CounterVec // diagnosis rule
	open               prometheus.GaugeFunc
	evicted            prometheus.Counter
}

// Options tune a Tracker.
type Options struct {
	Settle      time.Duration // quiet time after which a boot is over; timeline.DefaultSettle when 0
	Gap         time.Duration // timeline.DefaultGap when 0
	MaxMachines int           // DefaultMaxMachines when 0
}

// New makes a Tracker whose series are registered on reg.
func New(reg prometheus.Registerer, o Options) (*Tracker, error) {
	t := &Tracker{open: map[string]*openBoot{}, hourly: map[string]*[hoursKept]hourCount{}, settle: o.Settle, gap: o.Gap, maxMachines: o.MaxMachines}
	if t.settle <= 0 {
		t.settle = timeline.DefaultSettle
	}
	if t.gap <= 0 {
		t.gap = timeline.DefaultGap
	}
	if t.maxMachines <= 0 {
		t.maxMachines = DefaultMaxMachines
	}
	t.m = metrics{
		started: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetboot_boots_started_total",
			Help: "Network boots that got past DHCP (a loader, script or artifact asked for), or stopped in it with a diagnosis."}),
		completed: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetboot_boots_completed_total",
			Help: "Boots that ended with no problem diagnosed (kernel and initrd delivered, or the script's decision carried out)."}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetboot_boots_failed_total",
			Help: "Boots that ended with a problem, by the first diagnosis rule of `fleetboot host timeline`."}, []string{"diagnosis"}),
		open: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fleetboot_boots_in_progress",
			Help: "Machines whose current boot has started and is not over yet."}, t.inProgress),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetboot_boots_untracked_events_total",
			Help: "Events of machines beyond the tracker's bound (machines booting at once), left out of the boot counts."}),
	}
	for _, c := range []prometheus.Collector{t.m.started, t.m.completed, t.m.failed, t.m.open, t.m.evicted} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("bootstats: register metrics: %w", err)
		}
	}
	return t, nil
}

func (t *Tracker) inProgress() float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, b := range t.open {
		if b.started {
			n++
		}
	}
	return float64(n)
}

// Add takes one event. A DISCOVER that timeline.Group takes for a new boot
// (the machine rebooted) ends the open one.
func (t *Tracker) Add(ev proto.Event) {
	if ev.MAC == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.open[ev.MAC]
	if b == nil {
		if len(t.open) >= t.maxMachines {
			t.m.evicted.Inc()
			return
		}
		b = &openBoot{}
		t.open[ev.MAC] = b
	}
	if len(b.events) >= maxEvents {
		b.last = later(b.last, ev.Time)
		return
	}
	b.events = append(b.events, ev)
	b.last = later(b.last, ev.Time)
	boots := timeline.Group(b.events, t.gap)
	for _, done := range boots[:len(boots)-1] {
		t.finish(done, b.started)
		b.started = false
	}
	if len(boots) > 1 {
		cur := boots[len(boots)-1]
		b.events = b.events[:0]
		for _, s := range cur.Steps {
			b.events = append(b.events, s.Event)
		}
	}
	if !b.started && chainStep(ev) {
		b.started = true
		t.m.started.Inc()
		t.countHour(ev.Site, ev.Time)
	}
}

// countHour counts a boot started at site at time at. Callers hold t.mu.
func (t *Tracker) countHour(site string, at time.Time) {
	ring := t.hourly[site]
	if ring == nil {
		if len(t.hourly) >= maxSites {
			return
		}
		ring = new([hoursKept]hourCount)
		t.hourly[site] = ring
	}
	h := at.Unix() / 3600
	c := &ring[h%hoursKept]
	if c.hour != h {
		*c = hourCount{hour: h}
	}
	c.n++
}

// BootsPerHour returns the boots started at site in each of the last 24
// hours up to now, oldest first (the last is the hour now is in). They are
// counted since this coordinator started.
func (t *Tracker) BootsPerHour(site string, now time.Time) []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]int, hoursKept)
	ring := t.hourly[site]
	if ring == nil {
		return out
	}
	cur := now.Unix() / 3600
	for i := range out {
		h := cur - int64(hoursKept-1-i)
		if c := ring[h%hoursKept]; c.hour == h {
			out[i] = c.n
		}
	}
	return out
}

// Sweep ends the boots quiet for longer than the settle time at now.
func (t *Tracker) Sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for mac, b := range t.open {
		if now.Sub(b.last) < t.settle {
			continue
		}
		for _, done := range timeline.Group(b.events, t.gap) {
			t.finish(done, b.started)
			b.started = false
		}
		delete(t.open, mac)
	}
}

// finish counts one boot that is over; wasStarted tells whether Add
// already counted it as started.
func (t *Tracker) finish(b timeline.Boot, wasStarted bool) {
	problem := ""
	for _, d := range timeline.Diagnose(b) {
		if d.Level == timeline.LevelProblem {
			problem = d.Rule
			break
		}
	}
	started := wasStarted
	for _, s := range b.Steps {
		started = started || chainStep(s.Event)
	}
	switch {
	case problem != "":
		if !started {
			t.m.started.Inc() // stopped in DHCP: a boot all the same
			if len(b.Steps) > 0 {
				first := b.Steps[0].Event
				t.countHour(first.Site, first.Time)
			}
		}
		t.m.failed.WithLabelValues(problem).Inc()
	case started:
		t.m.completed.Inc()
	}
	// A run of DHCP alone with no problem (an installed OS renewing its
	// lease) is no network boot: not counted.
}

// chainStep tells an event past DHCP: the machine asked for a loader, a
// script or an artifact.
func chainStep(ev proto.Event) bool {
	switch ev.Kind {
	case proto.EventTFTPStart, proto.EventTFTPError, proto.EventScript, proto.EventScriptUnknown,
		proto.EventArtifactStart, proto.EventArtifactEnd:
		return true
	}
	return false
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Run feeds the tracker from the EVENTS stream (new events only) and sweeps
// every settle/4, until ctx ends. A failed consumer is retried: boots
// missed meanwhile are not counted, which the metrics' help says nothing
// about because rate() over them stays right.
func (t *Tracker) Run(ctx context.Context, js jetstream.JetStream, log *slog.Logger) {
	go func() {
		tick := time.NewTicker(t.settle / 4)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				t.Sweep(now)
			}
		}
	}()
	for ctx.Err() == nil {
		st, err := js.Stream(ctx, proto.StreamEvents)
		if err == nil {
			err = eventlog.Follow(ctx, st, eventlog.Query{}, io.Discard, func(ev proto.Event) error { t.Add(ev); return nil })
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("bootstats: following events", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}
