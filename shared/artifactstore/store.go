// Package artifactstore reads and writes boot artifacts (kernels, initrds,
// ISOs) in S3-compatible storage or a local directory, behind one small
// interface. Objects are content-addressed: the key names the sha256.
package artifactstore

import (
	"context"
	"errors"
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
