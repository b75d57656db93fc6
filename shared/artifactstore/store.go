// Package artifactstore reads and writes boot artifacts (kernels, initrds,
// ISOs) in S3-compatible storage or a local directory, behind one small
// interface. Objects are content-addressed: the key names the sha256.
package artifactstore

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// ErrNotFound is returned when an object does not exist.
var ErrNotFound = errors.New("artifactstore: object not found")

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key  string
	Size int64
}

// Store is the artifact storage both the CLI (upload) and the edge (fetch) use.
type Store interface {
	// Put stores r (exactly size bytes) under key, replacing any object there.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Get opens an object for reading; ErrNotFound if it does not exist.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat reports an object's size; ErrNotFound if it does not exist.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
}

// RangeReader is what the S3 and directory stores also offer: n bytes of
// an object from offset off, with the object's whole size, so a reader can
// fetch a large object as several parts at once and still notice an object
// whose size is not the one it expects. The edge cache uses it.
type RangeReader interface {
	GetRange(ctx context.Context, key string, off, n int64) (body io.ReadCloser, size int64, err error)
}

func checkRange(key string, off, n int64) error {
	if off < 0 || n <= 0 {
		return fmt.Errorf("artifactstore: get %s: invalid range of %d bytes at %d", key, n, off)
	}
	return nil
}
