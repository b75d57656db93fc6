package httpboot

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

type countRec struct {
	mu sync.Mutex
	n  map[string]int // kind source -> count
}

func (c *countRec) Count(source, kind, _ string, _ map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[kind+" "+source]++
}

// TestRateLimitPerAddress: over a real socket, an address past its burst
// gets 429s, each counted as http.limited for that address, while another
// address is served.
func TestRateLimitPerAddress(t *testing.T) {
	f := newFixture(t)
	rep := &countRec{n: map[string]int{}}
	lim := testLimits(f.logs)
	lim.Rate, lim.Burst, lim.Repeats = 0.001, 10, rep // no refill within the test
	srv := httptest.NewServer(Guard(f.h, lim))
	t.Cleanup(srv.Close)
	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	}
	codes := map[int]int{}
	flooder := from("127.0.0.1")
	for range 50 {
		resp, err := flooder.Get(srv.URL + knownScript)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes[resp.StatusCode]++
	}
	if codes[200] != 10 || codes[429] != 40 {
		t.Errorf("answers %v, want 10×200 and 40×429", codes)
	}
	resp, err := from("127.0.0.2").Get(srv.URL + knownScript)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("another address: %v %v", resp, err)
	}
	resp.Body.Close()
	if got := rep.n[proto.EventHTTPLimited+" 127.0.0.1"]; got != 40 || len(rep.n) != 1 {
		t.Errorf("counted %v, want 40 http.limited from 127.0.0.1", rep.n)
	}
}

// TestRateLimitIPv6Prefix: a machine on the boot network picks any number
// of IPv6 addresses in its /64 (link-local alone gives it 2^64), so a
// limit per IPv6 address limits nothing. The requests carry the
// RemoteAddr net/http sets for each peer; one machine rotating its address
// inside a /64 gets one burst, another /64 its own. (Issue 12 item 4.)
func TestRateLimitIPv6Prefix(t *testing.T) {
	f := newFixture(t)
	rep := &countRec{n: map[string]int{}}
	lim := testLimits(f.logs)
	lim.Rate, lim.Burst, lim.Repeats = 0.001, 10, rep // no refill within the test
	g := Guard(f.h, lim)
	get := func(remote string) int {
		r := httptest.NewRequest(http.MethodGet, knownScript, nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		return w.Code
	}
	codes := map[int]int{}
	for i := range 50 {
		codes[get(fmt.Sprintf("[fe80::%x:1]:%d", i+1, 40000+i))]++
	}
	if codes[200] != 10 || codes[429] != 40 {
		t.Errorf("one /64, 50 addresses: answers %v, want 10×200 and 40×429", codes)
	}
	if c := get("[2001:db8:0:1::1]:40000"); c != 200 {
		t.Errorf("another /64: %d, want 200", c)
	}
}
