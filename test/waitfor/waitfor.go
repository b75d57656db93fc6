// Package waitfor polls a condition in tests until it holds or a generous
// deadline passes. It waits for something to happen; it never measures how
// long it took (timings belong in benchmarks).
package waitfor

import (
	"errors"
	"testing"
	"time"
)

// Default is the deadline of True and OK: generous, because these machines
// are shared and -race slows everything.
const Default = 60 * time.Second

// True polls cond every interval until it returns true, failing the test
// with what after Default.
func True(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Default, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// OK polls cond until it returns nil; the failure names cond's last error.
func OK(t testing.TB, what string, cond func() error) {
	t.Helper()
	Within(t, Default, what, cond)
}

// Within is OK with a deadline of d, and returns how long the wait took.
func Within(t testing.TB, d time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	interval := 5 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > d {
			if err == errNotYet {
				t.Fatalf("timed out after %s waiting for %s", d, what)
			}
			t.Fatalf("%s: still failing after %s: %v", what, d, err)
		}
		time.Sleep(interval)
		if interval < 250*time.Millisecond {
			interval *= 2
		}
	}
}

var errNotYet = errors.New("not yet")
