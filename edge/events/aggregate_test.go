package events

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/test/waitfor"
)

type sinkRec struct {
	mu  sync.Mutex
	got []string
}

func (s *sinkRec) Emit(kind, mac string, d map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	line := kind + " " + mac
	if d["count"] != "" {
		line += fmt.Sprintf(" count=%s source=%s last=%s", d["count"], d["source"], d["last_mac"])
	}
	s.got = append(s.got, line)
}

func (s *sinkRec) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.got
	s.got = nil
	sort.Strings(out)
	return out
}

func TestAggregator(t *testing.T) {
	now := time.Unix(1000, 0)
	sink := &sinkRec{}
	a := NewAggregator(AggregatorConfig{Sink: sink, Window: time.Hour, Pass: 2, MaxSources: 3, Now: func() time.Time { return now }})
	defer a.Close()
	mac := func(i int) string { return fmt.Sprintf("52:54:00:00:00:%02x", i) }
	tests := []struct {
		name    string
		advance time.Duration
		add     func()
		want    []string
	}{
		{"the first Pass of a source pass, the rest are held", 0, func() {
			for i := range 10 {
				a.Count("10.0.0.1", "script.unknown", mac(i), nil)
			}
		}, []string{"script.unknown 52:54:00:00:00:00", "script.unknown 52:54:00:00:00:01"}},
		{"another kind from the same source is its own", 0, func() {
			a.Count("10.0.0.1", "callback.refused", mac(1), nil)
		}, []string{"callback.refused 52:54:00:00:00:01"}},
		{"past MaxSources, new sources are counted together", 0, func() {
			a.Count("10.0.0.2", "script.unknown", mac(20), nil)
			for i := range 5 {
				a.Count(fmt.Sprintf("10.0.1.%d", i), "script.unknown", mac(30+i), nil)
			}
		}, []string{"script.unknown 52:54:00:00:00:14"}},
		{"the window ends: one counted event per pair", time.Hour, func() {
			a.Count("10.0.0.9", "script.unknown", mac(40), nil)
		}, []string{
			"script.unknown  count=5 source=other last=52:54:00:00:00:22",
			"script.unknown  count=8 source=10.0.0.1 last=52:54:00:00:00:09",
			"script.unknown 52:54:00:00:00:28",
		}},
	}
	for _, tc := range tests {
		now = now.Add(tc.advance)
		tc.add()
		if diff := cmp.Diff(tc.want, sink.take()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	for range 5 {
		a.Count("10.0.0.9", "script.unknown", mac(41), nil)
	}
	sink.take()
	a.Close()
	if diff := cmp.Diff([]string{"script.unknown  count=4 source=10.0.0.9 last=52:54:00:00:00:29"}, sink.take()); diff != "" {
		t.Errorf("Close (-want +got):\n%s", diff)
	}
	a.Count("10.0.0.9", "script.unknown", mac(42), nil)
	if got := sink.take(); len(got) != 1 || !strings.HasSuffix(got[0], mac(42)) {
		t.Errorf("after Close: %v, want the event itself", got)
	}
}

// TestAggregatorTimer: counts are sent when the window ends even if nothing
// else arrives.
func TestAggregatorTimer(t *testing.T) {
	sink := &sinkRec{}
	a := NewAggregator(AggregatorConfig{Sink: sink, Window: 50 * time.Millisecond, Pass: 1})
	defer a.Close()
	for range 4 {
		a.Count("10.0.0.1", "callback.refused", "52:54:00:00:00:01", nil)
	}
	var all []string
	waitfor.True(t, "the counted event of the window", func() bool {
		all = append(all, sink.take()...)
		return slices.Contains(all, "callback.refused  count=3 source=10.0.0.1 last=52:54:00:00:00:01")
	})
}
