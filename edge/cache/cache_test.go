package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// TestColdConcurrentClients: many clients ask for the same uncached
// artifact at once; the store sees one GET and every body is right.
func TestColdConcurrentClients(t *testing.T) {
	size := int64(200 << 20)
	if testing.Short() {
		size = 20 << 20 // short mode: a smaller artifact
	}
	const clients = 50
	s := startStore(t)
	a := s.putRandom("live.iso", 1, size)
	c := newCache(t, t.TempDir(), 2*size, s.fetcher, nil)
	ts := serve(t, c)
	u := ts.url(a)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}, Timeout: 5 * time.Minute}
	start := make(chan struct{})
	type result struct {
		Bytes  int64
		SHA256 string
		Err    string
	}
	results := make([]result, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			<-start
			n, sum, err := hashGet(client, u)
			results[i] = result{Bytes: n, SHA256: sum}
			if err != nil {
				results[i].Err = err.Error()
			}
		})
	}
	close(start)
	wg.Wait()

	for i, r := range results {
		if diff := cmp.Diff(result{Bytes: size, SHA256: a.SHA256}, r); diff != "" {
			t.Errorf("client %d (-want +got):\n%s", i, diff)
		}
	}
	if got := s.getCount(a.Key); got != 1 {
		t.Errorf("store saw %d GETs of %s, want exactly 1", got, a.Key)
	}
	st := c.Stats()
	if st.Hits+st.Misses != clients || st.Misses < 1 {
		t.Errorf("stats %+v: want %d requests, at least one miss", st, clients)
	}
	if diff := cmp.Diff(map[string]int64{a.SHA256: size}, dirFiles(t, c.objDir)); diff != "" {
		t.Errorf("cache dir (-want +got):\n%s", diff)
	}
}

// TestStreamThrough: bytes reach the first client while the store is still
// sending, and a client that joins late gets the whole body from byte 0.
func TestStreamThrough(t *testing.T) {
	s := startStore(t)
	data := randomBytes(2, 8<<20)
	a := s.putBytes("initrd.img", data)
	c := newCache(t, t.TempDir(), 64<<20, s.fetcher, nil)
	ts := serve(t, c)
	s.gateAfter.Store(3 << 20) // the store pauses after 3 MiB until the gate opens

	open := func() *http.Response {
		resp, err := http.Get(ts.url(a))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != http.StatusOK || resp.ContentLength != a.Size {
			t.Fatalf("status %d, length %d; want 200, %d", resp.StatusCode, resp.ContentLength, a.Size)
		}
		return resp
	}
	first := open()
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(first.Body, head); err != nil {
		t.Fatalf("first client, first MiB while the store pauses: %v", err)
	}
	if c.Contains(a.SHA256) {
		t.Fatal("artifact cached before the store sent all of it")
	}
	late := open()
	lateHead := make([]byte, 2<<20)
	if _, err := io.ReadFull(late.Body, lateHead); err != nil {
		t.Fatalf("late client: %v", err)
	}
	if !bytes.Equal(head, data[:len(head)]) || !bytes.Equal(lateHead, data[:len(lateHead)]) {
		t.Fatal("streamed bytes differ from the object")
	}
	s.openGate()
	for name, r := range map[string]struct {
		resp *http.Response
		got  []byte
	}{"first": {first, head}, "late": {late, lateHead}} {
		rest, err := io.ReadAll(r.resp.Body)
		if err != nil {
			t.Fatalf("%s client: %v", name, err)
		}
		if !bytes.Equal(append(r.got, rest...), data) {
			t.Errorf("%s client: body differs from the object", name)
		}
	}
	if got := s.getCount(a.Key); got != 1 {
		t.Errorf("store saw %d GETs, want 1", got)
	}
}

