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

	"golang.org/x/sys/unix"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
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
	fd     uintptr         // file's, for sync_file_range
	ctx    context.Context // the download's; cancelled with errStalled or errAbandoned
	cancel context.CancelCauseFunc

	readers    int  // clients and prefetches waiting for it; guarded by Cache.mu
	prefetched bool // a prefetch wants it whoever waits; guarded by Cache.mu

	started  time.Time     // the fetch began; for its log line
	answered time.Duration // the store's first answer (headers) came after this; set by download
	mu       sync.Mutex
	// firstByte: the first bytes were in the file this long after the
	// start; guarded by mu.
	firstByte time.Duration
	refs      int
	chunk     int64   // bytes per part (the size when fetched whole)
	chunkDone []int64 // bytes written per part
	front     int     // first part not complete
	written   int64   // bytes from 0 on that are in the file
	done      bool    // verified and committed, or failed
	err       error
	changed   chan struct{} // closed and replaced whenever written/done/err change
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

// released is how many bytes readers may have: all once verified, else
// every written byte but the last of the artifact.
func (f *fetch) released() (avail int64, done bool, changed <-chan struct{}, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	avail = f.written
	if !f.done {
		avail = min(f.written, f.a.Size-1)
	}
	return avail, f.done, f.changed, f.err
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
	for {
		avail, done, changed, err := s.f.released()
		if err != nil {
			return 0, err
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

// sendTo writes up to limit bytes from s's position to w, each window of
// released bytes with one w.ReadFrom of the partial file, which net/http
// turns into sendfile: no copy through user space while the download
// runs. The file is opened again (its own offset; /proc/self/fd names the
// descriptor, which the reader's reference keeps open) and, if that fails,
// the bytes are copied through Read as before.
func (s *streamReader) sendTo(w io.Writer, limit int64) (int64, error) {
	file, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", s.f.fd))
	if err != nil {
		return io.Copy(writerOnly{w}, io.LimitReader(s, limit))
	}
	defer file.Close()
	if _, err := file.Seek(s.off, io.SeekStart); err != nil {
		return 0, err
	}
	var sent int64
	for sent < limit {
		avail, done, changed, err := s.f.released()
		if err != nil {
			return sent, err
		}
		if s.off < avail {
			part := &io.LimitedReader{R: file, N: min(avail-s.off, limit-sent)}
			var k int64
			if rf, ok := w.(io.ReaderFrom); ok {
				k, err = rf.ReadFrom(part)
			} else {
				k, err = io.Copy(w, part)
			}
			s.off += k
			sent += k
			if err != nil {
				return sent, err
			}
			if k == 0 {
				return sent, io.ErrUnexpectedEOF // the file is shorter than written says
			}
			continue
		}
		if done {
			return sent, nil
		}
		select {
		case <-changed:
		case <-s.ctx.Done():
			return sent, s.ctx.Err()
		}
	}
	return sent, nil
}

// writerOnly hides a writer's ReadFrom, so io.Copy does not call back.
type writerOnly struct{ io.Writer }

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
	f := &fetch{a: a, tmp: tmp, file: file, fd: file.Fd(), started: time.Now(), refs: 2, readers: 1, changed: make(chan struct{})}
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
		// Where a slow first byte came from: the store's answer, or the
		// edge between that answer and the first bytes on disk.
		f.mu.Lock()
		first := f.firstByte
		f.mu.Unlock()
		c.log.Info("cache: fetched", "key", f.a.Key, "sha256", f.a.SHA256, "bytes", f.a.Size,
			"duration_ms", time.Since(f.started).Milliseconds(),
			"store_answer_ms", msec(f.answered), "first_byte_ms", msec(first))
	}
	f.update(func() {
		f.done = true
		f.err = err
	})
}

// download fills f.tmp from the store and verifies it. Large objects come
// as parallel ranged GETs when the store can serve ranges (RangeFetcher):
// one TCP stream from S3 is bounded by its window and by one request's
// server-side pipeline, while a few at once fill the link. Bytes are written
// where they belong (pwrite); clients are shown the contiguous prefix from
// byte 0 (f.written), and a hasher goroutine reads that prefix back from the
// page cache in order, on another core than the receiving, so the digest is
// ready as soon as the last byte lands. The hasher also starts the
// writeback of what it has hashed, so the fsync before the commit finds
// little left to write. The last byte goes out once the file is verified
// and committed (runFetch).
func (c *Cache) download(f *fetch) error {
	a := f.a
	ctx := f.ctx
	storeErr := func(err error) error {
		var fe *fetchError
		switch {
		case errors.As(err, &fe):
			return fe
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

	f.initChunks(c.chunkSize, c.rangeFetcher != nil)
	// wctx stops the other GETs and the hasher when one part fails; the
	// first failure is the fetch's error.
	wctx, wcancel := context.WithCancelCause(ctx)
	defer wcancel(nil)
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		wcancel(err)
	}

	var wg sync.WaitGroup
	hashed := make(chan error, 1)
	go func() { hashed <- c.hash(wctx, f) }()

	if len(f.chunkDone) == 1 {
		if err := c.getWhole(wctx, f); err != nil {
			fail(err)
		}
	} else {
		// Part 0 first, alone: its answer says whether the object exists
		// and has the registered size before more GETs go out, and it
		// carries the first bytes clients wait for.
		next := make(chan int, len(f.chunkDone))
		for i := 1; i < len(f.chunkDone); i++ {
			next <- i
		}
		close(next)
		first, err := c.getRange(wctx, f, 0)
		f.answered = time.Since(f.started)
		if err != nil {
			fail(err)
		} else {
			workers := min(c.fetchParallel, len(f.chunkDone))
			run := func(body io.ReadCloser, i int) {
				defer wg.Done()
				var err error
				for {
					if body != nil {
						err = c.copyChunk(wctx, f, body, i)
						body.Close()
						if err != nil {
							fail(err)
							return
						}
					}
					var ok bool
					if i, ok = <-next; !ok || wctx.Err() != nil {
						return
					}
					if body, err = c.getRange(wctx, f, i); err != nil {
						fail(err)
						return
					}
				}
			}
			wg.Add(workers)
			go run(first, 0)
			// The other parts' GETs wait until part 0 has put its first
			// bytes in the file: on a machine with few cores, three more
			// streams arriving with the first bytes delayed the client's
			// first byte (two cores, 1 GiB: 11.5-24.5 ms, against
			// 4.5-7.4 ms with the wait and 2.4-2.7 ms for a direct GET).
			burst := min(firstBurst, f.chunkLen(0))
			_ = f.wait(wctx, func(written int64, done bool) bool { return written >= burst || done })
			for range workers - 1 {
				go run(nil, 0)
			}
			wg.Wait()
		}
	}
	if firstErr == nil {
		if err := <-hashed; err != nil {
			fail(err)
		}
	} else {
		wcancel(firstErr)
		<-hashed
	}
	if firstErr != nil {
		if ctx.Err() != nil || errors.Is(firstErr, context.Canceled) {
			return storeErr(context.Cause(ctx))
		}
		return storeErr(firstErr)
	}
	if err := f.file.Sync(); err != nil {
		return diskError("fsync "+f.tmp, err)
	}
	return nil
}

// initChunks splits the artifact into parts of chunk bytes, or keeps it
// whole when ranges are not available or not worth it.
func (f *fetch) initChunks(chunk int64, ranged bool) {
	n := int64(1)
	if ranged && chunk > 0 && f.a.Size >= 2*chunk {
		n = (f.a.Size + chunk - 1) / chunk
	} else {
		chunk = max(f.a.Size, 1)
	}
	f.mu.Lock()
	f.chunk = chunk
	f.chunkDone = make([]int64, n)
	f.mu.Unlock()
}

func (f *fetch) chunkLen(i int) int64 {
	return min(f.chunk, f.a.Size-int64(i)*f.chunk)
}

// wrote records k bytes written in part i and moves f.written, the end of
// the contiguous prefix, waking readers only when it moves.
func (f *fetch) wrote(i int, k int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.chunkDone[i] += k
	for f.front < len(f.chunkDone) && f.chunkDone[f.front] == f.chunkLen(f.front) {
		f.front++
	}
	w := f.a.Size
	if f.front < len(f.chunkDone) {
		w = int64(f.front)*f.chunk + f.chunkDone[f.front]
	}
	if w != f.written {
		if f.written == 0 {
			f.firstByte = time.Since(f.started)
		}
		f.written = w
		close(f.changed)
		f.changed = make(chan struct{})
	}
}

// getWhole reads the object with one GET, as stores without ranges serve it.
func (c *Cache) getWhole(ctx context.Context, f *fetch) error {
	var body io.ReadCloser
	err := c.watch(f, func() (err error) {
		body, err = c.fetcher.Get(ctx, f.a.Key)
		return err
	})
	f.answered = time.Since(f.started)
	if err != nil {
		return err
	}
	defer body.Close()
	return c.copyChunk(ctx, f, body, 0)
}

// getRange opens part i and checks the object's size the store reports.
func (c *Cache) getRange(ctx context.Context, f *fetch, i int) (io.ReadCloser, error) {
	off, n := int64(i)*f.chunk, f.chunkLen(i)
	var body io.ReadCloser
	var total int64
	err := c.watch(f, func() (err error) {
		body, total, err = c.rangeFetcher.GetRange(ctx, f.a.Key, off, n)
		return err
	})
	if err != nil {
		return nil, err
	}
	if total != f.a.Size {
		body.Close()
		return nil, &fetchError{reason: ReasonSizeMismatch, msg: fmt.Sprintf(
			"object %s has %d bytes, registered %d", f.a.Key, total, f.a.Size)}
	}
	return body, nil
}

// watch runs a store call under the stall watchdog: a store that accepts
// the connection and never answers fails the fetch after FetchTimeout.
func (c *Cache) watch(f *fetch, call func() error) error {
	t := time.AfterFunc(c.fetchTimeout, func() { f.cancel(errStalled) })
	defer t.Stop()
	return call()
}

// copyChunk writes body into part i of f.tmp. A watchdog, reset by every
// read that brings bytes, fails the fetch when the store sends nothing for
// FetchTimeout: a store that accepts the connection and then goes silent
// must not hold clients forever.
func (c *Cache) copyChunk(ctx context.Context, f *fetch, body io.Reader, i int) error {
	a := f.a
	watchdog := time.AfterFunc(c.fetchTimeout, func() { f.cancel(errStalled) })
	defer watchdog.Stop()
	bufp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bufp)
	buf := *bufp
	// Small reads first: some clients (minio-go) fill the whole buffer
	// before returning, and the first byte should reach waiting clients
	// early.
	chunk := 16 << 10
	off, end := int64(i)*f.chunk, int64(i)*f.chunk+f.chunkLen(i)
	for {
		k, rerr := body.Read(buf[:chunk])
		chunk = min(2*chunk, len(buf))
		if k > 0 {
			watchdog.Reset(c.fetchTimeout)
			if off+int64(k) > end {
				return &fetchError{reason: ReasonSizeMismatch, msg: fmt.Sprintf(
					"object %s is longer than its registered %d bytes", a.Key, a.Size)}
			}
			if _, err := f.file.WriteAt(buf[:k], off); err != nil {
				return diskError("write "+f.tmp, err)
			}
			off += int64(k)
			c.m.fetchedBytes.Add(float64(k))
			f.wrote(i, int64(k))
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return rerr
		}
	}
	if off != end {
		got := off
		if len(f.chunkDone) > 1 {
			got = -1
		}
		msg := fmt.Sprintf("object %s has %d bytes, registered %d", a.Key, got, a.Size)
		if got < 0 {
			msg = fmt.Sprintf("object %s: part at %d ended after %d of %d bytes", a.Key,
				int64(i)*f.chunk, off-int64(i)*f.chunk, f.chunkLen(i))
		}
		return &fetchError{reason: ReasonSizeMismatch, msg: msg}
	}
	return nil
}

// firstBurst is how much of part 0 a ranged fetch has in the file before
// its other parts' GETs go out.
const firstBurst = 256 << 10

// writebackStep is how much the hasher hashes before it starts the
// writeback of those bytes.
const writebackStep = 8 << 20

// hash reads the written prefix back in order (from the page cache) and
// checks the digest once the whole size is there.
func (c *Cache) hash(ctx context.Context, f *fetch) error {
	h := sha256.New()
	bufp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bufp)
	buf := *bufp
	var n, flushed int64
	for n < f.a.Size {
		if n-flushed >= writebackStep {
			// Asynchronous: queues the pages for writing and returns.
			// A failure here is not fatal; the fsync reports real ones.
			_ = unix.SyncFileRange(int(f.fd), flushed, n-flushed, unix.SYNC_FILE_RANGE_WRITE)
			flushed = n
		}
		written, _, changed, _ := f.state()
		if n == written {
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		k, err := f.file.ReadAt(buf[:min(int64(len(buf)), written-n)], n)
		if k > 0 {
			h.Write(buf[:k])
			n += int64(k)
		}
		if err != nil && !(err == io.EOF && k > 0) {
			return diskError("read back "+f.tmp, err)
		}
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != f.a.SHA256 {
		return &fetchError{reason: ReasonDigestMismatch, msg: fmt.Sprintf(
			"object %s has sha256 %s, registered %s", f.a.Key, sum, f.a.SHA256)}
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

// msec is d in milliseconds with microseconds kept: a first byte of a few
// milliseconds is what the log line is for.
func msec(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
