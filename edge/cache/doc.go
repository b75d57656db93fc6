// Package cache is the edge's artifact cache: kernels, initrds and ISOs kept on
// local disk, content-addressed by sha256, bounded in bytes, filled from the
// artifact store.
//
// A hit is served with http.ServeContent over an *os.File, so the kernel's
// sendfile path carries the bytes and Range, If-Range, HEAD, ETag and
// Last-Modified come from net/http. A miss is fetched from the store exactly
// once however many clients ask: the first request starts the fetch, later ones
// join it, and every client reads the growing temporary file as bytes arrive
// (a late joiner starts at byte 0 of the same file), sent with sendfile from
// that file. When the store reads ranges (RangeFetcher) an artifact of two
// parts or more (Config.FetchChunk, 16 MiB) comes as ranged GETs, at most
// Config.FetchParallel (4) at once, each written at its offset; clients see
// the contiguous prefix from byte 0, never a byte past what is written. A
// second goroutine hashes that prefix in order as it grows (reading it back
// from the page cache) and starts its writeback; the file is fsynced and
// renamed into place only when size and sha256 match the registered
// artifact. Until then the last
// byte of the body is held back, so a client can never receive a
// complete-looking response for content that later fails verification: on a
// mismatch the response is aborted and the connection fails.
//
// On disk (under Config.Dir):
//
//	sha256/<64 hex>   verified artifacts
//	tmp/<hex>.<n>.part downloads in progress (deleted on start)
//
// Entries found on disk at start are verified lazily, on first use (size, then
// sha256): start-up costs one directory scan instead of reading every byte of
// a cache that may hold hundreds of GB, and an entry nobody asks for is never
// read. A file that fails verification is deleted and refetched.
//
// Metrics are registered with Config.Registerer (a private registry when nil;
// Cache.Metrics serves it).
package cache