// TestCorruptObject: an object that does not match its registered size or
// digest is never served as complete and is fetched again next time.
func TestCorruptObject(t *testing.T) {
	s := startStore(t)
	good := randomBytes(3, 3<<20+17)
	tests := []struct {
		name   string
		stored []byte
		reason string
	}{
		{name: "digest mismatch", stored: append(append([]byte{}, good[:len(good)-1]...), good[len(good)-1]^1), reason: ReasonDigestMismatch},
		{name: "truncated object", stored: good[:len(good)/2], reason: ReasonSizeMismatch},
		{name: "longer object", stored: append(append([]byte{}, good...), 'x'), reason: ReasonSizeMismatch},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sum := sha256.Sum256(good)
			a := proto.Artifact{Name: fmt.Sprintf("bad-%d", i), Key: fmt.Sprintf("bad/%d", i),
				Size: int64(len(good)), SHA256: hex.EncodeToString(sum[:])}
			s.put(a.Key, bytes.NewReader(tt.stored), int64(len(tt.stored)))
			c := newCache(t, t.TempDir(), 64<<20, s.fetcher, nil)
			ts := serve(t, c)

			for attempt := 1; attempt <= 2; attempt++ {
				r := do(t, http.MethodGet, ts.url(a), nil)
				if r.err == nil && r.status == http.StatusOK && int64(len(r.body)) == a.Size {
					t.Fatalf("attempt %d: a corrupt object was served as a complete 200", attempt)
				}
				if r.status == http.StatusOK && r.err == nil {
					t.Fatalf("attempt %d: short body (%d of %d bytes) without a transport error", attempt, len(r.body), a.Size)
				}
				if got := s.getCount(a.Key); got != attempt {
					t.Fatalf("attempt %d: store saw %d GETs, want %d (refetch after a failure)", attempt, got, attempt)
				}
				if c.Contains(a.SHA256) || len(dirFiles(t, c.tmpDir)) != 0 || len(dirFiles(t, c.objDir)) != 0 {
					t.Fatalf("attempt %d: something was kept on disk: tmp %v, objects %v", attempt,
						dirFiles(t, c.tmpDir), dirFiles(t, c.objDir))
				}
			}
			if got := metricValue(t, c, `fleetboot_cache_fetch_errors_total{reason="`+tt.reason+`"}`); got != 2 {
				t.Errorf("fetch errors{reason=%s} = %v, want 2", tt.reason, got)
			}
			// The store is repaired: the next request fetches and serves it.
			s.put(a.Key, bytes.NewReader(good), int64(len(good)))
			r := do(t, http.MethodGet, ts.url(a), nil)
			if r.err != nil || r.status != http.StatusOK || !bytes.Equal(r.body, good) {
				t.Fatalf("after repair: status %d, %d bytes, err %v", r.status, len(r.body), r.err)
			}
			if got := s.getCount(a.Key); got != 3 {
				t.Errorf("store saw %d GETs, want 3", got)
			}
		})
	}
}

