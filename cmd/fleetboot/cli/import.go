package cli

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/fleetboot/fleetboot/proto"
)

// importColumns are the columns of an import file, in the order a CSV
// header usually has them; labels and vars hold KEY=VALUE pairs separated
// by ';' or spaces.
var importColumns = []string{"mac", "site", "image", "ip", "hostname", "labels", "vars"}

// importChunkRows and importChunkBytes bound one host.import request:
// well under NATS's default 1 MiB message size, and small enough that the
// coordinator answers each well within its per-request time even on a
// loaded machine.
const (
	importChunkRows  = 1000
	importChunkBytes = 512 << 10
)

func (a *app) hostImportCmd() *cobra.Command {
	var format string
	var skipInvalid, quiet bool
	cmd := &cobra.Command{
		Use:   "import FILE [--skip-invalid]",
		Short: "Create or update many hosts from a CSV or YAML file",
		Long: `Create or update hosts from a file, one host per line (CSV) or list item (YAML),
with the columns mac, site, image, ip, hostname, labels, vars. mac is required;
site may be left out when there is one site; an empty field keeps an existing
host's value; labels and vars (KEY=VALUE, separated by ';' or spaces in CSV, a
map in YAML) are added to a host's own.

Every line is checked first. By default an import with any bad line changes
nothing and lists every bad line with its number and why; --skip-invalid
imports the good lines and lists the bad ones. The summary says how many hosts
were created, changed, left unchanged and refused.

CSV: a header line names the columns (any order, any subset with mac):
  mac,site,image,ip,hostname,labels
  52:54:00:00:00:01,lab,debian12,10.0.0.21,web1,rack=r12;role=web
YAML: a list of hosts:
  - {mac: "52:54:00:00:00:01", site: lab, image: debian12, labels: {rack: r12}}`,
		Example: `  fleetboot host import rack12.csv
  fleetboot host import rack12.yaml --skip-invalid`,
		Args: exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("host import: %w", err)
			}
			if format == "" {
				format = strings.TrimPrefix(strings.ToLower(filepath.Ext(args[0])), ".")
			}
			var rows []proto.ImportRow
			var bad []proto.ImportProblem
			switch format {
			case "csv":
				rows, bad, err = parseImportCSV(data)
			case "yaml", "yml":
				rows, bad, err = parseImportYAML(data)
			default:
				return fmt.Errorf("host import: cannot tell the format of %s: name it .csv or .yaml, or give --format csv|yaml", args[0])
			}
			if err != nil {
				return fmt.Errorf("host import: %s: %w", args[0], err)
			}
			total := len(rows) + len(bad)
			if total == 0 {
				return fmt.Errorf("host import: %s holds no hosts", args[0])
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			progress := a.importProgress("checked", len(rows), quiet)
			var sum proto.HostImportReply
			// Lines the check found equal to their stored host are not
			// sent again: re-importing an unchanged file only reads.
			same := map[int]bool{}
			for _, chunk := range importChunks(rows) {
				var rep proto.HostImportReply
				if err := c.call(cmd.Context(), proto.APIHostImport, proto.HostImportRequest{V: proto.Version, Check: true, Rows: chunk}, &rep); err != nil {
					return err
				}
				bad = append(bad, rep.Refused...)
				for _, l := range rep.UnchangedLines {
					same[l] = true
				}
				progress(len(chunk))
			}
			slices.SortFunc(bad, func(x, y proto.ImportProblem) int { return x.Line - y.Line })
			a.printProblems(bad)
			if len(bad) > 0 && !skipInvalid {
				return fmt.Errorf("nothing imported: %d of %d lines are bad (listed above; --skip-invalid imports the others)", len(bad), total)
			}
			refused := map[int]bool{}
			for _, p := range bad {
				refused[p.Line] = true
			}
			good := slices.DeleteFunc(rows, func(r proto.ImportRow) bool { return refused[r.Line] })
			sum.Unchanged = len(good)
			good = slices.DeleteFunc(good, func(r proto.ImportRow) bool { return same[r.Line] })
			sum.Unchanged -= len(good)
			progress = a.importProgress("imported", len(good), quiet)
			var late []proto.ImportProblem
			for _, chunk := range importChunks(good) {
				var rep proto.HostImportReply
				if err := c.call(cmd.Context(), proto.APIHostImport, proto.HostImportRequest{V: proto.Version, Rows: chunk}, &rep); err != nil {
					return fmt.Errorf("%w (hosts of the chunks before were imported; running the import again finishes it)", err)
				}
				sum.Created += rep.Created
				sum.Changed += rep.Changed
				sum.Unchanged += rep.Unchanged
				late = append(late, rep.Refused...)
				progress(len(chunk))
			}
			a.printProblems(late)
			fmt.Fprintf(a.stdout, "created %d, changed %d, unchanged %d, refused %d\n", sum.Created, sum.Changed, sum.Unchanged, len(bad)+len(late))
			if len(late) > 0 {
				return fmt.Errorf("%d line(s) changed concurrently and were refused (listed above); run the import again", len(late))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "csv or yaml (default: from the file name)")
	cmd.Flags().BoolVar(&skipInvalid, "skip-invalid", false, "import the good lines and list the bad ones (default: change nothing when any line is bad)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress lines on stderr")
	return cmd
}

// importProgress returns a function to call with each chunk's row count; it
// prints a line on stderr at every tenth of total.
func (a *app) importProgress(what string, total int, quiet bool) func(int) {
	done, shown := 0, 0
	return func(n int) {
		done += n
		if quiet || total == 0 {
			return
		}
		if tenth := done * 10 / total; tenth > shown {
			shown = tenth
			fmt.Fprintf(a.stderr, "%s %d/%d\n", what, done, total)
		}
	}
}

func (a *app) printProblems(ps []proto.ImportProblem) {
	for _, p := range ps {
		switch {
		case p.Line == 0:
			fmt.Fprintf(a.stdout, "%s: %s\n", p.MAC, p.Reason)
		case p.MAC != "":
			fmt.Fprintf(a.stdout, "line %d: %s: %s\n", p.Line, p.MAC, p.Reason)
		default:
			fmt.Fprintf(a.stdout, "line %d: %s\n", p.Line, p.Reason)
		}
	}
}

// importChunks splits rows into requests of at most importChunkRows rows
// and importChunkBytes of JSON.
func importChunks(rows []proto.ImportRow) [][]proto.ImportRow {
	var out [][]proto.ImportRow
	start, size := 0, 0
	for i, r := range rows {
		b, _ := json.Marshal(r)
		if i > start && (i-start >= importChunkRows || size+len(b) > importChunkBytes) {
			out = append(out, rows[start:i])
			start, size = i, 0
		}
		size += len(b) + 1
	}
	if start < len(rows) {
		out = append(out, rows[start:])
	}
	return out
}

// parseImportCSV reads a CSV import: a header line naming the columns, then
// one host per line. A line that cannot be read is a problem of its own.
func parseImportCSV(data []byte) ([]proto.ImportRow, []proto.ImportProblem, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.Comment = '#'
	r.TrimLeadingSpace = true
	header, err := r.Read()
	if err != nil {
		return nil, nil, fmt.Errorf("no header line (want columns such as %s): %v", strings.Join(importColumns, ","), err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		if !slices.Contains(importColumns, h) {
			return nil, nil, fmt.Errorf("line 1: unknown column %q (want %s)", h, strings.Join(importColumns, ", "))
		}
		if _, dup := col[h]; dup {
			return nil, nil, fmt.Errorf("line 1: column %q twice", h)
		}
		col[h] = i
	}
	if _, ok := col["mac"]; !ok {
		return nil, nil, fmt.Errorf("line 1: no mac column")
	}
	var rows []proto.ImportRow
	var bad []proto.ImportProblem
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			bad = append(bad, proto.ImportProblem{Line: pe.StartLine, Reason: pe.Err.Error()})
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		line, _ := r.FieldPos(0)
		if len(rec) != len(header) {
			bad = append(bad, proto.ImportProblem{Line: line, Reason: fmt.Sprintf("%d fields, the header names %d", len(rec), len(header))})
			continue
		}
		get := func(name string) string {
			if i, ok := col[name]; ok {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		row := proto.ImportRow{Line: line, MAC: get("mac"), Site: get("site"), Image: get("image"), IP: get("ip"), Hostname: get("hostname")}
		var perr error
		if row.Labels, perr = pairs(get("labels")); perr != nil {
			bad = append(bad, proto.ImportProblem{Line: line, MAC: row.MAC, Reason: "labels: " + perr.Error()})
			continue
		}
		if row.Vars, perr = pairs(get("vars")); perr != nil {
			bad = append(bad, proto.ImportProblem{Line: line, MAC: row.MAC, Reason: "vars: " + perr.Error()})
			continue
		}
		rows = append(rows, row)
	}
	return rows, bad, nil
}

// pairs reads KEY=VALUE pairs separated by ';' or spaces.
func pairs(s string) (map[string]string, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == ' ' })
	if len(fields) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(fields))
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q: want KEY=VALUE", f)
		}
		m[k] = v
	}
	return m, nil
}

