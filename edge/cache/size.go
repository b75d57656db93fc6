package cache

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits maps a unit suffix (lower case) to its multiplier. SI units are
// powers of 1000 and IEC units powers of 1024, as the names promise.
var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "kib": 1 << 10,
	"m": 1e6, "mb": 1e6, "mib": 1 << 20,
	"g": 1e9, "gb": 1e9, "gib": 1 << 30,
	"t": 1e12, "tb": 1e12, "tib": 1 << 40,
}

// ParseSize parses a byte count such as "50GiB", "500MB", "1.5 TiB" or
// "1024" (bytes). Units are case-insensitive; the result must be positive.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("cache: invalid size %q: want a number with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 50GiB", s)
	}
	var v float64
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		// Integers stay exact unless the unit makes them too large.
		if mult == 1 {
			if n <= 0 {
				return 0, fmt.Errorf("cache: invalid size %q: must be greater than zero", s)
			}
			return n, nil
		}
		v = float64(n) * mult
	} else {
		f, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return 0, fmt.Errorf("cache: invalid size %q: %q is not a number", s, num)
		}
		v = f * mult
	}
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("cache: invalid size %q: too large", s)
	}
	if v < 1 {
		return 0, fmt.Errorf("cache: invalid size %q: must be at least one byte", s)
	}
	return int64(v), nil
}