// TestServeHit: a cached artifact answers ranges, HEAD and preconditions.
func TestServeHit(t *testing.T) {
	s := startStore(t)
	data := randomBytes(4, 100_000)
	a := s.putBytes("vmlinuz", data)
	c := newCache(t, t.TempDir(), 64<<20, s.fetcher, nil)
	ts := serve(t, c)
	u := ts.url(a)
	if r := do(t, http.MethodGet, u, nil); r.err != nil || !bytes.Equal(r.body, data) {
		t.Fatalf("warming GET: status %d err %v", r.status, r.err)
	}
	etag := `"` + a.SHA256 + `"`

	type part struct {
		Range string
		Body  []byte
	}
	tests := []struct {
		name       string
		method     string
		hdr        map[string]string
		wantStatus int
		wantBody   []byte
		wantParts  []part // multipart/byteranges
	}{
		{name: "full", method: "GET", wantStatus: 200, wantBody: data},
		{name: "head", method: "HEAD", wantStatus: 200, wantBody: []byte{}},
		{name: "first bytes", method: "GET", hdr: map[string]string{"Range": "bytes=0-99"}, wantStatus: 206, wantBody: data[:100]},
		{name: "middle", method: "GET", hdr: map[string]string{"Range": "bytes=1000-1999"}, wantStatus: 206, wantBody: data[1000:2000]},
		{name: "suffix", method: "GET", hdr: map[string]string{"Range": "bytes=-100"}, wantStatus: 206, wantBody: data[len(data)-100:]},
		{name: "open ended", method: "GET", hdr: map[string]string{"Range": "bytes=99000-"}, wantStatus: 206, wantBody: data[99000:]},
		{name: "multi range", method: "GET", hdr: map[string]string{"Range": "bytes=0-9,50000-50009"}, wantStatus: 206,
			wantParts: []part{{"bytes 0-9/100000", data[:10]}, {"bytes 50000-50009/100000", data[50000:50010]}}},
		{name: "unsatisfiable", method: "GET", hdr: map[string]string{"Range": "bytes=200000-"}, wantStatus: 416},
		{name: "if-none-match", method: "GET", hdr: map[string]string{"If-None-Match": etag}, wantStatus: 304, wantBody: []byte{}},
		{name: "if-none-match other", method: "GET", hdr: map[string]string{"If-None-Match": `"other"`}, wantStatus: 200, wantBody: data},
		{name: "if-range current", method: "GET", hdr: map[string]string{"Range": "bytes=10-19", "If-Range": etag}, wantStatus: 206, wantBody: data[10:20]},
		{name: "write refused", method: "PUT", wantStatus: 405},
		{name: "if-range stale", method: "GET", hdr: map[string]string{"Range": "bytes=10-19", "If-Range": `"stale"`}, wantStatus: 200, wantBody: data},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, tt.method, u, tt.hdr)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.status != tt.wantStatus {
				t.Fatalf("status %d, want %d", r.status, tt.wantStatus)
			}
			if r.status < 300 && r.header.Get("ETag") != etag {
				t.Errorf("ETag %q, want %q", r.header.Get("ETag"), etag)
			}
			if r.status < 300 && r.header.Get("Last-Modified") == "" {
				t.Error("no Last-Modified on a hit")
			}
			if tt.method == "HEAD" && r.header.Get("Content-Length") != strconv.Itoa(len(data)) {
				t.Errorf("HEAD Content-Length %q, want %d", r.header.Get("Content-Length"), len(data))
			}
			if tt.wantParts != nil {
				var got []part
				_, params, err := mime.ParseMediaType(r.header.Get("Content-Type"))
				if err != nil {
					t.Fatal(err)
				}
				mr := multipart.NewReader(bytes.NewReader(r.body), params["boundary"])
				for {
					p, err := mr.NextPart()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(p)
					got = append(got, part{p.Header.Get("Content-Range"), b})
				}
				if diff := cmp.Diff(tt.wantParts, got); diff != "" {
					t.Errorf("parts (-want +got):\n%s", diff)
				}
				return
			}
			if tt.wantBody != nil && !bytes.Equal(r.body, tt.wantBody) {
				t.Errorf("body: %d bytes, want %d bytes (content differs)", len(r.body), len(tt.wantBody))
			}
		})
	}
	if got := s.getCount(a.Key); got != 1 {
		t.Errorf("store saw %d GETs, want 1", got)
	}

	t.Run("keep-alive", func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{}}
		var reused []bool
		for range 2 {
			trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", u, nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if diff := cmp.Diff([]bool{false, true}, reused); diff != "" {
			t.Errorf("connection reuse (-want +got):\n%s", diff)
		}
	})

	t.Run("range on a miss", func(t *testing.T) {
		cold := randomBytes(5, 1<<20)
		b := s.putBytes("cold", cold)
		r := do(t, "GET", ts.url(b), map[string]string{"Range": "bytes=500000-500099"})
		if r.err != nil || r.status != 206 || !bytes.Equal(r.body, cold[500000:500100]) {
			t.Fatalf("status %d, %d bytes, err %v; want 206 and the range", r.status, len(r.body), r.err)
		}
		if got := s.getCount(b.Key); got != 1 {
			t.Errorf("store saw %d GETs, want 1", got)
		}
	})
}

