package proto

import (
	"math/rand/v2"
	"regexp"
	"testing"
)

// TestIsToken checks the hand-written name check against the regexps it
// replaced, on every short string over an alphabet that has each kind of
// character, and on random longer ones.
func TestIsToken(t *testing.T) {
	res := map[bool]*regexp.Regexp{
		true:  regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`),
		false: regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`),
	}
	const alphabet = "a0z9._-A/ \x00é"
	check := func(s string) {
		for dot, re := range res {
			if got, want := isToken(s, dot), re.MatchString(s); got != want {
				t.Errorf("isToken(%q, dot=%v) = %v, the regexp says %v", s, dot, got, want)
			}
		}
	}
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		check(prefix)
		if n == 0 {
			return
		}
		for _, r := range alphabet {
			gen(prefix+string(r), n-1)
		}
	}
	gen("", 3)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10_000 {
		b := make([]byte, 1+rng.IntN(20))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		check(string(b))
	}
}
