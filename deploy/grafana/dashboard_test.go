// Package grafana holds the Grafana dashboard of deploy/grafana; its test
// keeps the dashboard in step with the metrics the code exports.
package grafana

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDashboardSeriesExist: the dashboard is valid JSON, and every
// fleetboot_* series its queries use is declared somewhere in the code (a
// renamed metric would otherwise leave an empty panel nobody notices).
func TestDashboardSeriesExist(t *testing.T) {
	raw, err := os.ReadFile("fleetboot.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("fleetboot.json: %v", err)
	}
	declared := declaredSeries(t)
	series := regexp.MustCompile(`fleetboot_[a-z0-9_]+`)
	n := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, s := range series.FindAllString(tg.Expr, -1) {
				n++
				base := s
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if b, ok := strings.CutSuffix(s, suffix); ok && declared[b] {
						base = b
					}
				}
				if !declared[base] {
					t.Errorf("panel %q queries %s, which no code exports", p.Title, s)
				}
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d series in the dashboard's queries", n)
	}
}

// declaredSeries is every "fleetboot_..." string literal in the module's
// non-test Go files: the tree is walked from go.mod's directory, so the
// test needs no git checkout and no tool.
func declaredSeries(t *testing.T) map[string]bool {
	t.Helper()
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(root)
		if parent == root {
			t.Fatal("no go.mod above the test's directory")
		}
		root = parent
	}
	literal := regexp.MustCompile(`"(fleetboot_[a-z0-9_]+)"`)
	declared := map[string]bool{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "vendor" || d.Name() == "testdata" || d.Name() == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range literal.FindAllSubmatch(src, -1) {
			declared[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(declared) == 0 {
		t.Fatalf("no fleetboot_* series declared under %s", root)
	}
	return declared
}
