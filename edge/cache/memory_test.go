package cache

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"testing"
)

// TestSmallFromMemory: a small artifact, once served from disk, is served
// from memory with the same answers (ranges, HEAD, preconditions,
// Last-Modified); the bodies stay within their budget, and a removed entry
// gives its memory back.
func TestSmallFromMemory(t *testing.T) {
	s := startStore(t)
	data := randomBytes(40, 4096)
	a := s.putBytes("grub.mod", data)
	c := newCache(t, t.TempDir(), 64<<20, s.fetcher, nil)
	ts := serve(t, c)
	u := ts.url(a)
	for i, want := range []int64{0, 4096} { // the miss streams; the first hit reads it in
		if r := do(t, http.MethodGet, u, nil); r.err != nil || r.status != 200 || !bytes.Equal(r.body, data) {
			t.Fatalf("GET %d: status %d, %d bytes, err %v", i, r.status, len(r.body), r.err)
		}
		if got := c.memoryBytes(); got != want {
			t.Fatalf("after GET %d: %d bytes in memory, want %d", i, got, want)
		}
	}
	lastMod := do(t, http.MethodHead, u, nil).header.Get("Last-Modified")
	// Gone from the disk behind the cache's back: only memory can answer.
	if err := os.Remove(c.objPath(a.SHA256)); err != nil {
		t.Fatal(err)
	}
	etag := `"` + a.SHA256 + `"`
	tests := []struct {
		name       string
		method     string
		hdr        map[string]string
		wantStatus int
		wantBody   []byte
	}{
		{"full", "GET", nil, 200, data},
		{"head", "HEAD", nil, 200, []byte{}},
		{"range", "GET", map[string]string{"Range": "bytes=100-199"}, 206, data[100:200]},
		{"suffix", "GET", map[string]string{"Range": "bytes=-10"}, 206, data[len(data)-10:]},
		{"unsatisfiable", "GET", map[string]string{"Range": "bytes=5000-"}, 416, nil},
		{"if-none-match", "GET", map[string]string{"If-None-Match": etag}, 304, []byte{}},
		{"if-modified-since", "GET", map[string]string{"If-Modified-Since": lastMod}, 304, []byte{}},
		{"if-range stale", "GET", map[string]string{"Range": "bytes=1-2", "If-Range": `"x"`}, 200, data},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, tt.method, u, tt.hdr)
			if r.err != nil || r.status != tt.wantStatus {
				t.Fatalf("status %d, err %v; want %d", r.status, r.err, tt.wantStatus)
			}
			if tt.wantBody != nil && !bytes.Equal(r.body, tt.wantBody) {
				t.Errorf("body of %d bytes, want %d (or content differs)", len(r.body), len(tt.wantBody))
			}
			if r.status < 300 && (r.header.Get("ETag") != etag || r.header.Get("Last-Modified") != lastMod ||
				r.header.Get("Content-Type") != "application/octet-stream") {
				t.Errorf("headers %v, want ETag %s, Last-Modified %s", r.header, etag, lastMod)
			}
		})
	}
	if got := metricValue(t, c, "fleetboot_cache_hits_total"); got < float64(2+len(tests)) {
		t.Errorf("%v hits counted, want at least %d", got, 2+len(tests))
	}
	if got := s.getCount(a.Key); got != 1 {
		t.Errorf("store saw %d GETs, want 1", got)
	}

	t.Run("budget", func(t *testing.T) {
		c := newCache(t, t.TempDir(), 64<<20, s.fetcher, nil)
		c.memBudget = 10_000 // two of 4 096, not three
		ts := serve(t, c)
		for i := range 3 {
			b := s.putBytes(fmt.Sprintf("m%d", i), randomBytes(uint64(50+i), 4096))
			for range 2 {
				if r := do(t, http.MethodGet, ts.url(b), nil); r.err != nil || r.status != 200 || int64(len(r.body)) != b.Size {
					t.Fatalf("GET %s: status %d, err %v", b.Name, r.status, r.err)
				}
			}
		}
		if got := c.memoryBytes(); got != 8192 {
			t.Errorf("%d bytes in memory, want 8192 (budget 10 000)", got)
		}
	})

	t.Run("large stays on disk", func(t *testing.T) {
		b := s.putRandom("big", 60, memMaxBody+1)
		c := newCache(t, t.TempDir(), 64<<20, s.fetcher, nil)
		ts := serve(t, c)
		for range 2 {
			if r := do(t, http.MethodGet, ts.url(b), nil); r.err != nil || r.status != 200 || int64(len(r.body)) != b.Size {
				t.Fatalf("GET: status %d, err %v", r.status, r.err)
			}
		}
		if got := c.memoryBytes(); got != 0 {
			t.Errorf("%d bytes in memory, want 0 for %d-byte artifact", got, b.Size)
		}
	})

	t.Run("removal frees", func(t *testing.T) {
		c.mu.Lock()
		e, ok := c.index.Peek(a.SHA256)
		if ok {
			c.removeLocked(e)
		}
		c.mu.Unlock()
		if !ok {
			t.Fatal("artifact not in the index")
		}
		if got := c.memoryBytes(); got != 0 {
			t.Errorf("%d bytes in memory after removal, want 0", got)
		}
		// Served again: fetched again, since it is gone from disk and memory.
		if r := do(t, http.MethodGet, u, nil); r.err != nil || r.status != 200 || !bytes.Equal(r.body, data) {
			t.Fatalf("GET after removal: status %d, err %v", r.status, r.err)
		}
		if got := s.getCount(a.Key); got != 2 {
			t.Errorf("store saw %d GETs, want 2", got)
		}
	})
}

func TestIsHexSHA256(t *testing.T) {
	sum := "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	tests := []struct {
		s    string
		want bool
	}{
		{sum, true},
		{"", false},
		{sum[:63], false},
		{sum + "0", false},
		{"9F" + sum[2:], false},
		{"g" + sum[1:], false},
		{"../" + sum[3:], false},
	}
	for _, tt := range tests {
		if got := isHexSHA256(tt.s); got != tt.want {
			t.Errorf("isHexSHA256(%q) = %v, want %v", tt.s, got, tt.want)
		}
	}
}

// memoryBytes is the bytes of bodies in memory.
func (c *Cache) memoryBytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.memBytes
}
