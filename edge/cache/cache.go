package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetboot/fleetboot/proto"
)

// Fetcher reads an object from the artifact store. artifactstore.Store
// satisfies it; Get returns an error wrapping artifactstore.ErrNotFound when
// the object does not exist. Get and the reader must honour ctx: cancelling it
// is how a stalled store is abandoned.
type Fetcher interface {
	Get(ctx context.Context, key string) (io.ReadCloser, error)
}

// RangeFetcher is a Fetcher that can also read n bytes of an object from
// offset off, and says the object's whole size (artifactstore's S3 and
// directory stores can). The cache then fetches large artifacts as several
// ranged GETs at once.
type RangeFetcher interface {
	GetRange(ctx context.Context, key string, off, n int64) (body io.ReadCloser, size int64, err error)
}

// EventSink receives boot-timeline events (artifact.start, artifact.end).
// Emit must not block for long: it runs on the request path.
type EventSink interface {
	Emit(kind, mac string, detail map[string]string)
}

// Config configures a Cache.
type Config struct {
	Dir      string  // cache directory (--cache-dir); created if missing
	MaxBytes int64   // byte bound (--cache-size, see bytesize.Parse)
	Fetcher  Fetcher // the artifact store
	Logger   *slog.Logger
	// FetchTimeout bounds how long a fetch may go without receiving a byte
	// from the store (before the first byte and between bytes). When it passes
	// the fetch fails, so a client of an uncached artifact gets a 503 instead
	// of hanging. Default 30 s.
	FetchTimeout time.Duration
	// PrefetchConcurrency bounds the fetches Prefetch runs at once. Default 2.
	PrefetchConcurrency int
	// FetchChunk is the part size of a ranged fetch (default 16 MiB);
	// artifacts of at least two parts are fetched in parts when the
	// Fetcher is a RangeFetcher. FetchParallel bounds the parts of one
	// fetch in flight at once (default 4).
	FetchChunk    int64
	FetchParallel int
	// Registerer receives the cache's metrics; nil means a private registry,
	// served by Cache.Metrics.
	Registerer prometheus.Registerer
	// Events, if set, receives artifact.start and artifact.end per request.
	Events EventSink
	// Repeats, if set, takes those events instead for requests that name
	// no machine (no ?mac=; httpboot drops a MAC the site does not know):
	// anyone on the boot network can send them at will, so they are
	// counted per source address and window (events.Aggregator), not
	// recorded two per request.
	Repeats Repeats
}

// Repeats records events a client can repeat at will: per source and
// window, the first few as they come and the rest as one counted event.
type Repeats interface {
	Count(source, kind, mac string, detail map[string]string)
}

// Stats is a snapshot for heartbeats.
type Stats struct {
	Bytes    int64   // bytes of verified artifacts on disk
	Entries  int     // verified artifacts on disk
	Hits     int64   // requests served from disk
	Misses   int64   // requests that fetched or joined a fetch
	HitRatio float64 // Hits / (Hits + Misses), 0 before any request
}

// Cache is the edge's artifact cache. It is safe for concurrent use.
type Cache struct {
	objDir, tmpDir string
	max            int64
	fetcher        Fetcher
	rangeFetcher   RangeFetcher // fetcher, if it serves ranges
	chunkSize      int64
	fetchParallel  int
	bufs           sync.Pool // *[]byte of copyBuf bytes: fetch copies and hashing
	log            *slog.Logger
	fetchTimeout   time.Duration
	events         EventSink
	repeats        Repeats
	m              *metrics
	gatherer       prometheus.Gatherer
	prefetchSem    chan struct{}

	ctx    context.Context // cancelled by Close; parent of every fetch
	cancel context.CancelFunc
	wg     sync.WaitGroup // fetch and prefetch goroutines

	mu        sync.Mutex
	closed    bool
	index     *lru.LRU[string, *entry] // verified (or to-verify) files, oldest first
	bytes     int64                    // sum of index sizes
	reserved  int64                    // sizes of fetches in flight
	pinned    map[string]bool
	inflight  map[string]*fetch
	hits      int64
	misses    int64
	tmpSeq    uint64
	memBytes  int64 // sum of the index's in-memory bodies (memory.go)
	memBudget int64 // memBytes' bound; a field so tests can lower it
}

// entry is one file under sha256/.
type entry struct {
	sha  string
	size int64

	verifyMu sync.Mutex // one verification at a time; later callers wait for its result
	verified bool       // guarded by verifyMu

	mem *memBody // guarded by Cache.mu: the verified bytes, for a small artifact (memory.go)
}

// copyBuf is the buffer of one store read or one hashing read.
const copyBuf = 256 << 10

