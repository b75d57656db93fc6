// Package procfd counts a test process's open file descriptors through
// /proc/self/fd, to prove that an error path closed what it opened.
package procfd

import (
	"os"
	"path/filepath"
	"testing"
)

// OpenTo counts this process's file descriptors open on path. The tests run
// on Linux, where /proc/self/fd always exists: without it the test fails
// rather than skips, so a leak can never pass unseen.
func OpenTo(t testing.TB, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting open descriptors: %v", err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}
