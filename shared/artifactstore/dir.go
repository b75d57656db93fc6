package artifactstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/fleetboot/fleetboot/shared/atomicfile"
)

// dirStore keeps objects as files under a root directory, the key being the
// relative path. It suits `fleetboot dev` and single-machine set-ups.
type dirStore struct {
	root string
}

func openDir(root string) (*dirStore, error) {
	root = filepath.Clean(root)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("artifactstore: directory store %s: %w", root, err)
	}
	// Prove we can write now, not at the first upload.
	f, err := os.CreateTemp(root, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("artifactstore: directory store %s is not writable: %w", root, err)
	}
	f.Close()
	os.Remove(f.Name())
	return &dirStore{root: root}, nil
}

func (d *dirStore) path(key string) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	return filepath.Join(d.root, filepath.FromSlash(key)), nil
}

// Put writes to a temporary file next to the target, fsyncs it, renames it
// into place and fsyncs the directory: a reader sees either the old object
// or the complete new one, never a partial file, even after a crash.
// Temporary names start with '.', which checkKey refuses, so they are never
// reachable as keys.
func (d *dirStore) Put(ctx context.Context, key string, r io.Reader, size int64) (err error) {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("artifactstore: put %s: negative size %d", key, size)
	}
	err = atomicfile.Write(p, atomicfile.Options{Perm: 0o644, MkdirAll: true}, func(w io.Writer) error {
		n, err := io.CopyN(w, ctxReader{ctx: ctx, r: r}, size)
		if err != nil {
			return fmt.Errorf("wrote %d of %d bytes: %w", n, size, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("artifactstore: put %s: %w", key, err)
	}
	return nil
}

func (d *dirStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, d.wrap("get", key, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, d.wrap("get", key, err)
	}
	// A key that names a directory (a prefix of other keys) is no object.
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, d.wrap("get", key, fs.ErrNotExist)
	}
	return f, nil
}

// GetRange reads n bytes from off (fewer if the file is shorter: the
// caller compares the size).
func (d *dirStore) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, int64, error) {
	if err := checkRange(key, off, n); err != nil {
		return nil, 0, err
	}
	rc, err := d.Get(ctx, key)
	if err != nil {
		return nil, 0, err
	}
	f := rc.(*os.File)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, d.wrap("get", key, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, off, n), f}, st.Size(), nil
}

func (d *dirStore) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	p, err := d.path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	st, err := os.Stat(p)
	if err == nil && !st.Mode().IsRegular() {
		err = fs.ErrNotExist
	}
	if err != nil {
		return ObjectInfo{}, d.wrap("stat", key, err)
	}
	return ObjectInfo{Key: key, Size: st.Size()}, nil
}

func (d *dirStore) wrap(op, key string, err error) error {
	// ENOTDIR: a parent of the key is a file, so the object cannot exist.
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%w: %s in %s", ErrNotFound, key, d.root)
	}
	return fmt.Errorf("artifactstore: %s %s in %s: %w", op, key, d.root, err)
}

// ctxReader stops a long copy when the context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