// isHexSHA256 says whether s is exactly 64 lower-case hex digits. A loop,
// not a regexp: it runs on every request (see proto.isToken).
func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// New opens (or creates) the cache in cfg.Dir, deletes partial downloads left
// by a previous run and rebuilds the index from the files on disk.
func New(cfg Config) (*Cache, error) {
	switch {
	case cfg.Dir == "":
		return nil, errors.New("cache: no cache directory")
	case cfg.MaxBytes <= 0:
		return nil, fmt.Errorf("cache: size must be positive, got %d bytes", cfg.MaxBytes)
	case cfg.Fetcher == nil:
		return nil, errors.New("cache: no artifact store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 30 * time.Second
	}
	if cfg.PrefetchConcurrency <= 0 {
		cfg.PrefetchConcurrency = 2
	}
	if cfg.FetchChunk <= 0 {
		cfg.FetchChunk = 16 << 20
	}
	if cfg.FetchParallel <= 0 {
		cfg.FetchParallel = 4
	}
	var gatherer prometheus.Gatherer
	if cfg.Registerer == nil {
		reg := prometheus.NewRegistry()
		cfg.Registerer, gatherer = reg, reg
	} else if g, ok := cfg.Registerer.(prometheus.Gatherer); ok {
		gatherer = g
	}
	index, err := lru.NewLRU[string, *entry](math.MaxInt, nil) // unbounded in count: we bound bytes
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c := &Cache{
		objDir:        filepath.Join(cfg.Dir, "sha256"),
		tmpDir:        filepath.Join(cfg.Dir, "tmp"),
		max:           cfg.MaxBytes,
		fetcher:       cfg.Fetcher,
		chunkSize:     cfg.FetchChunk,
		fetchParallel: cfg.FetchParallel,
		bufs:          sync.Pool{New: func() any { b := make([]byte, copyBuf); return &b }},
		log:           cfg.Logger,
		fetchTimeout:  cfg.FetchTimeout,
		events:        cfg.Events,
		repeats:       cfg.Repeats,
		gatherer:      gatherer,
		prefetchSem:   make(chan struct{}, cfg.PrefetchConcurrency),
		index:         index,
		pinned:        map[string]bool{},
		inflight:      map[string]*fetch{},
		memBudget:     memBudgetDefault,
	}
	for _, d := range []string{c.objDir, c.tmpDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}
	c.rangeFetcher, _ = cfg.Fetcher.(RangeFetcher)
	if err := c.rebuild(); err != nil {
		return nil, err
	}
	if c.m, err = newMetrics(cfg.Registerer, c); err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// rebuild deletes partial downloads and indexes sha256/, oldest file first so
// that recency survives a restart approximately (the fetch time).
func (c *Cache) rebuild() error {
	tmps, err := os.ReadDir(c.tmpDir)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	for _, t := range tmps {
		if err := os.RemoveAll(filepath.Join(c.tmpDir, t.Name())); err != nil {
			return fmt.Errorf("cache: remove partial download: %w", err)
		}
	}
	objs, err := os.ReadDir(c.objDir)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	type found struct {
		e     *entry
		mtime time.Time
	}
	var all []found
	for _, o := range objs {
		p := filepath.Join(c.objDir, o.Name())
		info, err := o.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("cache: %w", err)
		}
		if !info.Mode().IsRegular() || !isHexSHA256(o.Name()) {
			c.log.Warn("cache: removing stray file", "path", p)
			if err := os.RemoveAll(p); err != nil {
				return fmt.Errorf("cache: remove stray file: %w", err)
			}
			continue
		}
		all = append(all, found{&entry{sha: o.Name(), size: info.Size()}, info.ModTime()})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].mtime.Before(all[j].mtime) })
	for _, f := range all {
		c.index.Add(f.e.sha, f.e)
		c.bytes += f.e.size
	}
	// A smaller --cache-size than last time: shed the oldest now.
	evicted := 0
	for c.bytes > c.max {
		_, e, _ := c.index.GetOldest()
		c.removeLocked(e)
		evicted++
	}
	c.log.Info("cache: index rebuilt", "entries", c.index.Len(), "bytes", c.bytes,
		"max_bytes", c.max, "partials_removed", len(tmps), "evicted", evicted)
	return nil
}

// Close stops prefetches and fetches in flight (their clients see the
// connection fail) and waits for them. Cached files stay on disk.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	return nil
}

// SetPinned names the artifacts (by sha256) of images assigned to hosts of
// this site. Eviction removes every other artifact before any of these.
func (c *Cache) SetPinned(sha256s []string) {
	p := make(map[string]bool, len(sha256s))
	for _, s := range sha256s {
		p[s] = true
	}
	c.mu.Lock()
	c.pinned = p
	c.mu.Unlock()
}

