package e2e

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"sort"
)

// cpioEntry is one file, directory or symlink of an initramfs.
type cpioEntry struct {
	Mode uint32 // full st_mode, including the file type bits
	Data []byte // file contents, or the link target of a symlink
	// RdevMajor and RdevMinor number a device node (cpioChar).
	RdevMajor, RdevMinor uint32
}

const (
	cpioChar    = 0o020000
	cpioDir     = 0o040000
	cpioFile    = 0o100000
	cpioSymlink = 0o120000
)

// writeCPIO writes entries as a gzip-compressed newc ("070701") archive, the
// format the kernel unpacks into its initramfs. Written here rather than with
// cpio(1) so the harness needs no extra package. Parent directories must be
// listed explicitly; paths are sorted so the archive is reproducible.
func writeCPIO(w io.Writer, entries map[string]cpioEntry) error {
	zw := gzip.NewWriter(w)
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	ino := 1
	for _, n := range names {
		e := entries[n]
		if err := writeCPIORecord(zw, n, e, ino); err != nil {
			return err
		}
		ino++
	}
	if err := writeCPIORecord(zw, "TRAILER!!!", cpioEntry{}, 0); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("e2e: cpio: %w", err)
	}
	return nil
}

func writeCPIORecord(w io.Writer, name string, e cpioEntry, ino int) error {
	mode, data := e.Mode, e.Data
	nlink := 1
	if mode&cpioDir == cpioDir && mode&cpioFile != cpioFile {
		nlink = 2
	}
	var b bytes.Buffer
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
	// rdevmajor, rdevminor, namesize, check: all 8-digit hex.
	fmt.Fprintf(&b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, e.RdevMajor, e.RdevMinor, len(name)+1, 0)
	b.WriteString(name)
	b.WriteByte(0)
	pad4(&b)
	b.Write(data)
	pad4(&b)
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("e2e: cpio: %w", err)
	}
	return nil
}

func pad4(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}
