// Package installtmpl parses and renders install templates (cloud-init,
// kickstart, preseed, ignition, script): Go text/template over one host's
// data. The coordinator parses a template when it is added, so one that
// does not parse is refused with its line; the edge renders it per host.
// Both use this package, so they agree on the functions a template may call.
package installtmpl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/template"
)

// Kinds of template, as `template add --kind` takes them.
var Kinds = []string{"cloud-init", "kickstart", "preseed", "ignition", "script"}

// MaxSize bounds a template's text (and so a KV value).
const MaxSize = 256 << 10

// Data is what a template sees: {{.Host.Hostname}}, {{.Labels.rack}},
// {{.Facts.memory_gib}}, {{.Vars.role}}, {{.DoneURL}}, ...
type Data struct {
	MAC         string            // canonical, colon form
	Hostname    string            // may be empty
	IP          string            // the reservation, may be empty
	Site        string            //
	Image       string            //
	Labels      map[string]string // never nil
	Vars        map[string]string // never nil
	Facts       map[string]any    // the last reported facts; never nil
	DoneURL     string            // the "install done" callback, with this boot's token
	TemplateURL string            // where this template is served for this host
	EdgeURL     string            // the edge's base URL
}

// funcs are the functions a template may call. quote and json make any
// value (facts come from the machine itself) safe inside YAML or JSON.
func funcs() template.FuncMap {
	return template.FuncMap{
		"quote": strconv.Quote,
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		"default": func(def string, v any) string {
			if s := fmt.Sprint(v); v != nil && s != "" {
				return s
			}
			return def
		},
		"lower": strings.ToLower,
		"upper": strings.ToUpper,
	}
}

// Parse checks a template of a kind; the error names the line at fault.
func Parse(name, kind, text string) (*template.Template, error) {
	if !slices.Contains(Kinds, kind) {
		return nil, fmt.Errorf("unknown template kind %q: want one of %s", kind, strings.Join(Kinds, ", "))
	}
	if len(text) > MaxSize {
		return nil, fmt.Errorf("template %s is larger than %d KiB", name, MaxSize>>10)
	}
	t, err := template.New(name).Funcs(funcs()).Option("missingkey=zero").Parse(text)
	if err != nil {
		// text/template says "template: NAME:LINE: reason".
		return nil, fmt.Errorf("template %s does not parse: %s", name, strings.TrimPrefix(err.Error(), "template: "))
	}
	return t, nil
}

// Render renders a parsed template for one host.
func Render(t *template.Template, d Data) ([]byte, error) {
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	if d.Vars == nil {
		d.Vars = map[string]string{}
	}
	if d.Facts == nil {
		d.Facts = map[string]any{}
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return nil, fmt.Errorf("render %s: %w", t.Name(), err)
	}
	return b.Bytes(), nil
}
