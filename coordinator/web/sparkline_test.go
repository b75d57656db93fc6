package web

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

func TestSparks(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name   string
		ratios []float64
		path   string
	}{
		{"line", []float64{0, 0.5, 1}, "M2.0 26.0h0.1L72.0 14.0L142.0 2.0"},
		{"a gap starts a new line", []float64{1, nan, 0, 0}, "M2.0 2.0h0.1M95.3 26.0h0.1L142.0 26.0"},
		{"a lone sample is a dot", []float64{nan, 0.5, nan}, "M72.0 14.0h0.1"},
		{"nothing", []float64{nan, nan}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := lineSpark(c.ratios, "x").Path; got != c.path {
				t.Errorf("path %q, want %q", got, c.path)
			}
		})
	}
	got := barSpark([]int{0, 4, 2, 0}, "boots").Bars
	want := []sparkBar{{X: 36, Y: 2, W: 35, H: 26}, {X: 72, Y: 15, W: 35, H: 13}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("bars (-want +got):\n%s", diff)
	}
}

func TestEdgeHistory(t *testing.T) {
	h := NewEdgeHistory()
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	rec := func(at time.Duration, edge string, hit float64) {
		h.Record(t0.Add(at), proto.EdgeStatus{Name: edge, Site: "lab", HitRatio: hit})
	}
	rec(-25*time.Hour, "e1", 0.1) // over a day before: gone
	rec(0, "e1", 0.2)
	rec(5*time.Minute, "e1", 0.3)  // same 10-minute slot: the last wins
	rec(30*time.Minute, "e1", 1.7) // clamped to 1
	rec(30*time.Minute, "e2", 0.9)
	got := h.HitRatios("lab", "e1", t0.Add(35*time.Minute))
	if len(got) != historySlots {
		t.Fatalf("%d samples, want %d", len(got), historySlots)
	}
	n := len(got)
	for i, v := range got[:n-4] {
		if !math.IsNaN(v) {
			t.Fatalf("sample %d is %v, want none", i, v)
		}
	}
	tail := got[n-4:] // 10:00, 10:10, 10:20, 10:30
	if tail[0] != 0.3 || !math.IsNaN(tail[1]) || !math.IsNaN(tail[2]) || tail[3] != 1 {
		t.Fatalf("last samples %v, want [0.3 NaN NaN 1]", tail)
	}
	if h.HitRatios("lab", "e3", t0) != nil || h.HitRatios("branch", "e1", t0) != nil {
		t.Fatal("an edge never heard of has a history")
	}
	var none *EdgeHistory
	none.Record(t0, proto.EdgeStatus{Name: "e1", Site: "lab"})
	if none.HitRatios("lab", "e1", t0) != nil {
		t.Fatal("a nil history has samples")
	}
}
