package edge

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/fleetboot/fleetboot/shared/atomicfile"
)

// stageBootFiles copies the bootstrap binaries of src (iPXE, shim, GRUB) into
// dst, following symbolic links. Distributions link them across directories
// (Debian's /usr/lib/ipxe/ipxe.efi points into /boot), and the TFTP and HTTP
// servers confine themselves to one directory and refuse links that leave it;
// a staged copy keeps that confinement and still serves what the operator
// pointed at. Files already staged with the same size and time are kept.
func stageBootFiles(src, dst string) (int, error) {
	entries, err := os.ReadDir(src)
	if err != nil {
		return 0, fmt.Errorf("edge: boot files: %w", err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return 0, fmt.Errorf("edge: boot files: %w", err)
	}
	n := 0
	for _, e := range entries {
		from := filepath.Join(src, e.Name())
		st, err := os.Stat(from) // follows links
		if err != nil || !st.Mode().IsRegular() || st.Size() > 64<<20 {
			continue // dangling links, directories, and anything too big to be a loader
		}
		to := filepath.Join(dst, e.Name())
		if old, err := os.Stat(to); err == nil && old.Size() == st.Size() && old.ModTime().Equal(st.ModTime()) {
			n++
			continue
		}
		if err := copyFile(from, to, st); err != nil {
			return n, fmt.Errorf("edge: boot files: %w", err)
		}
		n++
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
