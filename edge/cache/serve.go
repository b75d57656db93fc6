package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/fleetboot/fleetboot/edge/httpcount"
	"github.com/fleetboot/fleetboot/edge/ratelimit"
	"github.com/fleetboot/fleetboot/proto"
)

// lookup is the outcome of acquire: an open verified file or its verified
// bytes in memory (hit), a reference to the download in progress (miss), or
// neither (not cached, and acquire was told not to fetch).
type lookup struct {
	file  *os.File
	mem   *memBody
	fetch *fetch
}

// acquire finds a in the index or joins/starts its fetch. A cached file that
// fails verification is dropped and the loop turns the request into a miss.
func (c *Cache) acquire(ctx context.Context, a proto.Artifact) (lookup, error) {
	return c.lookup(ctx, a, true, false)
}

// lookup is acquire; with fetch false it only opens a cached file, and with
// mem true a small hit may come back as its bytes in memory instead of an
// open file.
func (c *Cache) lookup(ctx context.Context, a proto.Artifact, fetch, mem bool) (lookup, error) {
	for {
		c.mu.Lock()
		if e, ok := c.index.Get(a.SHA256); ok {
			if m := e.mem; mem && m != nil && int64(len(m.body)) == a.Size {
				c.mu.Unlock()
				return lookup{mem: m}, nil
			}
			c.mu.Unlock()
			file, err := c.openEntry(ctx, e, a.Size)
			if errors.Is(err, errStale) {
				continue // dropped from the index: the next round fetches
			}
			if err == nil && mem {
				c.keepInMemory(e, file)
			}
			return lookup{file: file}, err
		}
		if !fetch {
			c.mu.Unlock()
			return lookup{}, nil
		}
		if f := c.inflight[a.SHA256]; f != nil {
			f.join()
			c.mu.Unlock()
			return lookup{fetch: f}, nil
		}
		f, err := c.startFetchLocked(a)
		c.mu.Unlock()
		return lookup{fetch: f}, err
	}
}

// ServeArtifact answers GET or HEAD for artifact a: from disk on a hit, from
// the one download in progress on a miss. The response carries
// Content-Length = a.Size and ETag = the quoted sha256; a body that fails
// verification is aborted (the client sees the connection fail). The
// booting machine's MAC, if the URL carries ?mac=, goes into the events.
//
// A HEAD never starts a download: when a is not on disk it is answered from
// the registered size and digest (Content-Length, ETag, Range and
// preconditions as for the file), so a client can learn an ISO's size
// without making the edge fetch gigabytes. Such a 200 does not promise the
// store has the object; the GET that follows finds out.
func (c *Cache) ServeArtifact(w http.ResponseWriter, r *http.Request, a proto.Artifact) {
	start := time.Now()
	mac, err := proto.ParseMAC(r.URL.Query().Get("mac"))
	if err != nil {
		mac = ""
	}
	emit := c.emit
	if mac == "" && c.repeats != nil {
		// Nobody's boot: counted per source, as anyone can repeat it.
		ip := ""
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			ip = host
		}
		emit = func(kind, _ string, detail map[string]string) {
			detail["ip"] = ip
			c.repeats.Count(ratelimit.AddrKey(net.ParseIP(ip)), kind, "", detail)
		}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "cache: artifacts are read-only: use GET or HEAD", http.StatusMethodNotAllowed)
		return
	}
	if err := checkArtifact(a); err != nil {
		c.log.Error("cache: refusing artifact", "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	l, err := c.lookup(r.Context(), a, r.Method != http.MethodHead, true)
	kind := "hit"
	c.mu.Lock()
	switch {
	case l.file != nil, l.mem != nil:
		c.hits++
	case l.fetch == nil && err == nil:
		kind = "metadata" // a HEAD of an artifact not on disk: no hit, no miss
	default:
		kind = "miss"
		c.misses++
	}
	c.mu.Unlock()
	switch kind {
	case "hit":
		c.m.hits.Inc()
	case "miss":
		c.m.misses.Inc()
	}
	emit(proto.EventArtifactStart, mac, map[string]string{
		"file": a.Name, "sha256": a.SHA256, "size": strconv.FormatInt(a.Size, 10), "cache": kind})

	cw := &httpcount.Writer{ResponseWriter: w, SendFrom: sendStream}
	abort := false
	switch {
	case err != nil:
		c.fail(cw, a, err)
	case l.file != nil:
		c.serveFile(cw, r, a, l.file)
	case l.mem != nil:
		setHeaders(cw, a)
		http.ServeContent(cw, r, a.Name, l.mem.mod, bytes.NewReader(l.mem.body))
	case l.fetch == nil:
		setHeaders(cw, a)
		http.ServeContent(cw, r, a.Name, time.Time{}, sizeOnly{size: a.Size})
	default:
		abort = c.serveFetch(cw, r, a, l.fetch)
	}
	c.m.servedBytes.Add(float64(cw.N))

	status := "aborted"
	if cl, _ := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64); !abort && cw.Status < 400 &&
		(r.Method == http.MethodHead || cw.Status == http.StatusNotModified || cw.N == cl) {
		status = "complete"
	}
	detail := map[string]string{"file": a.Name, "sha256": a.SHA256, "cache": kind, "status": status,
		"bytes": strconv.FormatInt(cw.N, 10), "http_status": strconv.Itoa(cw.Status),
		"duration_ms": strconv.FormatInt(time.Since(start).Milliseconds(), 10)}
	if err != nil {
		detail["error"] = reasonOf(err)
	}
	emit(proto.EventArtifactEnd, mac, detail)
	if abort {
		// The body is shorter than its Content-Length and must not look
		// complete: ErrAbortHandler makes net/http drop the connection (an
		// HTTP/2 stream reset) without logging a stack trace.
		panic(http.ErrAbortHandler)
	}
}

