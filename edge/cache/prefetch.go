package cache

import (
	"context"

	"github.com/fleetboot/fleetboot/proto"
)

// Prefetch fetches the artifacts that are not cached yet in the background,
// at most Config.PrefetchConcurrency at a time across all calls, and returns
// at once. A fetch a client already started is joined, not repeated. Failures
// are logged and counted like any fetch. Cancelling ctx stops waiting for
// queued artifacts; a fetch already running completes (it fills the cache
// for everyone).
func (c *Cache) Prefetch(ctx context.Context, arts []proto.Artifact) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(c.ctx, cancel)
		defer stop()
		for _, a := range arts {
			if err := checkArtifact(a); err != nil {
				c.log.Error("cache: prefetch", "err", err)
				continue
			}
			select {
			case c.prefetchSem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			c.wg.Add(1) // safe: this goroutine's own count keeps the group open
			go func() {
				defer c.wg.Done()
				defer func() { <-c.prefetchSem }()
				c.prefetchOne(ctx, a)
			}()
		}
	}()
}

// prefetchOne starts or joins the fetch of a and waits for it, so the
// semaphore bounds the downloads really running.
func (c *Cache) prefetchOne(ctx context.Context, a proto.Artifact) {
	c.mu.Lock()
	if c.index.Contains(a.SHA256) {
		c.mu.Unlock()
		return
	}
	f := c.inflight[a.SHA256]
	if f != nil {
		f.join()
	} else {
		var err error
		if f, err = c.startFetchLocked(a); err != nil {
			c.mu.Unlock()
			return // counted and logged by startFetchLocked
		}
	}
	f.prefetched = true
	c.mu.Unlock()
	defer c.leave(f)
	f.wait(ctx, func(_ int64, done bool) bool { return done })
}
