package installtmpl

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, kind, text, want string
	}{
		{"ok", "cloud-init", "#cloud-config\nhostname: {{.Hostname}}\n", ""},
		{"funcs", "script", "echo {{quote .Hostname}} {{json .Labels}} {{default \"x\" .Vars.y}} {{lower .MAC}} {{upper .Site}}\n", ""},
		{"unclosed", "kickstart", "text\n{{if .Hostname}}\nx\n", "template unclosed does not parse: unclosed:4: unexpected EOF"},
		{"bad action", "preseed", "a\nb {{.Hostname\n", "template bad action does not parse: bad action:3: unclosed action started at bad action:2"},
		{"unknown function", "ignition", "{{exec \"rm\"}}", `function "exec" not defined`},
		{"kind", "yaml", "x", `unknown template kind "yaml"`},
		{"size", "script", strings.Repeat("x", MaxSize+1), "larger than"},
	} {
		_, err := Parse(tc.name, tc.kind, tc.text)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Parse = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestRender(t *testing.T) {
	tm, err := Parse("t", "script", `{{.Hostname}} {{.Labels.rack}}|{{.Vars.missing}}|{{quote .Facts.vendor}}|{{index .Facts.disks 0}}`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Render(tm, Data{Hostname: "h1", Facts: map[string]any{"vendor": "a\"\nb", "disks": []any{"vda"}}})
	if err != nil {
		t.Fatal(err)
	}
	// A missing label or var is empty; a hostile fact is quoted on one line.
	if want := `h1 ||"a\"\nb"|vda`; string(got) != want {
		t.Errorf("Render = %q, want %q", got, want)
	}
}
