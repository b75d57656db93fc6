package atomicfile

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestOneCopy guards the rule this package exists for: production code
// replaces files only through here, and tests poll only through
// test/waitfor. Six hand-written temp+fsync+rename copies (one of them,
// the auth registry, without the fsync) and seven polling loops once lived
// side by side and drifted apart.
func TestOneCopy(t *testing.T) {
	root := filepath.Join("..", "..")
	rename := regexp.MustCompile(`\bos\.Rename\(`)
	pollLoop := regexp.MustCompile(`(?s)func \w+\(t (?:testing\.TB|\*testing\.T)[^)]*\) [^{]*\{[^}]*deadline := time\.Now\(\)\.Add`)
	// The cache renames a download into place only after its digest was
	// checked while it streamed to clients: a different protocol (the file
	// grows while readers follow it), not a replace-this-file write.
	allowRename := map[string]bool{
		"shared/atomicfile/atomicfile.go": true,
		"edge/cache/fetch.go":             true,
		// The lease database moves its append-only journal aside for a
		// compaction (the next journal's directory fsync makes the move
		// durable): nothing is replaced, the snapshot itself goes through
		// WriteFile.
		"edge/dhcp/leasefile.go": true,
		// Test fixture caches rename a whole staged directory (or a
		// downloaded .deb) into place, so concurrent tests see all or
		// nothing of it.
		"test/e2e/assets.go":          true,
		"test/e2e/liveos.go":          true,
		"test/e2e/discovery.go":       true,
		"test/grubcheck/grubcheck.go": true,
	}
	var bad []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		switch {
		case strings.HasSuffix(rel, "_test.go"):
			if pollLoop.Match(b) {
				bad = append(bad, rel+": a polling helper of its own (use test/waitfor)")
			}
		case !allowRename[rel] && rename.Match(b):
			bad = append(bad, rel+": os.Rename outside shared/atomicfile (use atomicfile.Write)")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bad {
		t.Error(b)
	}
}
