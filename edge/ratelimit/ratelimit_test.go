package ratelimit

import (
	"fmt"
	"net"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestPerSource(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := New(Config{Rate: 2, Burst: 5, MaxSources: 3, Now: c.now}, Config{})
	allowed := func(src string, n int) int {
		got := 0
		for range n {
			if l.Allow(src) {
				got++
			}
		}
		return got
	}
	tests := []struct {
		name    string
		advance time.Duration
		src     string
		tries   int
		want    int
	}{
		{"a burst, then nothing", 0, "a", 20, 5},
		{"another source has its own bucket", 0, "b", 20, 5},
		{"one second later: the rate", time.Second, "a", 20, 2},
		{"a long pause refills to the burst, no more", time.Hour, "a", 20, 5},
		{"more sources than the table", 0, "c", 1, 1},
		{"d evicts the least recent (b)", 0, "d", 1, 1},
		{"b forgotten: a full bucket again", 0, "b", 20, 5},
	}
	for _, tc := range tests {
		c.t = c.t.Add(tc.advance)
		if got := allowed(tc.src, tc.tries); got != tc.want {
			t.Errorf("%s: %d of %d allowed, want %d", tc.name, got, tc.tries, tc.want)
		}
	}
	if n := l.seen.Len(); n != 3 {
		t.Errorf("%d sources tracked, want at most 3", n)
	}
}

func TestDefaultsAndOff(t *testing.T) {
	def := Config{Rate: 1, Burst: 2, MaxSources: 10}
	l := New(Config{}, def)
	if l.rate != 1 || l.burst != 2 || l.seen.Len() != 0 {
		t.Errorf("defaults not applied: %+v", l)
	}
	var off *PerSource = New(Config{Rate: -1}, def)
	for i := range 1000 {
		if !off.Allow(fmt.Sprint(i % 3)) {
			t.Fatal("a negative rate limits")
		}
	}
}

func TestAddrKey(t *testing.T) {
	for _, tc := range []struct{ ip, want string }{
		{"10.0.0.5", "10.0.0.5"},
		{"::ffff:10.0.0.5", "10.0.0.5"},
		{"fe80::1", "fe80::/64"},
		{"fe80::dead:beef:1:2", "fe80::/64"},
		{"2001:db8:0:1:aaaa::1", "2001:db8:0:1::/64"},
		{"", ""},
	} {
		if got := AddrKey(net.ParseIP(tc.ip)); got != tc.want {
			t.Errorf("AddrKey(%q) = %q, want %q", tc.ip, got, tc.want)
		}
	}
}