// TestEviction: a mixed workload never exceeds the byte bound, and pinned
// artifacts (images assigned at the site) outlive unpinned ones.
func TestEviction(t *testing.T) {
	s := startStore(t)
	const max = 600_000
	var arts []proto.Artifact
	for i := range 20 {
		arts = append(arts, s.putBytes(fmt.Sprintf("f%02d", i), randomBytes(uint64(100+i), 60_000+i*4_000)))
	}
	c := newCache(t, t.TempDir(), max, s.fetcher, nil)
	ts := serve(t, c)
	pinned := arts[:2]
	c.SetPinned([]string{pinned[0].SHA256, pinned[1].SHA256})

	get := func(a proto.Artifact) {
		t.Helper()
		r := do(t, "GET", ts.url(a), nil)
		if r.err != nil || r.status != 200 || int64(len(r.body)) != a.Size {
			t.Fatalf("GET %s: status %d, %d bytes, err %v", a.Name, r.status, len(r.body), r.err)
		}
		var onDisk int64
		for _, n := range dirFiles(t, c.objDir) {
			onDisk += n
		}
		if st := c.Stats(); st.Bytes > max || onDisk > max {
			t.Fatalf("after %s: accounted %d bytes, %d on disk; bound %d", a.Name, st.Bytes, onDisk, max)
		}
	}
	// The pinned ones first, so they are the least recently used.
	for _, a := range pinned {
		get(a)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 80 {
		get(arts[2+rng.IntN(len(arts)-2)])
	}
	for _, a := range pinned {
		if !c.Contains(a.SHA256) {
			t.Errorf("pinned %s was evicted", a.Name)
		}
	}
	if got := metricValue(t, c, "fleetboot_cache_evictions_total"); got == 0 {
		t.Error("no evictions counted")
	}
	// Unpinned, everything is fair game again: the oldest goes first.
	c.SetPinned(nil)
	for _, a := range arts[2:] {
		get(a)
	}
	for _, a := range pinned {
		if c.Contains(a.SHA256) {
			t.Errorf("%s survived after unpinning and a full sweep", a.Name)
		}
	}
}

// TestRestart: a second cache on the same directory reuses verified files,
// refetches damaged ones and removes partial downloads.
func TestRestart(t *testing.T) {
	s := startStore(t)
	dir := t.TempDir()
	data := map[string][]byte{}
	put := func(name string, seed uint64) proto.Artifact {
		data[name] = randomBytes(seed, 300_000)
		return s.putBytes(name, data[name])
	}
	intact, truncated, flipped := put("intact", 10), put("truncated", 11), put("flipped", 12)
	all := []proto.Artifact{intact, truncated, flipped}

	c1 := newCache(t, dir, 64<<20, s.fetcher, nil)
	ts1 := serve(t, c1)
	for _, a := range all {
		if r := do(t, "GET", ts1.url(a), nil); r.err != nil || r.status != 200 {
			t.Fatalf("warm %s: %d %v", a.Name, r.status, r.err)
		}
	}
	c1.Close()

	obj := func(a proto.Artifact) string { return filepath.Join(dir, "sha256", a.SHA256) }
	if err := os.Truncate(obj(truncated), 1000); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(obj(flipped))
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(obj(flipped), b, 0o640); err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(dir, "tmp", intact.SHA256+".7.part")
	stray := filepath.Join(dir, "sha256", "not-a-digest")
	for _, p := range []string{partial, stray} {
		if err := os.WriteFile(p, []byte("left behind"), 0o640); err != nil {
			t.Fatal(err)
		}
	}

	c2 := newCache(t, dir, 64<<20, s.fetcher, nil)
	for _, p := range []string{partial, stray} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived the restart (stat: %v)", p, err)
		}
	}
	if got := c2.Stats().Entries; got != 3 {
		t.Errorf("rebuilt index has %d entries, want 3", got)
	}
	ts2 := serve(t, c2)
	tests := []struct {
		name     string
		a        proto.Artifact
		wantGets int
	}{
		{name: "intact file is reused", a: intact, wantGets: 1},
		{name: "truncated file is refetched", a: truncated, wantGets: 2},
		{name: "corrupted file is refetched", a: flipped, wantGets: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantBody := data[tt.a.Name]
			for range 2 { // the second time is a verified hit either way
				r := do(t, "GET", ts2.url(tt.a), nil)
				if r.err != nil || r.status != 200 || !bytes.Equal(r.body, wantBody) {
					t.Fatalf("status %d, %d bytes, err %v", r.status, len(r.body), r.err)
				}
			}
			if got := s.getCount(tt.a.Key); got != tt.wantGets {
				t.Errorf("store saw %d GETs, want %d", got, tt.wantGets)
			}
		})
	}
}

