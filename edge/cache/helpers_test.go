package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
	"github.com/fleetboot/fleetboot/test/miniotest"
)

const testBucket = "artifacts"

// Proxy behaviours, to play a store that is down or slow.
const (
	modeNormal   int32 = iota
	modeDrop           // accept the request, then close the connection
	modeHang           // never answer (until the test ends)
	modeStallAll       // send headers, then no body byte
)

// testStore is a real MinIO behind a counting reverse proxy on loopback. The
// proxy counts GETs per object path independently of the cache's counters,
// and can drop, hang, stall or gate responses.
type testStore struct {
	t      testing.TB
	direct *minio.Client // uploads, bypassing the proxy
	// Fetcher goes through the proxy.
	fetcher minioFetcher

	mode      atomic.Int32
	gateAfter atomic.Int64 // when > 0, bodies pause after this many bytes until gate is closed
	gate      chan struct{}
	gateOnce  sync.Once
	done      chan struct{} // closed at cleanup: releases hung handlers

	mu   sync.Mutex
	gets map[string]int // object path -> GETs
	// GETs of an object path the proxy has finished answering, and the
	// body bytes it sent for them: a GET the cache cancels ends early.
	endedGETs map[string]int
	sentBytes map[string]int64
}

func startStore(t testing.TB) *testStore {
	t.Helper()
	srv := miniotest.Start(t)
	creds := credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")
	direct, err := minio.New(srv.Endpoint, &minio.Options{Creds: creds, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := direct.MakeBucket(ctx, testBucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	s := &testStore{t: t, direct: direct, gate: make(chan struct{}), done: make(chan struct{}),
		gets: map[string]int{}, endedGETs: map[string]int{}, sentBytes: map[string]int64{}}
	target := &url.URL{Scheme: "http", Host: srv.Endpoint}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1 // pass bytes on as they come: the cache streams them
	rp.ErrorLog = nil
	rp.ModifyResponse = func(resp *http.Response) error {
		switch {
		case s.mode.Load() == modeStallAll:
			resp.Body = &gatedBody{ReadCloser: resp.Body, after: 0, gate: s.done, ctx: resp.Request.Context()}
		case s.gateAfter.Load() > 0:
			resp.Body = &gatedBody{ReadCloser: resp.Body, after: s.gateAfter.Load(), gate: s.gate, ctx: resp.Request.Context()}
		}
		return nil
	}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Count(strings.Trim(r.URL.Path, "/"), "/") >= 1 {
			s.mu.Lock()
			s.gets[r.URL.Path]++
			s.mu.Unlock()
			cw := &proxyCounter{ResponseWriter: w}
			w = cw
			defer func() {
				s.mu.Lock()
				s.endedGETs[r.URL.Path]++
				s.sentBytes[r.URL.Path] += cw.n
				s.mu.Unlock()
			}()
		}
		switch s.mode.Load() {
		case modeDrop:
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		case modeHang:
			select {
			case <-r.Context().Done():
			case <-s.done:
			}
			return
		}
		rp.ServeHTTP(w, r)
	}))
	// Cleanups run last-in first-out: release hung handlers, then close.
	t.Cleanup(proxy.Close)
	t.Cleanup(func() { close(s.done); s.openGate() })
	via, err := minio.New(strings.TrimPrefix(proxy.URL, "http://"), &minio.Options{
		Creds: creds, Region: "us-east-1",
		MaxRetries: 1, // one request per fetch, so the proxy's count means what it says
	})
	if err != nil {
		t.Fatal(err)
	}
	s.fetcher = minioFetcher{c: via, bucket: testBucket}
	return s
}

func (s *testStore) openGate() { s.gateOnce.Do(func() { close(s.gate) }) }

// getCount is how many GETs the store saw for key.
func (s *testStore) getCount(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets["/"+testBucket+"/"+key]
}

// ended is how many GETs of key the proxy has finished answering (whole or
// cut off), and the body bytes it sent for them.
func (s *testStore) ended(key string) (int, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endedGETs["/"+testBucket+"/"+key], s.sentBytes["/"+testBucket+"/"+key]
}

// proxyCounter counts the body bytes the proxy writes.
type proxyCounter struct {
	http.ResponseWriter
	n int64
}

func (p *proxyCounter) Write(b []byte) (int, error) {
	n, err := p.ResponseWriter.Write(b)
	p.n += int64(n)
	return n, err
}

