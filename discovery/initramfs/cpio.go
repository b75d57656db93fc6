package initramfs

import (
	"bytes"
	"fmt"
	"io"
	"sort"
)

// File types of an Entry's Mode (st_mode bits).
const (
	TypeDir     = 0o040000
	TypeFile    = 0o100000
	TypeSymlink = 0o120000
	TypeChar    = 0o020000
)

// Entry is one member of an initramfs: a file, a directory, a symlink (Data
// is the target) or a character device (Major, Minor).
type Entry struct {
	Mode         uint32 // full st_mode, file type bits included
	Data         []byte
	Major, Minor uint32
}

// WriteCPIO writes entries as a newc ("070701") archive, the format the
// kernel unpacks into its initramfs. Parents must be listed before their
// children, which sorting the paths does. Every file belongs to root with
// mtime 0, so the same input gives the same bytes (and the same sha256 in
// the artifact store: adding an unchanged discovery image uploads nothing).
func WriteCPIO(w io.Writer, entries map[string]Entry) error {
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		if err := writeRecord(w, n, entries[n], i+1); err != nil {
			return err
		}
	}
	return writeRecord(w, "TRAILER!!!", Entry{}, 0)
}

func writeRecord(w io.Writer, name string, e Entry, ino int) error {
	nlink := 1
	if e.Mode&0o170000 == TypeDir {
		nlink = 2
	}
	var b bytes.Buffer
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize, check: 8 hex digits each.
	fmt.Fprintf(&b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, e.Mode, 0, 0, nlink, 0, len(e.Data), 0, 0, e.Major, e.Minor, len(name)+1, 0)
	b.WriteString(name)
	b.WriteByte(0)
	pad4(&b)
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("initramfs: cpio: %w", err)
	}
	if _, err := w.Write(e.Data); err != nil {
		return fmt.Errorf("initramfs: cpio: %w", err)
	}
	if pad := (4 - len(e.Data)%4) % 4; pad > 0 {
		if _, err := w.Write(make([]byte, pad)); err != nil {
			return fmt.Errorf("initramfs: cpio: %w", err)
		}
	}
	return nil
}

func pad4(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}
