package web

import (
	"fmt"
	"math"
	"strings"
)

// spark is a small chart the templates draw as inline SVG (template
// "spark"): bars for counts, a line for ratios. No script, no library.
type spark struct {
	W, H  int
	Bars  []sparkBar
	Path  string // the line: "M x y L x y …"; a gap (no sample) starts a new "M"
	Label string // what it shows, in words, for screen readers and the tooltip
}

type sparkBar struct{ X, Y, W, H float64 }

const sparkW, sparkH = 144, 28

// barSpark draws counts as bars, scaled to the largest.
func barSpark(counts []int, label string) spark {
	s := spark{W: sparkW, H: sparkH, Label: label}
	top := 0
	for _, c := range counts {
		top = max(top, c)
	}
	if len(counts) == 0 {
		return s
	}
	w := float64(sparkW) / float64(len(counts))
	for i, c := range counts {
		if c == 0 {
			continue
		}
		h := math.Max(1, float64(sparkH-2)*float64(c)/float64(top))
		s.Bars = append(s.Bars, sparkBar{X: round1(float64(i) * w), Y: round1(float64(sparkH) - h), W: round1(math.Max(1, w-1)), H: round1(h)})
	}
	return s
}

// lineSpark draws ratios (0…1) as a line; NaN is a gap. A lone sample
// between gaps is a dot (a zero-length segment with round caps).
func lineSpark(ratios []float64, label string) spark {
	s := spark{W: sparkW, H: sparkH, Label: label}
	if len(ratios) == 0 {
		return s
	}
	step := float64(sparkW-4) / float64(max(1, len(ratios)-1))
	var b strings.Builder
	open := false
	for i, r := range ratios {
		if math.IsNaN(r) {
			open = false
			continue
		}
		x, y := 2+float64(i)*step, 2+float64(sparkH-4)*(1-r)
		if !open {
			fmt.Fprintf(&b, "M%.1f %.1fh0.1", x, y)
			open = true
			continue
		}
		fmt.Fprintf(&b, "L%.1f %.1f", x, y)
	}
	s.Path = b.String()
	return s
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }
