package selector

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Subject is a machine as selectors see it. Facts is the reported facts
// decoded by DecodeFacts (nil when none were reported); Fields holds the
// host fields (mac, site, image, …), an empty value counting as absent.
type Subject struct {
	Labels map[string]string
	Facts  any
	Fields map[string]string
}

// DecodeFacts decodes reported facts (any JSON object) once, for many
// selectors to read.
func DecodeFacts(raw []byte) (any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("selector: facts: %w", err)
	}
	return v, nil
}

// Match tells whether every requirement holds for m.
func (s Selector) Match(m Subject) bool {
	for i := range s.Reqs {
		if !s.Reqs[i].holds(m) {
			return false
		}
	}
	return true
}

// Explain is Match with the reason: on a mismatch, the first requirement
// that fails and what the machine has instead.
func (s Selector) Explain(m Subject) (bool, string) {
	for i := range s.Reqs {
		if r := &s.Reqs[i]; !r.holds(m) {
			return false, r.why(m)
		}
	}
	return true, "every requirement holds"
}

// why says what m has instead of what r wants.
func (r *Requirement) why(m Subject) string {
	v, found := lookup(r.steps, m)
	switch {
	case r.Op == OpExists:
		return r.Path + " is absent"
	case r.Op == OpAbsent:
		return fmt.Sprintf("!%s: is %s", r.Path, show(v))
	case !found:
		return r.String() + ": " + r.Path + " is absent"
	}
	return fmt.Sprintf("%s: is %s", r.String(), show(v))
}

// holds tells whether r holds for m (without saying why: policies are
// evaluated for thousands of machines, and only explain asks why).
func (r *Requirement) holds(m Subject) bool {
	v, found := lookup(r.steps, m)
	switch r.Op {
	case OpExists:
		return found
	case OpAbsent:
		return !found
	}
	if !found {
		return r.Op == OpNe
	}
	var ok bool
	switch r.Op {
	case OpEq:
		ok = r.equal(v)
	case OpNe:
		ok = !r.equal(v)
	default:
		n, isNum := numeric(v)
		if isNum {
			switch r.Op {
			case OpGe:
				ok = n >= r.num
			case OpLe:
				ok = n <= r.num
			case OpGt:
				ok = n > r.num
			case OpLt:
				ok = n < r.num
			}
		}
	}
	return ok
}

// equal compares v with the requirement's value: numbers as numbers,
// booleans as booleans, lists by length, anything else as text.
func (r *Requirement) equal(v any) bool {
	if r.isNum {
		if n, ok := numeric(v); ok {
			return n == r.num
		}
	}
	switch x := v.(type) {
	case string:
		return x == r.Value
	case bool:
		b, err := strconv.ParseBool(r.Value)
		return err == nil && b == x
	}
	return false
}

// numeric is v as a number: a JSON number, a numeric string, or a list's
// length.
func numeric(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case string:
		return number(x)
	case []any:
		return float64(len(x)), true
	}
	return 0, false
}

// show renders a value for an explanation.
func show(v any) string {
	switch x := v.(type) {
	case nil:
		return "absent"
	case string:
		return strconv.Quote(x)
	case []any:
		return fmt.Sprintf("a list of %d", len(x))
	case map[string]any:
		return "an object"
	}
	return fmt.Sprint(v)
}

// lookup follows a parsed path through m.
func lookup(steps []step, m Subject) (any, bool) {
	switch steps[0].field {
	case "labels":
		v, ok := m.Labels[steps[1].field]
		return v, ok
	case "facts":
		cur := m.Facts
		for _, st := range steps[1:] {
			switch c := cur.(type) {
			case map[string]any:
				if st.index >= 0 {
					return nil, false
				}
				v, ok := c[st.field]
				if !ok {
					return nil, false
				}
				cur = v
			case []any:
				if st.index < 0 || st.index >= len(c) {
					return nil, false
				}
				cur = c[st.index]
			default:
				return nil, false
			}
		}
		return cur, cur != nil
	}
	v := m.Fields[steps[0].field]
	return v, v != ""
}
