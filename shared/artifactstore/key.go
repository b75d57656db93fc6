package artifactstore

import (
	"fmt"
	"strings"
)

// maxKeyLen is S3's limit on object names; the directory backend uses the
// same so a key valid in one backend is valid in the other.
const maxKeyLen = 1024

// checkKey rejects keys that could escape a directory store or that S3 and a
// file system would treat differently: empty, absolute, with empty, "." or
// ".." segments, hidden segments (the directory backend keeps its temporary
// files there), backslashes or control characters. Both backends apply it,
// so a key behaves the same everywhere.
func checkKey(key string) error {
	if key == "" {
		return fmt.Errorf("artifactstore: empty object key")
	}
	if len(key) > maxKeyLen {
		return fmt.Errorf("artifactstore: object key of %d bytes is longer than %d", len(key), maxKeyLen)
	}
	if strings.HasPrefix(key, "/") {
		return fmt.Errorf("artifactstore: object key %q is absolute", key)
	}
	for _, c := range key {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return fmt.Errorf("artifactstore: object key %q contains a control character or backslash", key)
		}
	}
	for _, seg := range strings.Split(key, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("artifactstore: object key %q has an empty path segment", key)
		case seg == "." || seg == "..":
			return fmt.Errorf("artifactstore: object key %q contains %q: path traversal is not allowed", key, seg)
		case strings.HasPrefix(seg, "."):
			return fmt.Errorf("artifactstore: object key %q has a segment starting with '.'", key)
		}
	}
	return nil
}
