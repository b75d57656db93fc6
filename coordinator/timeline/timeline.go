// Package timeline turns the events edges record about a machine into its
// boots, step by step with the time between steps, and recognises the known
// ways a network boot stalls (offers that never reach the client, spanning
// tree without portfast, TFTP or HTTP transfers that stop). Everything here is
// a pure function of the events, so the CLI and the web panel show the same
// diagnosis and tests feed it recorded sequences.
package timeline

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// Defaults of Options.
const (
	// DefaultGap: a machine silent this long has stopped trying; its next
	// event starts another boot.
	DefaultGap = 10 * time.Minute
	// DefaultSettle: a boot quiet for less than this may still be running, so
	// a transfer without an end is not called stalled yet.
	DefaultSettle = 2 * time.Minute
)

// Options tune grouping and diagnosis.
type Options struct {
	Gap    time.Duration // silence that ends a boot; DefaultGap when 0
	Settle time.Duration // DefaultSettle when 0
	// Now decides whether the last boot may still be running. Zero means
	// every boot is over, which is what tests over recorded sequences want.
	Now time.Time
}

func (o Options) gap() time.Duration {
	if o.Gap > 0 {
		return o.Gap
	}
	return DefaultGap
}

func (o Options) settle() time.Duration {
	if o.Settle > 0 {
		return o.Settle
	}
	return DefaultSettle
}

// Step is one event of a boot with the time since the previous step.
type Step struct {
	Event proto.Event   `json:"event"`
	Delta time.Duration `json:"delta_ns"` // 0 for the first step of a boot
}

// Boot is a run of events of one machine, from power-on (or a restart of the
// chain) to where it stopped.
type Boot struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Since is the silence between the previous boot's last event and this
	// boot's first (0 for the first boot seen): a boot that begins 30 s after
	// the previous one loaded its kernel is a link drop plus spanning tree.
	Since      time.Duration `json:"since_previous_ns,omitempty"`
	InProgress bool          `json:"in_progress,omitempty"`
	Steps      []Step        `json:"steps"`
	Diagnoses  []Diagnosis   `json:"diagnoses,omitempty"`
}

// Duration is the time from the first step to the last.
func (b Boot) Duration() time.Duration { return b.End.Sub(b.Start) }

// Build groups events into boots and diagnoses each one. The events may come
// in any order and from several MACs of one machine.
func Build(events []proto.Event, opts Options) []Boot {
	boots := Group(events, opts.gap())
	for i := range boots {
		b := &boots[i]
		b.InProgress = !opts.Now.IsZero() && opts.Now.Sub(b.End) < opts.settle()
		b.Diagnoses = Diagnose(*b)
		if i > 0 {
			b.Diagnoses = withTimeWait(b.Diagnoses, boots[i-1], *b)
		}
	}
	return boots
}

// Last returns the last n boots (all when n <= 0).
func Last(boots []Boot, n int) []Boot {
	if n <= 0 || n >= len(boots) {
		return boots
	}
	return boots[len(boots)-n:]
}

// Group sorts events by time (keeping the given order for equal times) and
// splits them into boots: a new boot starts after a silence longer than gap,
// or with a DISCOVER once the current boot already got an address and loaded
// artifacts over HTTP or TFTP (the machine rebooted, or its kernel asks for its own address) —
// unless that DISCOVER carries a transaction ID the boot already saw: a
// retransmission whose handling (a conflict probe) outlasted the exchange
// is recorded late, but it is the same boot.
func Group(events []proto.Event, gap time.Duration) []Boot {
	if gap <= 0 {
		gap = DefaultGap
	}
	evs := slices.Clone(events)
	slices.SortStableFunc(evs, func(a, b proto.Event) int { return a.Time.Compare(b.Time) })
	var (
		boots            []Boot
		cur              *Boot
		acked, artifacts bool
		xids             map[string]bool // DHCP transactions of the current boot
	)
	for _, ev := range evs {
		xid := ev.Detail["xid"]
		newBoot := cur == nil || ev.Time.Sub(cur.End) > gap ||
			(ev.Kind == proto.EventDHCPDiscover && acked && artifacts && (xid == "" || !xids[xid])) ||
			powersUp(ev) // a power on or cycle through the BMC starts the next boot
		if newBoot {
			var since time.Duration
			if cur != nil {
				since = ev.Time.Sub(cur.End)
			}
			boots = append(boots, Boot{Start: ev.Time, End: ev.Time, Since: since})
			cur = &boots[len(boots)-1]
			acked, artifacts, xids = false, false, map[string]bool{}
			cur.Steps = append(cur.Steps, Step{Event: ev})
		} else {
			cur.Steps = append(cur.Steps, Step{Event: ev, Delta: ev.Time.Sub(cur.End)})
			cur.End = ev.Time
		}
		if xid != "" {
			xids[xid] = true
		}
		switch ev.Kind {
		case proto.EventDHCPAck:
			acked = true
		case proto.EventArtifactStart, proto.EventArtifactEnd:
			artifacts = true
		case proto.EventTFTPStart:
			// GRUB under Secure Boot fetches kernel and initrd over TFTP.
			artifacts = artifacts || isArtifactRequest(ev)
		}
	}
	return boots
}

// powersUp tells a power action that (re)starts the machine.
func powersUp(ev proto.Event) bool {
	a := ev.Detail["action"]
	return ev.Kind == proto.EventPower && ev.Detail["result"] == "ok" && (a == proto.PowerOn || a == proto.PowerCycle)
}

// Summary is a short, human description of an event's detail for one line
// of a timeline.
func Summary(ev proto.Event) string {
	d := ev.Detail
	var parts []string
	add := func(format, key string) {
		if v := d[key]; v != "" {
			parts = append(parts, fmt.Sprintf(format, v))
		}
	}
	switch {
	case strings.HasPrefix(ev.Kind, "dhcp."):
		add("xid=%s", "xid")
		add("ip=%s", "ip")
		add("arch=%s", "arch")
		add("%s", "decision")
	case ev.Kind == proto.EventTFTPStart:
		add("%s", "file")
	case ev.Kind == proto.EventTFTPDone:
		add("%s", "file")
		if d["probe"] == "true" {
			parts = append(parts, "size probe")
		} else {
			add("%s bytes", "bytes")
		}
		add("in %sms", "duration_ms")
	case ev.Kind == proto.EventTFTPError:
		add("%s", "file")
		add("after %s bytes", "bytes")
		add("error: %s", "error")
	case ev.Kind == proto.EventScript:
		add("%s", "decision")
		add("%s", "image")
		add("(%s)", "reason")
	case ev.Kind == proto.EventArtifactStart:
		add("%s", "file")
		add("size=%s", "size")
		add("cache %s", "cache")
	case ev.Kind == proto.EventArtifactEnd:
		add("%s", "file")
		add("%s", "status")
		add("%s bytes", "bytes")
		add("in %sms", "duration_ms")
		add("HTTP %s", "http_status")
		add("error: %s", "error")
	default:
		for _, k := range slices.Sorted(maps.Keys(d)) {
			parts = append(parts, k+"="+d[k])
		}
	}
	return truncate(strings.Join(parts, " "), 110)
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// sortDiagnoses orders diagnoses by when they show, then by rule, so the
// output is stable.
func sortDiagnoses(ds []Diagnosis) {
	slices.SortStableFunc(ds, func(a, b Diagnosis) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return cmp.Compare(a.Rule, b.Rule)
	})
}
