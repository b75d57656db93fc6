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

	"github.com/fleetboot/fleetboot/proto"
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

// BenchmarkMissLarge measures one client's cold miss of a large artifact
// (FLEETBOOT_BENCH_MISS_MIB, default 128) against a direct GET of the same
// object through the same store client, in the same iteration: time to
// first byte and total, each with its ratio. The direct GET runs first, so
// both read the object from MinIO's page cache. "whole" fetches with one
// GET, "ranged" in 16 MiB parts, 4 at a time.
func BenchmarkMissLarge(b *testing.B) {
	size := int64(128)
	if v, err := strconv.ParseInt(os.Getenv("FLEETBOOT_BENCH_MISS_MIB"), 10, 64); err == nil && v > 0 {
		size = v
	}
	size <<= 20
	s := startStore(b)
	a := s.putRandom("large.bin", 72, size)
	for _, fc := range []struct {
		name    string
		fetcher Fetcher
	}{{"whole", s.fetcher}, {"ranged", rangedFetcher{s.fetcher}}} {
		b.Run(fc.name, func(b *testing.B) { benchMiss(b, s, a, fc.fetcher) })
	}
}

func benchMiss(b *testing.B, s *testStore, a proto.Artifact, fetcher Fetcher) {
	b.SetBytes(a.Size)
	var dTTFB, dTotal, eTTFB, eTotal time.Duration
	buf := make([]byte, 1)
	root := b.TempDir()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := filepath.Join(root, strconv.Itoa(i))
		c := newCache(b, dir, 4<<30, fetcher, nil)
		ts := serve(b, c)
		u := ts.url(a)
		t0 := time.Now()
		obj, err := s.fetcher.Get(b.Context(), a.Key)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(obj, buf); err != nil {
			b.Fatal(err)
		}
		dTTFB += time.Since(t0)
		if _, err := io.Copy(io.Discard, obj); err != nil {
			b.Fatal(err)
		}
		obj.Close()
		dTotal += time.Since(t0)
		b.StartTimer()

		t0 = time.Now()
		resp, err := http.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			b.Fatal(err)
		}
		eTTFB += time.Since(t0)
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n+1 != a.Size {
			b.Fatalf("body: %d bytes, %v", n+1, err)
		}
		eTotal += time.Since(t0)
		b.StopTimer()
		ts.Close()
		c.Close()
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(eTTFB.Microseconds())/float64(b.N), "ttfb-µs")
	b.ReportMetric(float64(dTTFB.Microseconds())/float64(b.N), "direct-ttfb-µs")
	b.ReportMetric(float64(eTotal)/float64(dTotal), "total/direct")
	b.ReportMetric(float64(eTTFB)/float64(dTTFB), "ttfb/direct")
}
