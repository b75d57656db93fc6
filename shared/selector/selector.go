// Package selector parses and evaluates the selectors policies and bulk
// commands use to pick machines: comma-separated requirements, all of which
// must hold, over a machine's labels, facts and a few host fields.
//
//	labels.rack=r12,facts.memory_gib>=64,facts.dmi.vendor=QEMU
//	facts.disks[0].size_gib>100,facts.nics>=2,site=lab
//
// A requirement is PATH OP VALUE with OP one of = != >= <= > <, or PATH alone
// (the path exists) or !PATH (it does not). Paths start with "labels." (one
// label key), "facts." (a field of the reported facts, with ".name" for
// object fields and "[N]" for list elements), or are a host field: mac,
// site, image, hostname, state, template, policy. A VALUE runs to the next
// comma; a value holding a comma is written double-quoted, Go style.
//
// = and != compare numbers as numbers when both sides are numbers (64 equals
// 64.0), booleans as true/false, anything else as text. The ordering
// operators compare numbers only; a list compares by its length, so
// facts.nics>=2 means "two NICs or more". A path the machine lacks fails
// every requirement except != and !PATH, as in Kubernetes label selectors.
package selector

import (
	"fmt"
	"strconv"
	"strings"
)

// Op is a requirement's comparison.
type Op string

// The operators, longest first where one is a prefix of another.
const (
	OpEq     Op = "="
	OpNe     Op = "!="
	OpGe     Op = ">="
	OpLe     Op = "<="
	OpGt     Op = ">"
	OpLt     Op = "<"
	OpExists Op = "exists"
	OpAbsent Op = "absent"
)

// MaxLen bounds a selector's text: it is typed by people or stored in a policy.
const MaxLen = 4096

// hostFields are the paths that name a host field rather than a label or fact.
var hostFields = []string{"mac", "site", "image", "hostname", "state", "template", "policy"}

// Requirement is one condition.
type Requirement struct {
	Path  string // as written: labels.rack, facts.disks[0].size_gib
	Op    Op
	Value string

	steps []step // Path parsed
	num   float64
	isNum bool
}

// step is one element of a path: an object field or a list index.
type step struct {
	field string
	index int // -1 for a field
}

// Selector is a parsed selector: all of its requirements must hold. The
// empty selector matches every machine.
type Selector struct {
	Reqs []Requirement
}

// UsesFacts tells whether any requirement reads the facts (a caller may
// then skip reading them).
func (s Selector) UsesFacts() bool {
	for _, r := range s.Reqs {
		if r.steps[0].field == "facts" {
			return true
		}
	}
	return false
}

