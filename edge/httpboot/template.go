package httpboot

import (
	"errors"
	"fmt"
	"strings"
)

// ErrTemplate marks a command line that cannot be expanded: an unknown
// variable, an unterminated placeholder, or a value that is not safe.
var ErrTemplate = errors.New("httpboot: template")

// expand replaces {{name}} placeholders in tmpl with lookup(name). It is
// deliberately tiny and strict: no spaces inside the braces, no filters, no
// defaults. An unknown name, an unterminated "{{" or a stray "}}" is an error
// at render time, so a typo in an image's command line shows up as a clear
// decision instead of a kernel silently booting with "hostname={{hostnme}}".
func expand(tmpl string, lookup func(name string) (string, bool)) (string, error) {
	var b strings.Builder
	rest := tmpl
	for {
		open := strings.Index(rest, "{{")
		closing := strings.Index(rest, "}}")
		if open < 0 {
			if closing >= 0 {
				return "", fmt.Errorf("%w: stray \"}}\" in %q", ErrTemplate, tmpl)
			}
			b.WriteString(rest)
			return b.String(), nil
		}
		if closing >= 0 && closing < open {
			return "", fmt.Errorf("%w: stray \"}}\" in %q", ErrTemplate, tmpl)
		}
		b.WriteString(rest[:open])
		rest = rest[open+2:]
		end := strings.Index(rest, "}}")
		if end < 0 {
			return "", fmt.Errorf("%w: unterminated \"{{\" in %q", ErrTemplate, tmpl)
		}
		name := rest[:end]
		val, ok := lookup(name)
		if !ok {
			return "", fmt.Errorf("%w: unknown variable {{%s}}", ErrTemplate, name)
		}
		b.WriteString(val)
		rest = rest[end+2:]
	}
}