// Contains reports whether the artifact with this sha256 is on disk (it may
// still fail verification on first use after a restart).
func (c *Cache) Contains(sha256 string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.index.Contains(sha256)
}

// Stats returns counters for heartbeats.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{Bytes: c.bytes, Entries: c.index.Len(), Hits: c.hits, Misses: c.misses}
	if n := s.Hits + s.Misses; n > 0 {
		s.HitRatio = float64(s.Hits) / float64(n)
	}
	return s
}

func (c *Cache) objPath(sha string) string { return filepath.Join(c.objDir, sha) }

// removeLocked drops an entry and its file. Clients still reading the file
// keep their open descriptor, so eviction never cuts a download short.
func (c *Cache) removeLocked(e *entry) {
	if cur, ok := c.index.Peek(e.sha); !ok || cur != e {
		return
	}
	c.index.Remove(e.sha)
	c.bytes -= e.size
	c.forgetLocked(e)
	if err := os.Remove(c.objPath(e.sha)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Error("cache: remove file", "sha256", e.sha, "err", err)
	}
}

// makeRoomLocked evicts until n more bytes fit: least recently used unpinned
// artifacts first, then pinned ones, also oldest first.
func (c *Cache) makeRoomLocked(n int64) error {
	if c.bytes+c.reserved+n <= c.max {
		return nil
	}
	keys := c.index.Keys() // oldest first
	order := make([]string, 0, len(keys))
	for _, k := range keys {
		if !c.pinned[k] {
			order = append(order, k)
		}
	}
	for _, k := range keys {
		if c.pinned[k] {
			order = append(order, k)
		}
	}
	for _, k := range order {
		if c.bytes+c.reserved+n <= c.max {
			break
		}
		e, _ := c.index.Peek(k)
		c.log.Debug("cache: evicting", "sha256", k, "bytes", e.size, "pinned", c.pinned[k])
		c.removeLocked(e)
		c.m.evictions.Inc()
	}
	if c.bytes+c.reserved+n > c.max {
		return &fetchError{reason: ReasonNoRoom, msg: fmt.Sprintf(
			"no room for %d bytes: downloads in progress hold %d of the cache's %d bytes", n, c.reserved, c.max)}
	}
	return nil
}

// errStale reports an index entry whose file is missing or failed
// verification; the caller treats the request as a miss.
var errStale = errors.New("cache: cached file failed verification")

// openEntry opens a cached file, verifying it first if it came from a
// previous run. want is the registered size: a file of another length left by
// a previous run (truncated by a crash or a full disk) is dropped without
// reading it.
func (c *Cache) openEntry(ctx context.Context, e *entry, want int64) (*os.File, error) {
	f, err := os.Open(c.objPath(e.sha))
	if err != nil {
		c.log.Error("cache: cached file unreadable, refetching", "sha256", e.sha, "err", err)
		c.drop(e)
		return nil, errStale
	}
	e.verifyMu.Lock()
	defer e.verifyMu.Unlock()
	if e.verified {
		return f, nil
	}
	if e.size != want {
		f.Close()
		c.log.Error("cache: cached file has the wrong size, refetching", "sha256", e.sha,
			"bytes", e.size, "want_bytes", want)
		c.drop(e)
		return nil, errStale
	}
	sum, n, err := hashFile(ctx, f)
	if err != nil && ctx.Err() != nil {
		f.Close()
		return nil, ctx.Err()
	}
	if err != nil || n != e.size || sum != e.sha {
		f.Close()
		c.log.Error("cache: cached file failed verification, refetching", "sha256", e.sha,
			"got_sha256", sum, "bytes", n, "err", err)
		c.drop(e)
		return nil, errStale
	}
	e.verified = true
	return f, nil
}

func (c *Cache) drop(e *entry) {
	c.mu.Lock()
	c.removeLocked(e)
	c.mu.Unlock()
}

// hashFile reads f from the start, stopping early when ctx is done.
func hashFile(ctx context.Context, f *os.File) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, io.NewSectionReader(f, 0, math.MaxInt64)})
	return hex.EncodeToString(h.Sum(nil)), n, err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// checkArtifact rejects metadata the cache cannot act on safely; the sha256
// names a file, so it must be exactly 64 lower-case hex digits.
func checkArtifact(a proto.Artifact) error {
	switch {
	case !isHexSHA256(a.SHA256):
		return fmt.Errorf("cache: artifact %q: invalid sha256 %q", a.Name, a.SHA256)
	case a.Size < 0:
		return fmt.Errorf("cache: artifact %q: negative size %d", a.Name, a.Size)
	case a.Key == "":
		return fmt.Errorf("cache: artifact %q: no object key", a.Name)
	}
	return nil
}