// TestStoreDown: with the store unreachable or silent, cached artifacts are
// still served and uncached ones get a 503 with the reason after
// FetchTimeout, never a hang.
func TestStoreDown(t *testing.T) {
	s := startStore(t)
	cached := s.putBytes("cached", randomBytes(20, 500_000))
	c := newCache(t, t.TempDir(), 64<<20, s.fetcher, func(cfg *Config) { cfg.FetchTimeout = 300 * time.Millisecond })
	ts := serve(t, c)
	if r := do(t, "GET", ts.url(cached), nil); r.err != nil || r.status != 200 {
		t.Fatalf("warm: %d %v", r.status, r.err)
	}
	tests := []struct {
		name       string
		mode       int32
		stallMid   bool // half the body arrives, then nothing
		wantReason string
	}{
		{name: "connection dropped", mode: modeDrop, wantReason: "artifact store unavailable"},
		{name: "no answer", mode: modeHang, wantReason: "artifact store sent nothing"},
		{name: "headers then silence", mode: modeStallAll, wantReason: "artifact store sent nothing"},
		{name: "silence mid-body", stallMid: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uncached := s.putBytes(fmt.Sprintf("uncached-%d", i), randomBytes(uint64(21+i), 1<<20))
			s.mode.Store(tt.mode)
			defer s.mode.Store(modeNormal)
			if tt.stallMid {
				// Past the first 256 KiB read: minio-go fills whole buffers.
				s.gateAfter.Store(uncached.Size * 3 / 4)
				defer s.gateAfter.Store(0)
				// The body streams, so the client gets a 200, but it must
				// see it break off, not hang and not look complete.
				r := do(t, "GET", ts.url(uncached), nil)
				if r.err == nil || int64(len(r.body)) >= uncached.Size {
					t.Fatalf("status %d, %d of %d bytes, err %v; want a broken-off body (%.200q)", r.status, len(r.body), uncached.Size, r.err, r.body)
				}
			}
			if !tt.stallMid {
				r := do(t, "GET", ts.url(uncached), nil)
				if r.err != nil || r.status != http.StatusServiceUnavailable {
					t.Fatalf("GET uncached: status %d, err %v; want 503", r.status, r.err)
				}
				if !strings.Contains(string(r.body), tt.wantReason) {
					t.Errorf("503 body %q does not give the reason %q", r.body, tt.wantReason)
				}
				if r.header.Get("Retry-After") == "" {
					t.Error("503 without Retry-After")
				}
				// A HEAD never fetches: it answers from the registered
				// size, store or no store.
				gets := s.getCount(uncached.Key)
				r = do(t, "HEAD", ts.url(uncached), nil)
				if r.err != nil || r.status != 200 || r.header.Get("Content-Length") != fmt.Sprint(uncached.Size) {
					t.Fatalf("HEAD uncached: status %d, Content-Length %q, err %v; want 200 with the registered size",
						r.status, r.header.Get("Content-Length"), r.err)
				}
				if got := s.getCount(uncached.Key); got != gets {
					t.Errorf("a HEAD sent %d GETs to the store", got-gets)
				}
			}
			r := do(t, "GET", ts.url(cached), nil)
			if r.err != nil || r.status != 200 || int64(len(r.body)) != cached.Size {
				t.Fatalf("cached artifact while the store is down: status %d, %d bytes, err %v", r.status, len(r.body), r.err)
			}
			if c.Contains(uncached.SHA256) {
				t.Error("an artifact whose fetch failed is in the index")
			}
			if n := len(dirFiles(t, c.tmpDir)); n != 0 {
				t.Errorf("%d partial files left", n)
			}
		})
	}
}

