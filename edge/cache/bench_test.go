package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BenchmarkServeHit measures serving a cached 16 MiB artifact over loopback
// HTTP (the sendfile path), with 1 and more clients in parallel.
func BenchmarkServeHit(b *testing.B) {
	s := startStore(b)
	a := s.putRandom("hit.bin", 70, 16<<20)
	c := newCache(b, b.TempDir(), 1<<30, s.fetcher, nil)
	ts := serve(b, c)
	u := ts.url(a)
	if n, sum, err := hashGet(http.DefaultClient, u); err != nil || n != a.Size || sum != a.SHA256 {
		b.Fatalf("warming: %d bytes, %v", n, err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.SetBytes(a.Size)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(u)
			if err != nil {
				b.Error(err)
				return
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != a.Size {
				b.Errorf("%d bytes, %v", n, err)
				return
			}
		}
	})
}

// BenchmarkMissStream measures a cold miss: a fresh cache fetches a 16 MiB
// artifact from MinIO and streams it to one client. It reports the time to
// the first byte next to a direct GET from MinIO.
func BenchmarkMissStream(b *testing.B) {
	s := startStore(b)
	a := s.putRandom("miss.bin", 71, 16<<20)
	b.SetBytes(a.Size)
	var ttfb, direct time.Duration
	buf := make([]byte, 1)
	// One cache directory at a time, removed after its iteration: a
	// b.TempDir per iteration kept 16 MiB per iteration until the end, disk
	// growing with b.N.
	root := b.TempDir()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := filepath.Join(root, strconv.Itoa(i))
		c := newCache(b, dir, 1<<30, s.fetcher, nil)
		ts := serve(b, c)
		u := ts.url(a)
		t0 := time.Now()
		obj, err := s.fetcher.Get(b.Context(), a.Key)
		if err != nil {
			b.Fatal(err)
		}
		io.ReadFull(obj, buf)
		direct += time.Since(t0)
		io.Copy(io.Discard, obj)
		obj.Close()
		b.StartTimer()

		t0 = time.Now()
		resp, err := http.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			b.Fatal(err)
		}
		ttfb += time.Since(t0)
		h.Write(buf)
		_, err = io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || hex.EncodeToString(h.Sum(nil)) != a.SHA256 {
			b.Fatalf("body: %v", err)
		}
		b.StopTimer()
		ts.Close()
		c.Close()
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(ttfb.Microseconds())/float64(b.N), "ttfb-µs")
	b.ReportMetric(float64(direct.Microseconds())/float64(b.N), "direct-ttfb-µs")
}