// Unwrap lets the reverse proxy flush through the counter.
func (p *proxyCounter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// put uploads r (size bytes) under key.
func (s *testStore) put(key string, r io.Reader, size int64) {
	s.t.Helper()
	_, err := s.direct.PutObject(context.Background(), testBucket, key, r, size,
		minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		s.t.Fatalf("upload %s: %v", key, err)
	}
}

// putBytes uploads data and returns its artifact.
func (s *testStore) putBytes(name string, data []byte) proto.Artifact {
	s.t.Helper()
	sum := sha256.Sum256(data)
	a := proto.Artifact{Role: proto.RoleKernel, Name: name, Key: "sha256/" + hex.EncodeToString(sum[:]),
		Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	s.put(a.Key, bytes.NewReader(data), a.Size)
	return a
}

// putRandom streams size pseudo-random bytes (seeded) into the store without
// holding them in memory, and returns the artifact.
func (s *testStore) putRandom(name string, seed uint64, size int64) proto.Artifact {
	s.t.Helper()
	h := sha256.New()
	key := fmt.Sprintf("big/%s-%d", name, seed)
	s.put(key, io.TeeReader(io.LimitReader(rand.NewChaCha8(seedBytes(seed)), size), h), size)
	return proto.Artifact{Role: proto.RoleISO, Name: name, Key: key, Size: size,
		SHA256: hex.EncodeToString(h.Sum(nil))}
}

func seedBytes(seed uint64) [32]byte {
	var b [32]byte
	for i := range 8 {
		b[i] = byte(seed >> (8 * i))
	}
	return b
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8(seedBytes(seed)).Read(b)
	return b
}

// minioFetcher adapts a minio client to Fetcher.
type minioFetcher struct {
	c      *minio.Client
	bucket string
}

func (m minioFetcher) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	obj, err := m.c.GetObject(ctx, m.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("s3 get %s: %w", key, err)
	}
	// Stat sends the GET (minio-go starts lazily) so errors surface here.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil, fmt.Errorf("s3 get %s: %w", key, artifactstore.ErrNotFound)
		}
		return nil, fmt.Errorf("s3 get %s: %w", key, err)
	}
	return obj, nil
}

// gatedBody passes the first `after` bytes, then blocks until gate closes.
type gatedBody struct {
	io.ReadCloser
	after int64
	n     int64
	gate  <-chan struct{}
	ctx   context.Context
}

func (g *gatedBody) Read(p []byte) (int, error) {
	if g.n >= g.after {
		select {
		case <-g.gate:
		case <-g.ctx.Done():
			return 0, g.ctx.Err()
		}
		return g.ReadCloser.Read(p)
	}
	if rest := g.after - g.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := g.ReadCloser.Read(p)
	g.n += int64(n)
	return n, err
}

// testServer serves artifacts by name through c.ServeArtifact, as the edge's
// HTTP server does.
type testServer struct {
	*httptest.Server
	mu   sync.Mutex
	arts map[string]proto.Artifact
}

func serve(t testing.TB, c *Cache) *testServer {
	ts := &testServer{arts: map[string]proto.Artifact{}}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.mu.Lock()
		a, ok := ts.arts[strings.TrimPrefix(r.URL.Path, "/artifacts/")]
		ts.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		c.ServeArtifact(w, r, a)
	}))
	// Silence the server's log of aborted responses and the like.
	ts.Server.Config.ErrorLog = nil
	t.Cleanup(ts.Close)
	return ts
}

func (ts *testServer) url(a proto.Artifact) string {
	ts.mu.Lock()
	ts.arts[a.Name] = a
	ts.mu.Unlock()
	return ts.URL + "/artifacts/" + a.Name
}

func newCache(t testing.TB, dir string, max int64, f Fetcher, mod func(*Config)) *Cache {
	t.Helper()
	cfg := Config{Dir: dir, MaxBytes: max, Fetcher: f, Logger: testLogger(t), FetchTimeout: 10 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// fetchResult is what a client got.
type fetchResult struct {
	status int
	header http.Header
	body   []byte
	err    error // transport or body read error
}

func do(t testing.TB, method, u string, hdr map[string]string) fetchResult {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 60 * time.Second} // a safety net, not a measurement
	resp, err := client.Do(req)
	if err != nil {
		return fetchResult{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return fetchResult{status: resp.StatusCode, header: resp.Header, body: body, err: err}
}

// hashGet GETs u and returns the body's length and sha256 without keeping it.
func hashGet(client *http.Client, u string) (int64, string, error) {
	resp, err := client.Get(u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("status %s", resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	return n, hex.EncodeToString(h.Sum(nil)), err
}

// dirFiles lists a directory's regular files (name -> size).
func dirFiles(t testing.TB, dir string) map[string]int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	m := map[string]int64{}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			continue
		}
		m[e.Name()] = info.Size()
	}
	return m
}

// rangedFetcher is minioFetcher that also serves ranges, through the same
// counting proxy, as artifactstore's S3 store does (each part one GET).
type rangedFetcher struct{ minioFetcher }

func (m rangedFetcher) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, int64, error) {
	var opts minio.GetObjectOptions
	if err := opts.SetRange(off, off+n-1); err != nil {
		return nil, 0, err
	}
	body, _, hdr, err := minio.Core{Client: m.c}.GetObject(ctx, m.bucket, key, opts)
	if err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil, 0, fmt.Errorf("s3 get %s: %w", key, artifactstore.ErrNotFound)
		}
		return nil, 0, fmt.Errorf("s3 get %s: %w", key, err)
	}
	_, total, _ := strings.Cut(hdr.Get("Content-Range"), "/")
	size, err := strconv.ParseInt(total, 10, 64)
	if err != nil {
		body.Close()
		return nil, 0, fmt.Errorf("s3 get %s: Content-Range %q", key, hdr.Get("Content-Range"))
	}
	return body, size, nil
}