// TestTooLarge: an artifact larger than the whole cache is refused with a
// clear error before anything is fetched or written.
func TestTooLarge(t *testing.T) {
	s := startStore(t)
	small := s.putBytes("small", randomBytes(30, 40_000))
	big := s.putBytes("big", randomBytes(31, 100_000))
	c := newCache(t, t.TempDir(), 64_000, s.fetcher, nil)
	ts := serve(t, c)
	if r := do(t, "GET", ts.url(small), nil); r.err != nil || r.status != 200 {
		t.Fatalf("small: %d %v", r.status, r.err)
	}
	r := do(t, "GET", ts.url(big), nil)
	if r.err != nil || r.status != http.StatusInsufficientStorage || !strings.Contains(string(r.body), "larger than the whole cache") {
		t.Fatalf("big: status %d, body %q, err %v; want 507 with the reason", r.status, r.body, r.err)
	}
	if got := s.getCount(big.Key); got != 0 {
		t.Errorf("store saw %d GETs of an artifact that cannot fit", got)
	}
	if diff := cmp.Diff(map[string]int64{small.SHA256: small.Size}, dirFiles(t, c.objDir)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	if n := len(dirFiles(t, c.tmpDir)); n != 0 {
		t.Errorf("%d partial files left", n)
	}
	if r := do(t, "GET", ts.url(small), nil); r.err != nil || r.status != 200 {
		t.Fatalf("small after the refusal: %d %v", r.status, r.err)
	}
}

// TestPrefetch: prefetched artifacts are fetched once, even when a client
// asks at the same time, and then served as hits.
func TestPrefetch(t *testing.T) {
	s := startStore(t)
	var arts []proto.Artifact
	for i := range 4 {
		arts = append(arts, s.putBytes(fmt.Sprintf("p%d", i), randomBytes(uint64(40+i), 2<<20)))
	}
	c := newCache(t, t.TempDir(), 64<<20, s.fetcher, func(cfg *Config) { cfg.PrefetchConcurrency = 2 })
	ts := serve(t, c)
	c.Prefetch(context.Background(), arts)
	c.Prefetch(context.Background(), arts) // a repeated assignment must not fetch twice
	if r := do(t, "GET", ts.url(arts[3]), nil); r.err != nil || r.status != 200 {
		t.Fatalf("client during prefetch: %d %v", r.status, r.err)
	}
	waitfor.True(t, "prefetch to finish", func() bool {
		for _, a := range arts {
			if !c.Contains(a.SHA256) {
				return false
			}
		}
		return metricValue(t, c, "fleetboot_cache_fetches_in_flight") == 0
	})
	before := c.Stats().Hits
	for _, a := range arts {
		if r := do(t, "GET", ts.url(a), nil); r.err != nil || r.status != 200 {
			t.Fatalf("%s: %d %v", a.Name, r.status, r.err)
		}
		if got := s.getCount(a.Key); got != 1 {
			t.Errorf("%s: store saw %d GETs, want 1", a.Name, got)
		}
	}
	if got := c.Stats().Hits - before; got != int64(len(arts)) {
		t.Errorf("%d hits after prefetch, want %d", got, len(arts))
	}
}

type recordedEvent struct {
	Kind, MAC string
	Detail    map[string]string
}

type eventRecorder struct {
	mu     sync.Mutex
	events []recordedEvent
}

func (e *eventRecorder) Emit(kind, mac string, detail map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, recordedEvent{kind, mac, detail})
}

func (e *eventRecorder) snapshot() []recordedEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]recordedEvent(nil), e.events...)
}

