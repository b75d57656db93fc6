// Package atomicfile replaces a file so that a crash leaves either the old
// content or the new, never a torn mix: write a temporary file in the same
// directory, fsync it, rename it over the target, fsync the directory.
//
// Every piece of state fleetboot keeps on disk (leases, snapshots, event
// cursors, staged boot files, the dir:// store, the identity registry) goes
// through here, so the crash-safety rule lives in one place.
package atomicfile

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Options tune a write. The zero value is mode 0644 and no mtime.
type Options struct {
	Perm     os.FileMode // file mode; 0 means 0644
	ModTime  time.Time   // when set, the new file's mtime (staged copies keep their source's)
	MkdirAll bool        // create the directory (0755) when it is missing
}

// WriteFile atomically replaces path with data.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return Write(path, Options{Perm: perm}, func(w io.Writer) error {
		_, err := io.Copy(w, bytes.NewReader(data))
		return err
	})
}

// Write atomically replaces path with what fill writes. If fill fails, the
// temporary file is removed and path is untouched.
func Write(path string, o Options, fill func(w io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	if o.MkdirAll {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("atomicfile: %w", err)
		}
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := fill(tmp); err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	perm := o.Perm
	if perm == 0 {
		perm = 0o644
	}
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("atomicfile: fsync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	if !o.ModTime.IsZero() {
		if err := os.Chtimes(tmp.Name(), o.ModTime, o.ModTime); err != nil {
			return fmt.Errorf("atomicfile: %w", err)
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory so that a rename or create inside it survives
// a power loss.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("atomicfile: sync %s: %w", dir, err)
	}
	return nil
}
