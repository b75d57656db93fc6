// Package bytesize reads and writes byte counts as people type them: 50GiB,
// 500MB, 1.5 TiB, 1024. Every size flag of fleetboot (--max-store,
// --cache-size, …) goes through Parse, so they all take the same forms and
// refuse the same mistakes.
package bytesize

import (
	"fmt"
	"math"
	"math/big"
	"strings"
)

// units maps a unit suffix (lower case) to its multiplier. SI units are
// powers of 1000 and IEC units powers of 1024, as the names promise.
var units = map[string]int64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "kib": 1 << 10,
	"m": 1e6, "mb": 1e6, "mib": 1 << 20,
	"g": 1e9, "gb": 1e9, "gib": 1 << 30,
	"t": 1e12, "tb": 1e12, "tib": 1 << 40,
	"p": 1e15, "pb": 1e15, "pib": 1 << 50,
}

const forms = "want a number with an optional unit (B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB), e.g. 50GiB or 1.5TiB"

// Parse reads a positive byte count such as "50GiB", "500MB", "1.5 TiB" or
// "1024". Units are case-insensitive. The whole string must be a count:
// anything after the unit, a second dot, a sign or a result beyond int64 is
// an error naming the input, never a silently shortened value. A fraction
// is exact (1.5GiB is 1610612736); only a fraction of a single byte is
// dropped (1.3KiB is 1331), and a fraction of a plain byte count is refused.
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	dots := 0
	for ; i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.'); i++ {
		if t[i] == '.' {
			dots++
		}
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := units[unit]
	if num == "" || num == "." || dots > 1 || !ok {
		return 0, fmt.Errorf("invalid size %q: %s", s, forms)
	}
	// Exact decimal arithmetic: a float would turn 4.35MB into 4349999.
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("invalid size %q: %s", s, forms)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if mult == 1 && !r.IsInt() {
		return 0, fmt.Errorf("invalid size %q: a byte count is a whole number", s)
	}
	n := new(big.Int).Quo(r.Num(), r.Denom()) // rounds toward zero
	if !n.IsInt64() {
		return 0, fmt.Errorf("invalid size %q: too large (at most %s)", s, Format(math.MaxInt64))
	}
	if n.Sign() <= 0 {
		return 0, fmt.Errorf("invalid size %q: must be at least one byte", s)
	}
	return n.Int64(), nil
}

// Format renders a byte count with binary units for people: "512 B",
// "1.5 GiB". It rounds to one decimal; give the count itself where exactness
// matters.
func Format(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit || m <= -unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
