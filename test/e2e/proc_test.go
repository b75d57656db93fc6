package e2e

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestWatchBufferLines: a line is timed by the write that ended it, "\r"
// is dropped, and an unfinished line is not a line yet.
func TestWatchBufferLines(t *testing.T) {
	w := newWatchBuffer()
	for _, s := range []string{"Configuring (net0)...", ".\r... ok\r\nhttp://x/vmlinuz", "... ok\nnext", " line\n", "partial"} {
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, l := range w.lines() {
		got = append(got, l.Text)
	}
	want := []string{"Configuring (net0)....... ok", "http://x/vmlinuz... ok", "next line"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	lines := w.lines()
	for i, k := range []int{1, 2, 3} { // the write that ended each line
		if !lines[i].At.Equal(w.times[k]) {
			t.Errorf("line %d (%q) at %v, want write %d's time %v", i, lines[i].Text, lines[i].At, k, w.times[k])
		}
	}
}
