package cache

import (
	"os"
	"time"
)

// Small verified artifacts (a GRUB module, a config, an iPXE script kept as
// an artifact) are also kept in memory once they have been served from
// disk: a hit then costs no open, fstat, lseek, sendfile and close, which
// for a 4 KiB body are most of the request's system calls. The bytes are
// the verified file's, read once; the disk copy stays the cache's record.
const (
	memMaxBody       = 64 << 10 // larger artifacts are always served from disk
	memBudgetDefault = 16 << 20 // all in-memory bodies together (Cache.memBudget)
)

// memBody is one artifact's bytes and its file's modification time (the
// Last-Modified a disk hit would carry). Immutable once made.
type memBody struct {
	body []byte
	mod  time.Time
}

// keepInMemory reads e's verified file into memory if it is small and the
// budget has room. file is the open hit that is about to be served; ReadAt
// leaves its offset alone. A read that fails just leaves e on disk.
func (c *Cache) keepInMemory(e *entry, file *os.File) {
	if e.size > memMaxBody {
		return
	}
	c.mu.Lock()
	skip := e.mem != nil || c.memBytes+e.size > c.memBudget
	c.mu.Unlock()
	if skip {
		return
	}
	body := make([]byte, e.size)
	// ReadAt reports io.EOF with a full read at the file's end; only the
	// count matters.
	if n, _ := file.ReadAt(body, 0); int64(n) != e.size {
		return
	}
	fi, err := file.Stat()
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Evicted or dropped meanwhile, or another request got here first.
	if cur, ok := c.index.Peek(e.sha); !ok || cur != e || e.mem != nil || c.memBytes+e.size > c.memBudget {
		return
	}
	e.mem = &memBody{body: body, mod: fi.ModTime()}
	c.memBytes += e.size
}

// forgetLocked releases e's bytes in memory; responses that already hold
// them finish with them.
func (c *Cache) forgetLocked(e *entry) {
	if e.mem != nil {
		c.memBytes -= int64(len(e.mem.body))
		e.mem = nil
	}
}