// String is the selector in its canonical text form, which Parse reads back.
func (s Selector) String() string {
	parts := make([]string, len(s.Reqs))
	for i, r := range s.Reqs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// String is the requirement as Parse reads it.
func (r Requirement) String() string {
	switch r.Op {
	case OpExists:
		return r.Path
	case OpAbsent:
		return "!" + r.Path
	}
	v := r.Value
	if v == "" || strings.ContainsAny(v, ",\"=<>") || strings.TrimSpace(v) != v {
		v = strconv.Quote(v)
	}
	return r.Path + string(r.Op) + v
}

// Parse reads a selector. An error names the requirement at fault.
func Parse(text string) (Selector, error) {
	if len(text) > MaxLen {
		return Selector{}, fmt.Errorf("selector longer than %d bytes", MaxLen)
	}
	var sel Selector
	rest := strings.TrimSpace(text)
	for n := 1; rest != ""; n++ {
		r, tail, err := parseRequirement(rest)
		if err != nil {
			return Selector{}, fmt.Errorf("selector requirement %d: %w", n, err)
		}
		sel.Reqs = append(sel.Reqs, r)
		rest = strings.TrimSpace(tail)
		if rest == "" {
			break
		}
		if rest[0] != ',' {
			return Selector{}, fmt.Errorf("selector requirement %d: unexpected %q after the value (separate requirements with ',')", n, rest)
		}
		rest = strings.TrimSpace(rest[1:])
		if rest == "" {
			return Selector{}, fmt.Errorf("selector ends with ','")
		}
	}
	return sel, nil
}

// MustParse is Parse for selectors known at compile time (tests).
func MustParse(text string) Selector {
	s, err := Parse(text)
	if err != nil {
		panic(err)
	}
	return s
}

// parseRequirement reads one requirement from the front of s and returns
// what follows it.
func parseRequirement(s string) (Requirement, string, error) {
	absent := strings.HasPrefix(s, "!")
	if absent {
		s = strings.TrimSpace(s[1:])
	}
	end := strings.IndexAny(s, "=!<>,")
	if end < 0 {
		end = len(s)
	}
	path := strings.TrimSpace(s[:end])
	s = s[end:]
	steps, err := parsePath(path)
	if err != nil {
		return Requirement{}, "", err
	}
	r := Requirement{Path: path, steps: steps}
	if s == "" || s[0] == ',' {
		r.Op = OpExists
		if absent {
			r.Op = OpAbsent
		}
		return r, s, nil
	}
	if absent {
		return Requirement{}, "", fmt.Errorf("%q: '!' before a path takes no operator (write !%s alone, or %s!=VALUE)", "!"+path, path, path)
	}
	for _, op := range []Op{OpNe, OpGe, OpLe, OpEq, OpGt, OpLt} {
		if strings.HasPrefix(s, string(op)) {
			r.Op = op
			s = s[len(op):]
			break
		}
	}
	if r.Op == "" {
		return Requirement{}, "", fmt.Errorf("%q: unknown operator at %q (want = != >= <= > <)", path, s)
	}
	value, tail, err := parseValue(s)
	if err != nil {
		return Requirement{}, "", fmt.Errorf("%s%s: %w", path, r.Op, err)
	}
	r.Value = value
	r.num, r.isNum = number(value)
	switch r.Op {
	case OpGe, OpLe, OpGt, OpLt:
		if !r.isNum {
			return Requirement{}, "", fmt.Errorf("%s%s%s: %s compares numbers, and %q is not one", path, r.Op, value, r.Op, value)
		}
	}
	return r, tail, nil
}

// parseValue reads a value: double-quoted (Go syntax), or up to the next
// comma with surrounding spaces trimmed.
func parseValue(s string) (value, tail string, err error) {
	t := strings.TrimLeft(s, " \t")
	if strings.HasPrefix(t, `"`) {
		q, err := strconv.QuotedPrefix(t)
		if err != nil {
			return "", "", fmt.Errorf("unterminated or malformed quoted value %s", t)
		}
		v, _ := strconv.Unquote(q)
		return v, t[len(q):], nil
	}
	end := strings.IndexByte(s, ',')
	if end < 0 {
		end = len(s)
	}
	v := strings.TrimSpace(s[:end])
	if strings.ContainsAny(v, "=<>\"") {
		return "", "", fmt.Errorf("value %q holds '=', '<', '>' or '\"': quote it (\"...\") if that is meant", v)
	}
	if v == "" {
		return "", "", fmt.Errorf("empty value (write \"\" for the empty string)")
	}
	return v, s[end:], nil
}

// parsePath checks a path and splits it into steps.
func parsePath(path string) ([]step, error) {
	if path == "" {
		return nil, fmt.Errorf("missing path before the operator")
	}
	head, rest, _ := strings.Cut(path, ".")
	switch head {
	case "labels":
		if !validLabelKey(rest) {
			return nil, fmt.Errorf("%q: a label key is letters, digits, '.', '_', '-' or '/', starting with a letter or digit", path)
		}
		return []step{{field: "labels", index: -1}, {field: rest, index: -1}}, nil
	case "facts":
		if rest == "" {
			return nil, fmt.Errorf("%q: name a fact (facts.memory_gib, facts.dmi.vendor, facts.disks[0].size_gib)", path)
		}
		steps, err := parseFactPath(rest)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", path, err)
		}
		return append([]step{{field: "facts", index: -1}}, steps...), nil
	}
	for _, f := range hostFields {
		if path == f {
			return []step{{field: f, index: -1}}, nil
		}
	}
	return nil, fmt.Errorf("%q: a path starts with labels. or facts., or is one of %s", path, strings.Join(hostFields, ", "))
}

// parseFactPath splits a.b[0].c into steps.
func parseFactPath(p string) ([]step, error) {
	var steps []step
	for _, part := range strings.Split(p, ".") {
		name, idx, hasIdx := strings.Cut(part, "[")
		if !validIdent(name) {
			return nil, fmt.Errorf("field %q: use letters, digits and '_'", name)
		}
		steps = append(steps, step{field: name, index: -1})
		for hasIdx {
			var num string
			var ok bool
			num, idx, ok = strings.Cut(idx, "]")
			if !ok {
				return nil, fmt.Errorf("missing ']' after %q", name)
			}
			i, err := strconv.Atoi(num)
			if err != nil || i < 0 || i > 1<<20 || num != strconv.Itoa(i) {
				return nil, fmt.Errorf("index [%s]: want a number 0 or more", num)
			}
			steps = append(steps, step{index: i})
			switch {
			case idx == "":
				hasIdx = false
			case idx[0] == '[':
				idx = idx[1:]
			default:
				return nil, fmt.Errorf("unexpected %q after ']'", idx)
			}
		}
	}
	return steps, nil
}

func validIdent(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// validLabelKey mirrors proto.ValidLabel's key rule (this package imports
// nothing of ours, so both stay small and are tested against each other).
func validLabelKey(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-' && c != '/') {
			return false
		}
	}
	return true
}

func number(s string) (float64, bool) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false
	}
	return f, true
}