// TestEventsAndMetrics: each request emits start and end events with the
// MAC, and the counters appear on the metrics handler.
func TestEventsAndMetrics(t *testing.T) {
	s := startStore(t)
	a := s.putBytes("vmlinuz", randomBytes(50, 123_456))
	rec := &eventRecorder{}
	c := newCache(t, t.TempDir(), 64<<20, s.fetcher, func(cfg *Config) { cfg.Events = rec })
	ts := serve(t, c)
	for i := range 2 {
		if r := do(t, "GET", ts.url(a)+"?mac=AA-BB-CC-00-11-22", nil); r.err != nil || r.status != 200 {
			t.Fatalf("%d %v", r.status, r.err)
		}
		// The end event follows the last body byte: wait for the handler.
		waitfor.True(t, "artifact.end", func() bool { return len(rec.snapshot()) == 2*(i+1) })
	}
	events := rec.snapshot()
	// Durations vary; blank them before comparing.
	for _, e := range events {
		if _, ok := e.Detail["duration_ms"]; ok {
			e.Detail["duration_ms"] = "x"
		}
	}
	mac := "aa:bb:cc:00:11:22"
	start := func(kind string) recordedEvent {
		return recordedEvent{proto.EventArtifactStart, mac, map[string]string{
			"file": "vmlinuz", "sha256": a.SHA256, "size": "123456", "cache": kind}}
	}
	end := func(kind string) recordedEvent {
		return recordedEvent{proto.EventArtifactEnd, mac, map[string]string{
			"file": "vmlinuz", "sha256": a.SHA256, "cache": kind, "status": "complete",
			"bytes": "123456", "http_status": "200", "duration_ms": "x"}}
	}
	want := []recordedEvent{start("miss"), end("miss"), start("hit"), end("hit")}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Stats{Bytes: a.Size, Entries: 1, Hits: 1, Misses: 1, HitRatio: 0.5}, c.Stats()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	rw := httptest.NewRecorder()
	c.Metrics().ServeHTTP(rw, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range []string{
		"fleetboot_cache_hits_total 1",
		"fleetboot_cache_misses_total 1",
		"fleetboot_cache_served_bytes_total 246912",
		"fleetboot_cache_fetched_bytes_total 123456",
		"fleetboot_cache_evictions_total 0",
		"fleetboot_cache_fetches_in_flight 0",
		`fleetboot_cache_fetch_errors_total{reason="digest_mismatch"} 0`,
		"fleetboot_cache_bytes 123456",
	} {
		if !strings.Contains(rw.Body.String(), line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
}

// metricValue reads one sample from the cache's metrics handler, as a
// Prometheus scrape would.
func metricValue(t testing.TB, c *Cache, series string) float64 {
	t.Helper()
	rw := httptest.NewRecorder()
	c.Metrics().ServeHTTP(rw, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rw.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not exported", series)
	return 0
}

// TestStreamReaderHoldsBackLastByte: until a download is verified, readers
// get every byte but the last, so no client can see a complete body of
// content that then fails its digest check.
func TestStreamReaderHoldsBackLastByte(t *testing.T) {
	data := randomBytes(60, 1000)
	tests := []struct {
		name    string
		finish  func(f *fetch)
		want    []byte // bytes read in total
		wantErr string // error of the read after them
	}{
		{name: "pending", finish: func(*fetch) {}, want: data[:999], wantErr: context.Canceled.Error()},
		{name: "verified", finish: func(f *fetch) { f.update(func() { f.done = true }) }, want: data, wantErr: io.EOF.Error()},
		{name: "failed verification", finish: func(f *fetch) {
			f.update(func() { f.done, f.err = true, &fetchError{reason: ReasonDigestMismatch, msg: "mismatch"} })
		}, want: data[:999], wantErr: "mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file, err := os.Create(filepath.Join(t.TempDir(), "part"))
			if err != nil {
				t.Fatal(err)
			}
			defer file.Close()
			file.Write(data)
			f := &fetch{a: proto.Artifact{Size: int64(len(data))}, file: file, written: int64(len(data)), changed: make(chan struct{})}
			ctx, cancel := context.WithCancel(context.Background())
			r := &streamReader{ctx: ctx, f: f}
			got := make([]byte, 999)
			if _, err := io.ReadFull(r, got); err != nil {
				t.Fatalf("first 999 bytes: %v", err)
			}
			tt.finish(f)
			if tt.name == "pending" {
				cancel() // the next read would wait for ever: the last byte is held back
			}
			defer cancel()
			rest, err := io.ReadAll(r)
			got = append(got, rest...)
			if err == nil {
				err = io.EOF // ReadAll swallows EOF
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("read %d bytes, want %d", len(got), len(tt.want))
			}
			if diff := cmp.Diff(tt.wantErr, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}
