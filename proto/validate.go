package proto

import (
	"fmt"
	"strings"
)

// The validators below guard every value that ends up in a boot script (iPXE or
// GRUB) or a kernel command line. The coordinator calls them to reject bad input
// at the door; the edge calls them again before rendering, because a snapshot or
// a foreign writer may hold values the coordinator never saw. They are pure
// functions so both sides share one definition of "safe".

// MaxVarValue bounds one host variable; the whole x86 kernel command line is
// 2048 bytes, so a longer single token is never legitimate.
const MaxVarValue = 1024

// forbiddenSeq are byte sequences iPXE or GRUB give a meaning to inside a
// script line: settings expansion, command chaining, comments, quoting and
// escapes. A value holding one could turn data into commands.
var forbiddenSeq = []string{"${", "&&", "||", "#", "\"", "'", "\\", "`", ";"}

// ValidCmdlineToken checks one kernel command-line token (a host variable
// value, or one word of an image's command line): printable ASCII without
// spaces and without any sequence iPXE or GRUB would interpret.
func ValidCmdlineToken(s string) error {
	if len(s) > MaxVarValue {
		return fmt.Errorf("value too long (%d bytes, at most %d)", len(s), MaxVarValue)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ':
			return fmt.Errorf("value %q contains a space: a value is one kernel command-line token", s)
		case c < 0x21 || c > 0x7e:
			// Control characters (newline above all) and non-ASCII bytes,
			// which include Unicode controls such as U+202E.
			return fmt.Errorf("value %q contains a control or non-ASCII character at byte %d", s, i)
		}
	}
	for _, seq := range forbiddenSeq {
		if strings.Contains(s, seq) {
			return fmt.Errorf("value %q contains %q, which boot scripts interpret", s, seq)
		}
	}
	return nil
}

// ValidVar checks a host variable: the name is what a template says after
// "var." ({{var.NAME}}), the value one kernel command-line token.
func ValidVar(name, value string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("invalid variable name %q: 1 to 64 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || i > 0 && (c >= '0' && c <= '9' || c == '-')
		if !ok {
			return fmt.Errorf("invalid variable name %q: use letters, digits, '_' or '-', starting with a letter or '_'", name)
		}
	}
	if err := ValidCmdlineToken(value); err != nil {
		return fmt.Errorf("variable %s: %w", name, err)
	}
	return nil
}

// ValidHostname checks a host name as RFC 1123 allows it: dot-separated labels
// of letters, digits and '-', each 1 to 63 long, not starting or ending with
// '-', 253 characters in all. An empty name is valid (no hostname set).
func ValidHostname(h string) error {
	if h == "" {
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("invalid hostname %q: longer than 253 characters", h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("invalid hostname %q: each dot-separated label must be 1 to 63 characters", h)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("invalid hostname %q: a label cannot start or end with '-'", h)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("invalid hostname %q: use letters, digits, '-' and '.'", h)
			}
		}
	}
	return nil
}

// ValidFileName checks an artifact's file name as a booting machine sees it
// (vmlinuz, initrd.img, live.iso): one path segment of letters, digits, '.',
// '_', '-' and '+', not starting with '.', at most 128 characters. It appears
// in URLs, in iPXE image names and in "initrd=" on the kernel command line.
func ValidFileName(s string) error {
	if s == "" || len(s) > 128 || s[0] == '.' {
		return fmt.Errorf("invalid file name %q: 1 to 128 characters, not starting with '.'", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '+') {
			return fmt.Errorf("invalid file name %q: use letters, digits, '.', '_', '-' or '+'", s)
		}
	}
	return nil
}

// ValidLabel checks a host label. Keys are what selectors name after
// "labels." (letters, digits, '.', '_', '-', '/', starting with a letter or
// digit); values are one word of letters, digits, '.', '_' and '-', so a
// label is safe in a selector, a template and a kernel command line alike.
func ValidLabel(key, value string) error {
	if key == "" || len(key) > 63 {
		return fmt.Errorf("invalid label key %q: 1 to 63 characters", key)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-' && c != '/') {
			return fmt.Errorf("invalid label key %q: use letters, digits, '.', '_', '-' or '/', starting with a letter or digit", key)
		}
	}
	if value == "" || len(value) > 63 {
		return fmt.Errorf("invalid value %q of label %s: 1 to 63 characters", value, key)
	}
	for i := 0; i < len(value); i++ {
		c := value[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("invalid value %q of label %s: use letters, digits, '.', '_' or '-'", value, key)
		}
	}
	return nil
}

// ParseLabels reads labels written KEY=VALUE, several to a word separated by
// commas (as the CLI's arguments give them; the panel splits its field at
// white space first), each checked by ValidLabel. No label at all is nil.
func ParseLabels(words ...string) (map[string]string, error) {
	labels := map[string]string{}
	for _, w := range words {
		for _, kv := range strings.FieldsFunc(w, func(c rune) bool { return c == ',' }) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("invalid label %q: want KEY=VALUE", kv)
			}
			if err := ValidLabel(k, v); err != nil {
				return nil, err
			}
			labels[k] = v
		}
	}
	if len(labels) == 0 {
		return nil, nil
	}
	return labels, nil
}