// importYAMLHost is one host of a YAML import.
type importYAMLHost struct {
	MAC      string            `yaml:"mac"`
	Site     string            `yaml:"site"`
	Image    string            `yaml:"image"`
	IP       string            `yaml:"ip"`
	Hostname string            `yaml:"hostname"`
	Labels   map[string]string `yaml:"labels"`
	Vars     map[string]string `yaml:"vars"`
}

// parseImportYAML reads a YAML import: a list of hosts (or a map whose key
// hosts holds the list). Each item's line is where it starts.
func parseImportYAML(data []byte) ([]proto.ImportRow, []proto.ImportProblem, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, err
	}
	if len(doc.Content) == 0 {
		return nil, nil, nil
	}
	list := doc.Content[0]
	if list.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(list.Content); i += 2 {
			if list.Content[i].Value == "hosts" {
				list = list.Content[i+1]
				break
			}
		}
	}
	if list.Kind != yaml.SequenceNode {
		return nil, nil, fmt.Errorf("line %d: want a list of hosts (or hosts: followed by one)", list.Line)
	}
	var rows []proto.ImportRow
	var bad []proto.ImportProblem
	for _, item := range list.Content {
		if item.Kind != yaml.MappingNode {
			bad = append(bad, proto.ImportProblem{Line: item.Line, Reason: "want a map of mac, site, image, ip, hostname, labels, vars"})
			continue
		}
		var unknown []string
		for i := 0; i+1 < len(item.Content); i += 2 {
			if k := item.Content[i].Value; !slices.Contains(importColumns, k) {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			bad = append(bad, proto.ImportProblem{Line: item.Line, Reason: fmt.Sprintf("unknown field(s) %s (want %s)", strings.Join(unknown, ", "), strings.Join(importColumns, ", "))})
			continue
		}
		var h importYAMLHost
		if err := item.Decode(&h); err != nil {
			bad = append(bad, proto.ImportProblem{Line: item.Line, Reason: strings.TrimPrefix(err.Error(), "yaml: ")})
			continue
		}
		rows = append(rows, proto.ImportRow{Line: item.Line, MAC: h.MAC, Site: h.Site, Image: h.Image, IP: h.IP, Hostname: h.Hostname, Labels: h.Labels, Vars: h.Vars})
	}
	return rows, bad, nil
}
