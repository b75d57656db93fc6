package cli

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

func TestParseImportCSV(t *testing.T) {
	data := "MAC, site,image,ip,hostname,labels,vars\n" +
		"# a comment line\n" +
		"52:54:00:00:00:01,lab,deb,10.0.0.21,web1,rack=r12;role=web,disk=vda\n" +
		"\n" +
		"52:54:00:00:00:02,lab,,,,,\n" +
		"52:54:00:00:00:03,lab\n" +
		"52:54:00:00:00:04,lab,,,,rack,\n" +
		"\"52:54:00:00:00:05,lab,,,,,\n"
	rows, bad, err := parseImportCSV([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	wantRows := []proto.ImportRow{
		{Line: 3, MAC: "52:54:00:00:00:01", Site: "lab", Image: "deb", IP: "10.0.0.21", Hostname: "web1",
			Labels: map[string]string{"rack": "r12", "role": "web"}, Vars: map[string]string{"disk": "vda"}},
		{Line: 5, MAC: "52:54:00:00:00:02", Site: "lab"},
	}
	if diff := cmp.Diff(wantRows, rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	wantBad := []proto.ImportProblem{
		{Line: 6, Reason: "2 fields, the header names 7"},
		{Line: 7, MAC: "52:54:00:00:00:04", Reason: `labels: "rack": want KEY=VALUE`},
		{Line: 8, Reason: `extraneous or missing " in quoted-field`},
	}
	if diff := cmp.Diff(wantBad, bad); diff != "" {
		t.Errorf("bad lines (-want +got):\n%s", diff)
	}
	for _, tc := range []struct{ data, want string }{
		{"", "no header line"},
		{"mac,color\n", `line 1: unknown column "color"`},
		{"site,image\n", "line 1: no mac column"},
		{"mac,mac\n", `line 1: column "mac" twice`},
	} {
		if _, _, err := parseImportCSV([]byte(tc.data)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseImportCSV(%q) = %v, want %q", tc.data, err, tc.want)
		}
	}
}

func TestParseImportYAML(t *testing.T) {
	data := `hosts:
  - mac: "52:54:00:00:00:01"
    site: lab
    labels: {rack: r12}
    vars: {disk: vda}
  - {mac: "52:54:00:00:00:02", ip: 10.0.0.22}
  - {mac: "52:54:00:00:00:03", colour: red}
  - just a string
  - {mac: "52:54:00:00:00:04", labels: [a, b]}
`
	rows, bad, err := parseImportYAML([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	wantRows := []proto.ImportRow{
		{Line: 2, MAC: "52:54:00:00:00:01", Site: "lab", Labels: map[string]string{"rack": "r12"}, Vars: map[string]string{"disk": "vda"}},
		{Line: 6, MAC: "52:54:00:00:00:02", IP: "10.0.0.22"},
	}
	if diff := cmp.Diff(wantRows, rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	if len(bad) != 3 || bad[0].Line != 7 || !strings.Contains(bad[0].Reason, "unknown field(s) colour") || bad[1].Line != 8 || bad[2].Line != 9 {
		t.Errorf("bad lines: %+v", bad)
	}
	if _, _, err := parseImportYAML([]byte("a: b\n")); err == nil || !strings.Contains(err.Error(), "want a list of hosts") {
		t.Errorf("a map without hosts: %v", err)
	}
}

func FuzzParseImportCSV(f *testing.F) {
	f.Add([]byte("mac,site,labels\n52:54:00:00:00:01,lab,rack=r1;a=b\n"))
	f.Add([]byte("mac\n\"x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, bad, err := parseImportCSV(data)
		if err != nil {
			return
		}
		// Every line is accounted for once: a row or a problem, never both.
		seen := map[int]bool{}
		for _, r := range rows {
			if r.Line < 2 || seen[r.Line] {
				t.Fatalf("row line %d (seen %v)", r.Line, seen[r.Line])
			}
			seen[r.Line] = true
		}
		for _, p := range bad {
			if p.Line < 1 || p.Reason == "" {
				t.Fatalf("problem %+v", p)
			}
		}
	})
}