func (c *Cache) emit(kind, mac string, detail map[string]string) {
	if c.events != nil {
		c.events.Emit(kind, mac, detail)
	}
}

func setHeaders(w http.ResponseWriter, a proto.Artifact) {
	h := w.Header()
	// Set before ServeContent, which would otherwise read 512 bytes to sniff.
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+a.SHA256+`"`)
}

// serveFile serves a verified file; ServeContent over *os.File takes the
// sendfile path and implements Range, If-Range, HEAD and the preconditions.
func (c *Cache) serveFile(w http.ResponseWriter, r *http.Request, a proto.Artifact, file *os.File) {
	defer file.Close()
	var mod time.Time
	if fi, err := file.Stat(); err == nil {
		mod = fi.ModTime()
	}
	setHeaders(w, a)
	http.ServeContent(w, r, a.Name, mod, file)
}

// serveFetch streams a download in progress and reports whether the response
// must be aborted because the download failed after bytes went out.
func (c *Cache) serveFetch(w http.ResponseWriter, r *http.Request, a proto.Artifact, f *fetch) (abort bool) {
	defer c.leave(f)
	ctx := r.Context()
	if r.Header.Get("Range") != "" {
		// A range is answered from the verified file: bytes from the partial
		// file could not be taken back if the digest then failed.
		if err := f.wait(ctx, func(_ int64, done bool) bool { return done }); err != nil {
			if ctx.Err() == nil {
				c.fail(w, a, err)
			}
			return false
		}
		l, err := c.acquire(ctx, a)
		switch {
		case err != nil:
			c.fail(w, a, err)
		case l.file != nil:
			c.serveFile(w, r, a, l.file)
		default: // evicted in between: stream the refetch, without the range
			r.Header.Del("Range")
			return c.serveFetch(w, r, a, l.fetch)
		}
		return false
	}
	// Wait for the first byte so that a store that is down or missing the
	// object gets a proper status, not a 200 that breaks off.
	err := f.wait(ctx, func(written int64, done bool) bool { return written > 0 || done })
	if err != nil {
		if ctx.Err() == nil {
			c.fail(w, a, err)
		}
		return false
	}
	setHeaders(w, a)
	http.ServeContent(w, r, a.Name, time.Time{}, &streamReader{ctx: ctx, f: f})
	if err := f.failed(); err != nil && ctx.Err() == nil {
		c.log.Warn("cache: aborting response, download failed", "key", a.Key, "sha256", a.SHA256, "err", err)
		return true
	}
	return false
}

// sizeOnly is the content of a HEAD answered without the file: it seeks,
// so http.ServeContent learns the size and checks ranges, and refuses to
// be read (ServeContent reads nothing for a HEAD).
type sizeOnly struct{ size int64 }

func (s sizeOnly) Seek(offset int64, whence int) (int64, error) {
	if whence == io.SeekEnd {
		return s.size + offset, nil
	}
	return offset, nil
}

func (sizeOnly) Read([]byte) (int, error) { return 0, errors.New("cache: no content for a HEAD") }

// fail answers a request that got no byte yet, with the reason in the body.
func (c *Cache) fail(w http.ResponseWriter, a proto.Artifact, err error) {
	var fe *fetchError
	status := http.StatusInternalServerError
	if errors.As(err, &fe) {
		status = fe.status()
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "10")
	}
	w.Header().Del("ETag")
	w.Header().Del("Content-Length")
	http.Error(w, err.Error(), status)
}

// sendStream sends a download in progress: ServeContent copies from
// io.LimitReader(streamReader); its released bytes go out with sendfile
// from the partial file instead of through a buffer (httpcount.Writer's
// SendFrom).
func sendStream(w http.ResponseWriter, r io.Reader) (int64, bool, error) {
	lr, ok := r.(*io.LimitedReader)
	if !ok {
		return 0, false, nil
	}
	sr, ok := lr.R.(*streamReader)
	if !ok {
		return 0, false, nil
	}
	n, err := sr.sendTo(w, lr.N)
	lr.N -= n
	return n, true, err
}
