package proto

import (
	"fmt"
	"strings"
)

// ParseMAC accepts the spellings operators paste from switches, BMCs and
// stickers: aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff and
// aabbccddeeff. It returns the canonical lower-case colon form.
func ParseMAC(s string) (string, error) {
	hex, ok := macDigits(s)
	if !ok {
		return "", fmt.Errorf("invalid MAC address %q: want aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff", s)
	}
	var b strings.Builder
	for i := 0; i < 12; i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(hex[i : i+2])
	}
	return b.String(), nil
}

// MACKey is the 12-hex-digit form used inside KV keys, which cannot hold ':'.
func MACKey(s string) (string, error) {
	hex, ok := macDigits(s)
	if !ok {
		return "", fmt.Errorf("invalid MAC address %q", s)
	}
	return hex, nil
}

// MACFromKey turns the 12-hex-digit key form back into the colon form.
func MACFromKey(k string) (string, error) {
	if len(k) != 12 {
		return "", fmt.Errorf("invalid MAC key %q", k)
	}
	return ParseMAC(k)
}

// macDigits validates one of the accepted layouts and returns 12 lower-case hex digits.
func macDigits(s string) (string, bool) {
	var groups []string
	switch {
	case len(s) == 17 && (strings.Count(s, ":") == 5 || strings.Count(s, "-") == 5):
		sep := ":"
		if strings.Contains(s, "-") {
			sep = "-"
		}
		groups = strings.Split(s, sep)
		for _, g := range groups {
			if len(g) != 2 {
				return "", false
			}
		}
	case len(s) == 14 && strings.Count(s, ".") == 2:
		groups = strings.Split(s, ".")
		for _, g := range groups {
			if len(g) != 4 {
				return "", false
			}
		}
	case len(s) == 12:
		groups = []string{s}
	default:
		return "", false
	}
	hex := strings.ToLower(strings.Join(groups, ""))
	if len(hex) != 12 {
		return "", false
	}
	for _, c := range hex {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", false
		}
	}
	return hex, true
}
