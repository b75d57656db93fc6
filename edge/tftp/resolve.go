package tftp

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// ErrBadPath marks a request name the server refuses before looking at any
// file: traversal, control bytes, an empty or over-long name.
var ErrBadPath = errors.New("tftp: bad path")

// maxPath bounds a request name; RRQ packets are at most 512 bytes anyway,
// but Resolve is also fuzzed and used on other inputs.
const maxPath = 1024

// Resolve turns a TFTP request name into a path relative to the root, or
// refuses it. It is pure: no file system is consulted (os.Root does the
// confinement at open, symlinks included); this only removes the spellings
// firmware uses and rejects names that can only mean an escape.
//
//   - PXE ROMs and Windows-era configs send backslashes: they are separators.
//   - A leading "/" (pxelinux and GRUB send absolute names) means the root.
//   - Any ".." element is refused outright, even one that would stay inside:
//     no boot file needs it and refusing is simpler to reason about.
//   - Control bytes (NUL above all, which C servers truncated at) are refused.
//   - Nothing is URL-decoded: "%2e%2e" is a literal file name in TFTP.
func Resolve(req string) (string, error) {
	if len(req) > maxPath {
		return "", fmt.Errorf("%w: name longer than %d bytes", ErrBadPath, maxPath)
	}
	for i := 0; i < len(req); i++ {
		if c := req[i]; c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("%w: control byte 0x%02x in %q", ErrBadPath, c, req)
		}
	}
	p := strings.ReplaceAll(req, `\`, "/")
	for _, elem := range strings.Split(p, "/") {
		if elem == ".." {
			return "", fmt.Errorf("%w: %q leaves the root", ErrBadPath, req)
		}
	}
	p = path.Clean("/" + p)[1:]
	if p == "" {
		return "", fmt.Errorf("%w: %q names the root directory", ErrBadPath, req)
	}
	return p, nil
}
