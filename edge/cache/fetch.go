package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
	"golang.org/x/sys/unix"
)

// fetchError is why a fetch failed, with the HTTP status a client that has
// not received any byte yet is answered with.
type fetchError struct {
	reason string
	msg    string
	err    error
}

func (e *fetchError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *fetchError) Unwrap() error { return e.err }

func (e *fetchError) status() int {
	switch e.reason {
	case ReasonStore, ReasonTimeout, ReasonClosed, ReasonAbandoned:
		return http.StatusServiceUnavailable
	case ReasonNotFound, ReasonSizeMismatch, ReasonDigestMismatch:
		return http.StatusBadGateway
	case ReasonDiskFull, ReasonTooLarge, ReasonNoRoom:
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}

func reasonOf(err error) string {
	var fe *fetchError
	if errors.As(err, &fe) {
		return fe.reason
	}
	return ReasonDisk
}

// errStalled is the cancel cause when the store sends nothing for FetchTimeout.
var errStalled = errors.New("store sent nothing")

// errAbandoned is the cancel cause when the last client of an unpinned
// download went away: nobody waits for the bytes, and a client that asks for
// any image's files and hangs up must not make the edge download them whole.
var errAbandoned = errors.New("no client waits for it")

// fetch is one download in progress. The writer appends to file; readers
// share the descriptor and read with pread (ReadAt), so a reader that joins
// late starts at byte 0 and nobody needs to reopen a file that is renamed
// under them. The descriptor is closed when the writer and every reader have
// released it.
type fetch struct {
	a      proto.Artifact
	tmp    string
	file   *os.File
	ctx    context.Context // the download's; cancelled with errStalled or errAbandoned
	cancel context.CancelCauseFunc

	readers    int  // clients and prefetches waiting for it; guarded by Cache.mu
	prefetched bool // a prefetch wants it whoever waits; guarded by Cache.mu

	mu      sync.Mutex
	refs    int
	written int64
	done    bool
	err     error
	changed chan struct{} // closed and replaced whenever written/done/err change
}

// join adds a reader. Call with Cache.mu held while the fetch is in
// c.inflight: the writer's own reference keeps the file open until then.
// Each join is undone by Cache.leave.
func (f *fetch) join() {
	f.readers++
	f.mu.Lock()
	f.refs++
	f.mu.Unlock()
}

// leave drops a reader of f. When the last one leaves a download that is
// still running and whose artifact is not pinned (no host of the site boots
// it), the download is cancelled and forgotten at once, so the next client
// starts a fresh one instead of joining a dying one. A pinned or prefetched
// artifact keeps downloading: a machine of the site will want it.
func (c *Cache) leave(f *fetch) {
	c.mu.Lock()
	f.readers--
	if f.readers == 0 && !f.prefetched && !c.pinned[f.a.SHA256] && c.inflight[f.a.SHA256] == f {
		delete(c.inflight, f.a.SHA256)
		f.cancel(errAbandoned)
	}
	c.mu.Unlock()
	f.release()
}

func (f *fetch) release() {
	f.mu.Lock()
	f.refs--
	last := f.refs == 0
	f.mu.Unlock()
	if last {
		f.file.Close()
	}
}

// update changes state under the lock and wakes every waiter.
func (f *fetch) update(fn func()) {
	f.mu.Lock()
	fn()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// state returns a snapshot and the channel that is closed on the next change.
func (f *fetch) state() (written int64, done bool, changed <-chan struct{}, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written, f.done, f.changed, f.err
}

// wait blocks until cond holds for the fetch's state, the fetch fails, or
// ctx is done.
func (f *fetch) wait(ctx context.Context, cond func(written int64, done bool) bool) error {
	for {
		written, done, changed, err := f.state()
		if err != nil {
			return err
		}
		if cond(written, done) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// failed returns the fetch's error, if it has failed.
func (f *fetch) failed() error {
	_, _, _, err := f.state()
	return err
}

// streamReader reads a fetch's file as it grows. It never returns the last
// byte before the download is verified, so a body is only complete when the
// content is right. It is an io.ReadSeeker for http.ServeContent.
type streamReader struct {
	ctx context.Context
	f   *fetch
	off int64
}

func (s *streamReader) Read(p []byte) (int, error) {
	size := s.f.a.Size
	for {
		written, done, changed, err := s.f.state()
		if err != nil {
			return 0, err
		}
		avail := written
		if !done {
			avail = min(written, size-1) // hold back the last byte until verified
		}
		if s.off < avail {
			n := int(min(int64(len(p)), avail-s.off))
			n, err := s.f.file.ReadAt(p[:n], s.off)
			s.off += int64(n)
			if err == io.EOF && n > 0 {
				err = nil
			}
			return n, err
		}
		if done {
			return 0, io.EOF
		}
		select {
		case <-changed:
		case <-s.ctx.Done():
			return 0, s.ctx.Err()
		}
	}
}

func (s *streamReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += s.off
	case io.SeekEnd:
		offset += s.f.a.Size
	default:
		return 0, errors.New("cache: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("cache: negative position")
	}
	s.off = offset
	return offset, nil
}

// startFetchLocked reserves room and starts the one download of a; the caller
// holds c.mu and gets a reference (release it).
func (c *Cache) startFetchLocked(a proto.Artifact) (*fetch, error) {
	f, err := c.tryStartFetchLocked(a)
	if err != nil {
		c.m.fetchErrors.WithLabelValues(reasonOf(err)).Inc()
		c.log.Error("cache: cannot fetch", "key", a.Key, "sha256", a.SHA256, "reason", reasonOf(err), "err", err)
	}
	return f, err
}

func (c *Cache) tryStartFetchLocked(a proto.Artifact) (*fetch, error) {
	if c.closed {
		return nil, &fetchError{reason: ReasonClosed, msg: "cache is shutting down"}
	}
	if a.Size > c.max {
		return nil, &fetchError{reason: ReasonTooLarge, msg: fmt.Sprintf(
			"artifact %s (%d bytes) is larger than the whole cache (%d bytes)", a.Key, a.Size, c.max)}
	}
	if err := c.makeRoomLocked(a.Size); err != nil {
		return nil, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(c.tmpDir, &st); err == nil {
		if free := int64(st.Bavail) * int64(st.Bsize); free < a.Size {
			return nil, &fetchError{reason: ReasonDiskFull, msg: fmt.Sprintf(
				"disk full: artifact %s needs %d bytes, %d free in %s", a.Key, a.Size, free, c.tmpDir)}
		}
	}
	c.tmpSeq++
	tmp := filepath.Join(c.tmpDir, fmt.Sprintf("%s.%d.part", a.SHA256, c.tmpSeq))
	file, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, diskError("create temporary file", err)
	}
	f := &fetch{a: a, tmp: tmp, file: file, refs: 2, readers: 1, changed: make(chan struct{})}
	f.ctx, f.cancel = context.WithCancelCause(c.ctx)
	c.reserved += a.Size
	c.inflight[a.SHA256] = f
	c.wg.Add(1)
	go c.runFetch(f)
	return f, nil
}

func diskError(what string, err error) *fetchError {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return &fetchError{reason: ReasonDiskFull, msg: "disk full: " + what, err: err}
	}
	return &fetchError{reason: ReasonDisk, msg: what, err: err}
}

func (c *Cache) runFetch(f *fetch) {
	defer c.wg.Done()
	defer f.release()
	defer f.cancel(nil)
	c.m.fetchInFlight.Inc()
	defer c.m.fetchInFlight.Dec()
	start := time.Now()
	err := c.download(f)
	if err == nil {
		err = c.commit(f)
	}
	if err != nil {
		c.mu.Lock()
		if c.inflight[f.a.SHA256] == f { // an abandoned fetch is already gone
			delete(c.inflight, f.a.SHA256)
		}
		c.reserved -= f.a.Size
		c.mu.Unlock()
		os.Remove(f.tmp)
		c.m.fetchErrors.WithLabelValues(reasonOf(err)).Inc()
		level := slog.LevelError
		if reasonOf(err) == ReasonAbandoned {
			level = slog.LevelInfo
		}
		c.log.Log(context.Background(), level, "cache: fetch failed", "key", f.a.Key, "sha256", f.a.SHA256,
			"reason", reasonOf(err), "err", err)
	} else {
		c.log.Info("cache: fetched", "key", f.a.Key, "sha256", f.a.SHA256, "bytes", f.a.Size,
			"duration_ms", time.Since(start).Milliseconds())
	}
	f.update(func() {
		f.done = true
		f.err = err
	})
}

// download copies the object into f.tmp, hashing and counting as it goes.
func (c *Cache) download(f *fetch) error {
	a := f.a
	ctx := f.ctx
	// A watchdog, reset by every chunk: a store that accepts the connection
	// and then sends nothing must not hold clients forever.
	watchdog := time.AfterFunc(c.fetchTimeout, func() { f.cancel(errStalled) })
	defer watchdog.Stop()
	storeErr := func(err error) error {
		switch {
		case errors.Is(context.Cause(ctx), errStalled):
			return &fetchError{reason: ReasonTimeout, msg: fmt.Sprintf(
				"artifact store sent nothing for %s fetching %s", c.fetchTimeout, a.Key)}
		case c.ctx.Err() != nil:
			return &fetchError{reason: ReasonClosed, msg: "cache is shutting down"}
		case errors.Is(context.Cause(ctx), errAbandoned):
			return &fetchError{reason: ReasonAbandoned, msg: "download of " + a.Key + " cancelled: no client waits for it"}
		case errors.Is(err, artifactstore.ErrNotFound):
			return &fetchError{reason: ReasonNotFound, msg: "artifact store has no object " + a.Key, err: err}
		}
		return &fetchError{reason: ReasonStore, msg: "artifact store unavailable fetching " + a.Key, err: err}
	}
	body, err := c.fetcher.Get(ctx, a.Key)
	if err != nil {
		return storeErr(err)
	}
	defer body.Close()
	h := sha256.New()
	buf := make([]byte, 256<<10)
	// Small reads first: some clients (minio-go) fill the whole buffer before
	// returning, and the first byte should reach waiting clients early.
	chunk := 16 << 10
	var n int64
	for {
		k, rerr := body.Read(buf[:chunk])
		chunk = min(2*chunk, len(buf))
		if k > 0 {
			watchdog.Reset(c.fetchTimeout)
			if n+int64(k) > a.Size {
				return &fetchError{reason: ReasonSizeMismatch, msg: fmt.Sprintf(
					"object %s is longer than its registered %d bytes", a.Key, a.Size)}
			}
			h.Write(buf[:k])
			if _, err := f.file.Write(buf[:k]); err != nil {
				return diskError("write "+f.tmp, err)
			}
			n += int64(k)
			c.m.fetchedBytes.Add(float64(k))
			f.update(func() { f.written = n })
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return storeErr(rerr)
		}
	}
	if n != a.Size {
		return &fetchError{reason: ReasonSizeMismatch, msg: fmt.Sprintf(
			"object %s has %d bytes, registered %d", a.Key, n, a.Size)}
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != a.SHA256 {
		return &fetchError{reason: ReasonDigestMismatch, msg: fmt.Sprintf(
			"object %s has sha256 %s, registered %s", a.Key, sum, a.SHA256)}
	}
	if err := f.file.Sync(); err != nil {
		return diskError("fsync "+f.tmp, err)
	}
	return nil
}

// commit renames the verified file into place and indexes it, in one step
// under c.mu, so a request either joins the fetch or finds the entry.
func (c *Cache) commit(f *fetch) error {
	a := f.a
	c.mu.Lock()
	// A download abandoned too late to stop (Cache.leave) is no longer in
	// c.inflight, and a fresh one of the same artifact may be: leave that
	// one be, and keep the file once, whichever finishes first.
	if c.inflight[a.SHA256] == f {
		delete(c.inflight, a.SHA256)
	}
	if _, ok := c.index.Peek(a.SHA256); ok {
		c.reserved -= a.Size
		c.mu.Unlock()
		os.Remove(f.tmp)
		return nil
	}
	if err := os.Rename(f.tmp, c.objPath(a.SHA256)); err != nil {
		c.mu.Unlock()
		return diskError("rename into place", err)
	}
	c.reserved -= a.Size
	c.bytes += a.Size
	e := &entry{sha: a.SHA256, size: a.Size, verified: true}
	c.index.Add(a.SHA256, e)
	c.mu.Unlock()
	// Make the rename durable: after a power cut the file is either absent
	// or complete, never an empty name.
	if d, err := os.Open(c.objDir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
