package web

import (
	"fmt"
	"strconv"
	"time"

	"github.com/fleetboot/fleetboot/coordinator/timeline"
)

// The waterfall's geometry (SVG user units).
const (
	wfLabel = 260 // the left column: what each row is
	wfPlot  = 620 // the time axis
	wfRowH  = 18
	wfRows  = 60 // rows drawn per boot; a longer boot says how many were left out
)

// waterfall is one boot drawn as rows on a time axis: a transfer is a bar
// from its start to its end (its bytes and rate beside it), anything else
// a tick at its time. Silence is empty space, and the step a diagnosis
// points at is drawn in colour with the diagnosis as its tooltip.
type waterfall struct {
	Width, Height int
	Rows          []wfRow
	Ticks         []wfTick
	Hidden        int
}

type wfRow struct {
	Y             int
	Label, Detail string
	X, W          float64
	Bar           bool
	Problem       string // the diagnosis' sentence, "" for none
	Class         string
}

type wfTick struct {
	X     float64
	Label string
}

func waterfalls(boots []timeline.Boot) []waterfall {
	out := make([]waterfall, 0, len(boots))
	for _, b := range boots {
		out = append(out, drawBoot(b))
	}
	return out
}

func drawBoot(b timeline.Boot) waterfall {
	span := b.Duration()
	// A transfer that began before the first recorded event (its start is
	// its end minus its duration) widens the axis leftwards.
	start := b.Start
	for _, s := range b.Steps {
		if d, ok := stepDuration(s); ok && s.Event.Time.Add(-d).Before(start) {
			start = s.Event.Time.Add(-d)
		}
	}
	span = b.End.Sub(start)
	if span <= 0 {
		span = time.Millisecond
	}
	x := func(t time.Time) float64 { return float64(wfLabel) + float64(t.Sub(start))/float64(span)*wfPlot }
	problems := map[time.Time]string{}
	for _, d := range b.Diagnoses {
		if d.Level == "problem" {
			problems[d.At] = d.Text
		}
	}
	w := waterfall{Width: wfLabel + wfPlot + 220}
	for i, s := range b.Steps {
		if i >= wfRows {
			w.Hidden = len(b.Steps) - wfRows
			break
		}
		ev := s.Event
		r := wfRow{Y: 20 + i*wfRowH, Label: ev.Kind, Class: kindClass(ev.Kind)}
		if f := ev.Detail["file"]; f != "" {
			r.Label += " " + truncateLabel(f, 28)
		}
		end := x(ev.Time)
		if d, ok := stepDuration(s); ok && d > 0 {
			r.Bar, r.X, r.W = true, x(ev.Time.Add(-d)), max(end-x(ev.Time.Add(-d)), 2)
			r.Detail = humanDuration(d)
			if n, err := strconv.ParseInt(ev.Detail["bytes"], 10, 64); err == nil && n > 0 {
				r.Detail = fmt.Sprintf("%s in %s, %s/s", humanBytes(n), humanDuration(d), humanBytes(int64(float64(n)/d.Seconds())))
			}
		} else {
			r.X, r.W = end-1, 3
			if n, err := strconv.ParseInt(ev.Detail["bytes"], 10, 64); err == nil && n > 0 {
				r.Detail = humanBytes(n)
			}
		}
		if p, ok := problems[ev.Time]; ok {
			r.Problem, r.Class = p, "problem"
		}
		w.Rows = append(w.Rows, r)
	}
	w.Height = 30 + len(w.Rows)*wfRowH
	for i := 0; i <= 4; i++ {
		w.Ticks = append(w.Ticks, wfTick{X: wfLabel + float64(i)*wfPlot/4, Label: humanDuration(span * time.Duration(i) / 4)})
	}
	return w
}

// stepDuration is how long a step's transfer took, when its event says.
func stepDuration(s timeline.Step) (time.Duration, bool) {
	ms, err := strconv.ParseInt(s.Event.Detail["duration_ms"], 10, 64)
	if err != nil || ms < 0 {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}

// kindClass colours a row by protocol: dhcp.*, tftp.*, script, artifact.
func kindClass(kind string) string {
	for _, p := range []string{"dhcp", "tftp", "script", "artifact"} {
		if len(kind) >= len(p) && kind[:len(p)] == p {
			return p
		}
	}
	return "other"
}

func truncateLabel(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return "…" + string(r[len(r)-n+1:])
}
