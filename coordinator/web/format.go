package web

import (
	"fmt"
	"time"
)

// humanDuration shows a duration the way a person reads it: 9.2 ms,
// 1.4 s, 3 min 20 s, 2 h 5 min.
func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + humanDuration(-d)
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < time.Second:
		return trim(float64(d)/float64(time.Millisecond)) + " ms"
	case d < time.Minute:
		return trim(d.Seconds()) + " s"
	case d < time.Hour:
		return fmt.Sprintf("%d min %d s", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%d d", int(d.Hours()/24))
}

// trim prints one decimal below 100 and none above: 9.2, 13.5, 240.
func trim(f float64) string {
	if f >= 100 {
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprintf("%.1f", f)
}

// humanBytes shows a size in binary units: 512 B, 13.5 MiB.
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		f /= 1024
		if f < 1024 || u == "TiB" {
			return trim(f) + " " + u
		}
	}
	return ""
}

// formatDelta is the gap before a timeline step ("" for none).
func formatDelta(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return humanDuration(d)
}
