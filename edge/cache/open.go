package cache

import (
	"context"
	"fmt"
	"os"

	"github.com/fleetboot/fleetboot/proto"
)

// maxOpenRounds bounds Open's retries when the file it waited for is gone
// (evicted, or found corrupt) before it could be opened: each round is one
// more fetch, so a cache too small to keep the file gives up instead of
// downloading it forever.
const maxOpenRounds = 3

// Open returns artifact a's verified file, positioned at its start, for a
// transport that cannot take back bytes it sent (TFTP has no way to tell a
// client "the file you got was wrong"). On a hit the file is the cached one
// (verified on first use after a restart, as for HTTP). On a miss Open
// starts, or joins, the one download of a that HTTP clients share, and waits
// until it is verified and in the cache: no byte is ever read from a file
// before its size and sha256 matched. ctx bounds the wait; when the last
// waiter of an artifact that is not pinned gives up, the download stops, as
// for HTTP. The caller closes the file.
func (c *Cache) Open(ctx context.Context, a proto.Artifact) (*os.File, error) {
	if err := checkArtifact(a); err != nil {
		return nil, err
	}
	missed := false
	for range maxOpenRounds {
		l, err := c.acquire(ctx, a)
		if err != nil {
			return nil, err
		}
		if l.file != nil {
			c.count(missed)
			return l.file, nil
		}
		missed = true
		err = l.fetch.wait(ctx, func(_ int64, done bool) bool { return done })
		c.leave(l.fetch)
		if err != nil {
			c.count(true)
			return nil, err
		}
		// Verified and committed: the next round opens it from the index.
	}
	c.count(true)
	return nil, fmt.Errorf("cache: %s (%s) was fetched %d times and was gone each time: cache too small?", a.Name, a.SHA256, maxOpenRounds)
}

// count records one request as a hit or a miss, as ServeArtifact does.
func (c *Cache) count(miss bool) {
	c.mu.Lock()
	if miss {
		c.misses++
	} else {
		c.hits++
	}
	c.mu.Unlock()
	if miss {
		c.m.misses.Inc()
	} else {
		c.m.hits.Inc()
	}
}
