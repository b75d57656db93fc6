package selector

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const qemuFacts = `{"v":1,"boot_mac":"52:54:00:aa:00:01","firmware":"bios","secure_boot":false,
 "cpus":2,"memory_gib":64,"dmi":{"vendor":"QEMU","product":"Standard PC (i440FX + PIIX, 1996)"},
 "nics":[{"name":"ens3","mac":"52:54:00:aa:00:01","link":true},{"name":"ens4","mac":"52:54:00:aa:00:02","link":false}],
 "disks":[{"name":"vda","size_gib":120.5,"model":"","rotational":true}]}`

func subject(t *testing.T) Subject {
	t.Helper()
	f, err := DecodeFacts([]byte(qemuFacts))
	if err != nil {
		t.Fatal(err)
	}
	return Subject{
		Labels: map[string]string{"rack": "r12", "role": "web"},
		Facts:  f,
		Fields: map[string]string{"mac": "52:54:00:aa:00:01", "site": "lab", "image": ""},
	}
}

func TestMatch(t *testing.T) {
	m := subject(t)
	for _, tc := range []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"labels.rack=r12", true},
		{"labels.rack=r13", false},
		{"labels.rack!=r13", true},
		{"labels.missing!=x", true},
		{"labels.missing=x", false},
		{"labels.rack", true},
		{"!labels.rack", false},
		{"!labels.missing", true},
		{"labels.rack=r12,facts.memory_gib>=64", true},
		{"labels.rack=r12,facts.memory_gib>64", false},
		{"facts.memory_gib=64.0", true},
		{"facts.memory_gib<=64", true},
		{"facts.memory_gib<64", false},
		{"facts.cpus>1", true},
		{"facts.dmi.vendor=QEMU", true},
		{"facts.dmi.vendor = QEMU ", true},
		{`facts.dmi.product="Standard PC (i440FX + PIIX, 1996)"`, true},
		{"facts.dmi.vendor=Dell", false},
		{"facts.disks[0].size_gib>100", true},
		{"facts.disks[0].size_gib>=120.5", true},
		{"facts.disks[1].size_gib>0", false},
		{"facts.disks[0].name=vda", true},
		{"facts.nics>=2", true},
		{"facts.nics=2", true},
		{"facts.nics>2", false},
		{"facts.nics[1].link=false", true},
		{"facts.nics[0].link=true", true},
		{"facts.secure_boot=false", true},
		{"facts.firmware=uefi", false},
		{"facts.dmi>1", false},     // an object is no number
		{"facts.cpus.x=1", false},  // a number has no fields
		{"facts.disks.x=1", false}, // a list has no fields
		{"site=lab", true},
		{"site=dc", false},
		{"image", false}, // empty field: absent
		{"!image", true},
		{"mac=52:54:00:aa:00:01", true},
	} {
		t.Run(tc.sel, func(t *testing.T) {
			s, err := Parse(tc.sel)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Match(m); got != tc.want {
				_, why := s.Explain(m)
				t.Errorf("Match = %v, want %v (%s)", got, tc.want, why)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ sel, want string }{
		{"rack=r12", `a path starts with labels. or facts.`},
		{"labels.=x", "a label key is"},
		{"facts=1", "name a fact"},
		{"facts.memory_gib>=lots", `>= compares numbers, and "lots" is not one`},
		{"facts.memory_gib~64", `field "memory_gib~64"`},
		{"labels.rack!r12", "unknown operator"},
		{"labels.rack=", "empty value"},
		{"labels.rack=r12,", "ends with ','"},
		{"labels.rack=r12 labels.role=web", `holds '='`},
		{"facts.disks[x].size_gib>1", "index [x]"},
		{"facts.disks[0.size_gib>1", "missing ']'"},
		{"facts.disks[-1].size_gib>1", "index [-1]"},
		{"facts.disks[0]x>1", `unexpected "x"`},
		{`labels.rack="r12`, "unterminated"},
		{`labels.rack="r12"x`, "unexpected"},
		{"!labels.rack=r12", "takes no operator"},
		{"=x", "missing path"},
		{"facts.dmi-vendor=x", "field"},
		{strings.Repeat("a", MaxLen+1), "longer than"},
	} {
		t.Run(tc.sel, func(t *testing.T) {
			_, err := Parse(tc.sel)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse(%q) = %v, want an error containing %q", tc.sel, err, tc.want)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	m := subject(t)
	for _, tc := range []struct{ sel, want string }{
		{"labels.rack=r12,facts.memory_gib>=128", "facts.memory_gib>=128: is 64"},
		{"labels.rack=r13", `labels.rack=r13: is "r12"`},
		{"labels.zone=a", "labels.zone=a: labels.zone is absent"},
		{"facts.nics>3", "facts.nics>3: is a list of 2"},
		{"!labels.role", `!labels.role: is "web"`},
	} {
		ok, why := MustParse(tc.sel).Explain(m)
		if ok || why != tc.want {
			t.Errorf("Explain(%q) = %v %q, want false %q", tc.sel, ok, why, tc.want)
		}
	}
}

// TestStringRoundTrip: the canonical form parses back to the same selector.
func TestStringRoundTrip(t *testing.T) {
	for _, sel := range []string{
		"labels.rack=r12,facts.memory_gib>=64",
		`facts.dmi.product="a, b",labels.x!=y`,
		"!labels.gone,labels.here,facts.disks[2][0].x<3",
		`labels.a=" spaced "`,
	} {
		s := MustParse(sel)
		back, err := Parse(s.String())
		if err != nil {
			t.Fatalf("%q -> %q: %v", sel, s.String(), err)
		}
		if diff := cmp.Diff(s.String(), back.String()); diff != "" {
			t.Errorf("%q: %s", sel, diff)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"labels.rack=r12,facts.memory_gib>=64", `facts.dmi.vendor="Dell, Inc."`, "facts.disks[0].size_gib>1",
		"!labels.x", "site=lab,image", "facts.a[1][2].b<=-1e3", "labels.k!=v",
	} {
		f.Add(s)
	}
	m := Subject{Labels: map[string]string{"rack": "r12"}, Fields: map[string]string{"site": "lab"}}
	facts, _ := DecodeFacts([]byte(qemuFacts))
	m.Facts = facts
	f.Fuzz(func(t *testing.T, text string) {
		s, err := Parse(text)
		if err != nil {
			return
		}
		// Whatever parses has a canonical form that parses to itself, and
		// evaluates without panicking.
		canon := s.String()
		back, err := Parse(canon)
		if err != nil {
			t.Fatalf("%q: canonical form %q does not parse: %v", text, canon, err)
		}
		if back.String() != canon {
			t.Fatalf("%q: canonical form %q reads back as %q", text, canon, back.String())
		}
		if a, b := s.Match(m), back.Match(m); a != b {
			t.Fatalf("%q and its canonical form %q disagree: %v vs %v", text, canon, a, b)
		}
		s.Explain(m)
	})
}
