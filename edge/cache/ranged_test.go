package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// rangedChunk is the part size in these tests: small, so a 3 MiB object is
// fetched as 13 parts, 4 at a time.
const rangedChunk = 256 << 10

func rangedCache(t *testing.T, s *testStore, mod func(*Config)) *Cache {
	t.Helper()
	return newCache(t, t.TempDir(), 64<<20, rangedFetcher{s.fetcher}, func(cfg *Config) {
		cfg.FetchChunk, cfg.FetchParallel = rangedChunk, 4
		if mod != nil {
			mod(cfg)
		}
	})
}

// TestRangedColdClients: clients asking at once for an artifact fetched in
// parts all get every byte right, from one logical fetch: each part is
// asked for once, and the file is kept once.
func TestRangedColdClients(t *testing.T) {
	s := startStore(t)
	a := s.putRandom("big.iso", 80, 3<<20+17)
	c := rangedCache(t, s, nil)
	ts := serve(t, c)
	const clients = 6
	var wg sync.WaitGroup
	errs := make([]error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, sum, err := hashGet(&http.Client{Timeout: time.Minute}, ts.url(a))
			if err == nil && (n != a.Size || sum != a.SHA256) {
				err = fmt.Errorf("%d bytes, sha256 %s", n, sum)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	parts := int((a.Size + rangedChunk - 1) / rangedChunk)
	if got := s.getCount(a.Key); got != parts {
		t.Errorf("store saw %d GETs, want %d (one per part)", got, parts)
	}
	if !c.Contains(a.SHA256) || len(dirFiles(t, c.tmpDir)) != 0 || len(dirFiles(t, c.objDir)) != 1 {
		t.Errorf("not kept once: objects %v, tmp %v", dirFiles(t, c.objDir), dirFiles(t, c.tmpDir))
	}
	// Small artifacts (under two parts) take one plain GET.
	small := s.putRandom("small", 81, rangedChunk+1)
	if n, sum, err := hashGet(http.DefaultClient, ts.url(small)); err != nil || n != small.Size || sum != small.SHA256 {
		t.Fatalf("small: %d bytes, %v", n, err)
	}
	if got := s.getCount(small.Key); got != 1 {
		t.Errorf("store saw %d GETs of a small artifact, want 1", got)
	}
}

// TestRangedCorruptObject is TestCorruptObject for a fetch in parts: a
// corrupt, truncated or longer object is never served as a complete body
// nor kept, and a size the store reports differently is caught by the
// first part alone, before more GETs go out.
func TestRangedCorruptObject(t *testing.T) {
	s := startStore(t)
	good := randomBytes(83, 3<<20+17)
	parts := (len(good) + rangedChunk - 1) / rangedChunk
	// A byte flipped in the middle of a part that is not the first: the
	// hasher must see parts in order whatever order they arrive in.
	mid := append([]byte{}, good...)
	mid[5*rangedChunk+100] ^= 1
	tests := []struct {
		name   string
		stored []byte
		reason string
		gets   int // store GETs per attempt
	}{
		{name: "digest mismatch at the end", stored: append(append([]byte{}, good[:len(good)-1]...), good[len(good)-1]^1),
			reason: ReasonDigestMismatch, gets: parts},
		{name: "digest mismatch in a middle part", stored: mid, reason: ReasonDigestMismatch, gets: parts},
		{name: "truncated object", stored: good[:len(good)/2], reason: ReasonSizeMismatch, gets: 1},
		{name: "longer object", stored: append(append([]byte{}, good...), 'x'), reason: ReasonSizeMismatch, gets: 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sum := sha256.Sum256(good)
			a := proto.Artifact{Name: fmt.Sprintf("rbad-%d", i), Key: fmt.Sprintf("rbad/%d", i),
				Size: int64(len(good)), SHA256: hex.EncodeToString(sum[:])}
			s.put(a.Key, bytes.NewReader(tt.stored), int64(len(tt.stored)))
			c := rangedCache(t, s, nil)
			ts := serve(t, c)
			for attempt := 1; attempt <= 2; attempt++ {
				r := do(t, http.MethodGet, ts.url(a), nil)
				if r.err == nil && r.status == http.StatusOK && int64(len(r.body)) == a.Size {
					t.Fatalf("attempt %d: a corrupt object was served as a complete 200", attempt)
				}
				if r.status == http.StatusOK && r.err == nil {
					t.Fatalf("attempt %d: short body (%d of %d bytes) without a transport error", attempt, len(r.body), a.Size)
				}
				if got := s.getCount(a.Key); got != attempt*tt.gets {
					t.Fatalf("attempt %d: store saw %d GETs, want %d", attempt, got, attempt*tt.gets)
				}
				waitNoPartial(t, c)
				if c.Contains(a.SHA256) || len(dirFiles(t, c.objDir)) != 0 {
					t.Fatalf("attempt %d: something was kept: objects %v", attempt, dirFiles(t, c.objDir))
				}
			}
			if got := metricValue(t, c, `fleetboot_cache_fetch_errors_total{reason="`+tt.reason+`"}`); got != 2 {
				t.Errorf("fetch errors{reason=%s} = %v, want 2", tt.reason, got)
			}
			s.put(a.Key, bytes.NewReader(good), int64(len(good)))
			r := do(t, http.MethodGet, ts.url(a), nil)
			if r.err != nil || r.status != http.StatusOK || !bytes.Equal(r.body, good) {
				t.Fatalf("after repair: status %d, %d bytes, err %v", r.status, len(r.body), r.err)
			}
		})
	}
}

// TestRangedStoreFails: a store that is down answers the client with a 503
// naming the reason; one that stalls inside a part (every answer stops
// after 100 KiB) fails the fetch after FetchTimeout, cuts off the client
// that already had bytes, and keeps nothing.
func TestRangedStoreFails(t *testing.T) {
	t.Run("down", func(t *testing.T) {
		s := startStore(t)
		a := s.putRandom("down.iso", 84, 3<<20)
		c := rangedCache(t, s, nil)
		ts := serve(t, c)
		s.mode.Store(modeDrop)
		r := do(t, http.MethodGet, ts.url(a), nil)
		if r.status != http.StatusServiceUnavailable || !bytes.Contains(r.body, []byte("artifact store unavailable")) {
			t.Fatalf("status %d, body %q; want 503 artifact store unavailable", r.status, r.body)
		}
		if got := s.getCount(a.Key); got != 1 {
			t.Errorf("store saw %d GETs, want 1 (no part after the first failed)", got)
		}
		waitNoPartial(t, c)
	})
	t.Run("stalls in a part", func(t *testing.T) {
		s := startStore(t)
		a := s.putRandom("stall.iso", 85, 3<<20)
		c := rangedCache(t, s, func(cfg *Config) { cfg.FetchTimeout = time.Second })
		ts := serve(t, c)
		s.gateAfter.Store(100 << 10)
		r := do(t, http.MethodGet, ts.url(a), nil)
		if r.err == nil {
			t.Fatalf("status %d, %d bytes without a transport error; want the body cut off", r.status, len(r.body))
		}
		if int64(len(r.body)) >= a.Size {
			t.Fatalf("got all %d bytes of a stalled fetch", len(r.body))
		}
		waitNoPartial(t, c)
		if c.Contains(a.SHA256) {
			t.Error("a stalled fetch was kept")
		}
		if got := metricValue(t, c, `fleetboot_cache_fetch_errors_total{reason="timeout"}`); got != 1 {
			t.Errorf("fetch errors{reason=timeout} = %v, want 1", got)
		}
	})
}

// waitNoPartial waits (bounded) until no fetch runs and no partial file is
// left: a failed fetch removes its file after its clients were answered.
func waitNoPartial(t *testing.T, c *Cache) {
	t.Helper()
	waitfor.True(t, "no partial file and no fetch in flight", func() bool {
		return len(dirFiles(t, c.tmpDir)) == 0 && metricValue(t, c, "fleetboot_cache_fetches_in_flight") == 0
	})
}

// burstFetcher records how much of the fetch of its artifact was in the
// file when the first GET of a part past part 0 went out.
type burstFetcher struct {
	rangedFetcher
	c       *Cache
	sha     string
	mu      sync.Mutex
	atOther int64 // -1 until a later part is asked for
}

func (b *burstFetcher) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, int64, error) {
	if off > 0 {
		b.c.mu.Lock()
		f := b.c.inflight[b.sha]
		b.c.mu.Unlock()
		if f != nil {
			written, _, _, _ := f.state()
			b.mu.Lock()
			if b.atOther < 0 {
				b.atOther = written
			}
			b.mu.Unlock()
		}
	}
	return b.rangedFetcher.GetRange(ctx, key, off, n)
}

// TestRangedFirstBurst: the other parts' GETs go out only once part 0 has
// put its first bytes (firstBurst, here the whole first part) in the file,
// so the clients' first byte does not share the cores with three more
// streams from the store.
func TestRangedFirstBurst(t *testing.T) {
	s := startStore(t)
	a := s.putRandom("big.iso", 82, 3<<20+5)
	bf := &burstFetcher{rangedFetcher: rangedFetcher{s.fetcher}, sha: a.SHA256, atOther: -1}
	c := newCache(t, t.TempDir(), 64<<20, bf, func(cfg *Config) { cfg.FetchChunk, cfg.FetchParallel = rangedChunk, 4 })
	bf.c = c
	ts := serve(t, c)
	if n, sum, err := hashGet(&http.Client{Timeout: time.Minute}, ts.url(a)); err != nil || n != a.Size || sum != a.SHA256 {
		t.Fatalf("GET: %d bytes, %s, %v", n, sum, err)
	}
	bf.mu.Lock()
	defer bf.mu.Unlock()
	if want := min(int64(firstBurst), rangedChunk); bf.atOther < want {
		t.Errorf("the first GET of a later part went out with %d bytes of the artifact in the file; want at least %d", bf.atOther, want)
	}
}
