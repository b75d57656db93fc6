package ratelog

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// lines returns the logged lines without the time attribute.
func lines(buf *bytes.Buffer) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

func newTest() (*slog.Logger, *bytes.Buffer, *fakeClock) {
	var buf bytes.Buffer
	clk := &fakeClock{now: time.Unix(1_000_000, 0)}
	text := slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})
	return slog.New(newWithClock(text, 10*time.Second, clk.Now)), &buf, clk
}

func TestLimits(t *testing.T) {
	tests := []struct {
		name string
		run  func(l *slog.Logger, clk *fakeClock)
		want []string
		// wantN, if set, is checked instead of want: the number of lines.
		wantN int
	}{
		{
			name: "a burst of one reason is one line",
			run: func(l *slog.Logger, _ *fakeClock) {
				for i := range 1000 {
					l.Warn("dropped", "reason", "short", "peer", fmt.Sprint(i))
				}
			},
			want: []string{`level=WARN msg=dropped reason=short peer=0`},
		},
		{
			name: "the next line after the interval carries the count",
			run: func(l *slog.Logger, clk *fakeClock) {
				for range 5 {
					l.Warn("dropped", "reason", "short")
				}
				clk.Add(10 * time.Second)
				l.Warn("dropped", "reason", "short", "peer", "x")
			},
			want: []string{`level=WARN msg=dropped reason=short`, `level=WARN msg=dropped reason=short peer=x suppressed=4`},
		},
		{
			name: "reasons are limited separately",
			run: func(l *slog.Logger, _ *fakeClock) {
				for range 3 {
					l.Warn("dropped", "reason", "short")
					l.Warn("dropped", "reason", "overload")
					l.Info("other message")
				}
			},
			want: []string{`level=WARN msg=dropped reason=short`, `level=WARN msg=dropped reason=overload`, `level=INFO msg="other message"`},
		},
		{
			name: "a reason attached with With keys the records",
			run: func(l *slog.Logger, _ *fakeClock) {
				a, b := l.With("reason", "a"), l.With("reason", "b")
				for range 3 {
					a.Warn("refused")
					b.Warn("refused")
				}
			},
			want: []string{`level=WARN msg=refused reason=a`, `level=WARN msg=refused reason=b`},
		},
		{
			name: "reasons past the bound share one slot",
			run: func(l *slog.Logger, _ *fakeClock) {
				for i := range MaxReasons + 100 {
					l.Warn("dropped", "reason", fmt.Sprint(i))
				}
			},
			// MaxReasons distinct lines, then one for the shared slot.
			wantN: MaxReasons + 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, buf, clk := newTest()
			tc.run(l, clk)
			got := lines(buf)
			if tc.wantN > 0 {
				if len(got) != tc.wantN {
					t.Fatalf("%d lines, want %d", len(got), tc.wantN)
				}
				return
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Fatalf("lines (-want +got):\n%s", d)
			}
		})
	}
}

func TestConcurrent(t *testing.T) {
	l, buf, _ := newTest()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				l.Warn("flood", "reason", fmt.Sprint(g%2))
			}
		}()
	}
	wg.Wait()
	if n := len(lines(buf)); n != 2 {
		t.Fatalf("%d lines from two reasons, want 2", n)
	}
}
