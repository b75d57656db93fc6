// Package grafana holds the Grafana dashboard of deploy/grafana; its test
// keeps the dashboard in step with the metrics the code exports.
package grafana

import (
	"encoding/json"
	"os"
	"os/exec"
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
	out, err := exec.Command("git", "grep", "-h", "-o", "-E", `"fleetboot_[a-z0-9_]+"`, "--", "*.go", ":!*_test.go").Output()
	if err != nil {
		t.Skipf("git grep (needs a git checkout): %v", err)
	}
	declared := map[string]bool{}
	for _, name := range strings.Fields(string(out)) {
		declared[strings.Trim(name, `"`)] = true
	}
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
