package edge

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/fleetboot/fleetboot/shared/atomicfile"
)

// Bounds of a boot directory: it holds loaders and their modules (iPXE
// binaries, GRUB's x86_64-efi/*.mod, QEMU option ROMs), a few levels and a
// few hundred files. A --boot-dir pointing at something much bigger is a
// mistake, refused before it fills the state directory.
const (
	maxBootFileSize = 64 << 20
	maxBootFiles    = 10000
	maxBootDepth    = 8
)

// stageBootFiles copies the bootstrap binaries of src (iPXE, shim, GRUB,
// GRUB's modules), sub-folders included, into dst, following symbolic links
// to files. Distributions link them across directories (Debian's
// /usr/lib/ipxe/ipxe.efi points into /boot), and the TFTP and HTTP servers
// confine themselves to one directory and refuse links that leave it; a
// staged copy keeps that confinement and still serves what the operator
// pointed at. Links to directories are not followed: they can loop, and can
// pull a whole foreign tree (/, /etc) into what the edge serves. dst itself
// and the skip directories (the edge's state and cache directories) are left
// out when they lie inside src: a copy of the copy would grow without end.
// Files already staged with the same size and time are kept.
func stageBootFiles(src, dst string, skip ...string) (int, error) {
	// The directory itself may be a link (--boot-dir /srv/current):
	// WalkDir would not enter it.
	src, err := filepath.EvalSymlinks(src)
	if err != nil {
		return 0, fmt.Errorf("edge: boot files: %w", err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return 0, fmt.Errorf("edge: boot files: %w", err)
	}
	// WalkDir's paths are real ones (it follows no links below src), so
	// the directories to leave out are compared by their real paths.
	leaveOut := map[string]bool{}
	for _, d := range append([]string{dst}, skip...) {
		if real, err := filepath.EvalSymlinks(d); err == nil {
			leaveOut[real] = true
		}
	}
	n := 0
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == src {
				return err
			}
			return nil // an unreadable sub-folder is left out, not fatal
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			if leaveOut[p] {
				return filepath.SkipDir
			}
			if rel != "." && strings.Count(rel, string(filepath.Separator)) >= maxBootDepth {
				return fmt.Errorf("%s is more than %d folders deep: is --boot-dir right?", p, maxBootDepth)
			}
			return os.MkdirAll(to, 0o755)
		}
		st, err := os.Stat(p) // follows links
		if err != nil || !st.Mode().IsRegular() || st.Size() > maxBootFileSize {
			return nil // dangling links, links to directories, devices, and anything too big to be a loader
		}
		if n++; n > maxBootFiles {
			return fmt.Errorf("%s holds more than %d files: is --boot-dir right?", src, maxBootFiles)
		}
		if old, err := os.Stat(to); err == nil && old.Size() == st.Size() && old.ModTime().Equal(st.ModTime()) {
			return nil
		}
		return copyFile(p, to, st)
	})
	if err != nil {
		return n, fmt.Errorf("edge: boot files: %w", err)
	}
	return n, nil
}

func copyFile(from, to string, st os.FileInfo) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	return atomicfile.Write(to, atomicfile.Options{Perm: 0o644, ModTime: st.ModTime()}, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}
