package proto

import (
	"fmt"
	"strconv"
	"strings"
)

// Image revisions. An image name points at its current revision: the
// images bucket's key NAME holds that revision's Image (with Revision set),
// which is all an edge of an older version reads. Every revision ever added
// is kept, immutable, in the same bucket under ImageRevisionKey(NAME, N):
// "rev=NAME.N" cannot be an image name ('=' is not allowed in one), and the
// edges' permissions already cover the whole bucket. A host or site follows
// NAME, or pins a revision as ImageRef(NAME, N) ("NAME@N").
//
// An Image written before revisions existed has Revision 0; it counts as
// revision 1, and the next `image add` records it as such.

// imageRevisionPrefix starts every revision key.
const imageRevisionPrefix = "rev="

// ImageRevisionKey is the images bucket key of revision rev of image name.
func ImageRevisionKey(name string, rev int) string {
	return imageRevisionPrefix + name + "." + strconv.Itoa(rev)
}

// ImageRevisionFilter is the KV filter matching every revision key of name
// (one token after the name: a name holding '.' cannot match another's).
func ImageRevisionFilter(name string) string { return imageRevisionPrefix + name + ".*" }

// ParseImageRevisionKey splits a revision key; ok is false for any other key.
func ParseImageRevisionKey(key string) (name string, rev int, ok bool) {
	rest, found := strings.CutPrefix(key, imageRevisionPrefix)
	if !found {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '.')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(rest[i+1:])
	if err != nil || n < 1 || ValidName("image", rest[:i]) != nil {
		return "", 0, false
	}
	return rest[:i], n, true
}

// IsImageRevisionKey tells a revision key from an image name key.
func IsImageRevisionKey(key string) bool { return strings.HasPrefix(key, imageRevisionPrefix) }

// ImageRef is how a host names a pinned revision: NAME@N. Revision 0 is
// the name alone (follow the current revision).
func ImageRef(name string, rev int) string {
	if rev == 0 {
		return name
	}
	return name + "@" + strconv.Itoa(rev)
}

// ParseImageRef splits NAME or NAME@N (rev 0: follow NAME's current revision).
func ParseImageRef(ref string) (name string, rev int, err error) {
	name, r, pinned := strings.Cut(ref, "@")
	if err := ValidName("image", name); err != nil {
		return "", 0, err
	}
	if !pinned {
		return name, 0, nil
	}
	n, err := strconv.Atoi(r)
	if err != nil || n < 1 || strconv.Itoa(n) != r {
		return "", 0, fmt.Errorf("invalid image revision %q: want NAME@N with N a revision number (see image history)", ref)
	}
	return name, n, nil
}

// ValidImageRef checks NAME or NAME@N.
func ValidImageRef(ref string) error {
	_, _, err := ParseImageRef(ref)
	return err
}

// CurrentRevision is the revision number of an image record: Revision,
// or 1 for a record written before revisions existed.
func (im Image) CurrentRevision() int {
	if im.Revision == 0 {
		return 1
	}
	return im.Revision
}

// ImageHistory answers `image history NAME`: every revision, oldest first.
type ImageHistory struct {
	V         int     `json:"v"`
	Name      string  `json:"name"`
	Current   int     `json:"current"`
	Revisions []Image `json:"revisions"`
}
