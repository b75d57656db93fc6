package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/coordinator/eventlog"
	"github.com/fleetboot/fleetboot/coordinator/timeline"
	"github.com/fleetboot/fleetboot/proto"
)

// timeLayout prints event times in UTC: a fleet spans time zones, and an
// operator comparing two sites must not have to convert.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// parseSince accepts a duration back from now (1h, 30m) or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	// Days, which time.ParseDuration does not know: "7d".
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days > 0 {
			return now.AddDate(0, 0, -days), nil
		}
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("invalid --since %q: want a duration such as 1h, 30m or 7d, or a time such as 2025-03-01T09:00:00Z", s)
}

// eventsStream connects to NATS and finds the EVENTS stream.
func (a *app) eventsStream(ctx context.Context) (*nats.Conn, jetstream.Stream, error) {
	nc, err := nats.Connect(a.natsURL, a.natsOptions("fleetboot-cli")...)
	if err != nil {
		return nil, nil, exitError{code: 3, err: fmt.Errorf("cannot reach the coordinator's NATS at %s: %v", proto.RedactURL(a.natsURL), proto.RedactErr(err))}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("events: jetstream: %w", err)
	}
	timeout, err := time.ParseDuration(a.timeout)
	if err != nil || timeout <= 0 {
		nc.Close()
		return nil, nil, fmt.Errorf("invalid --timeout %q: want a duration such as 10s", a.timeout)
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := js.Stream(sctx, proto.StreamEvents)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		nc.Close()
		return nil, nil, exitError{code: 3, err: fmt.Errorf("no %s stream at %s (has a coordinator run against this NATS?)", proto.StreamEvents, proto.RedactURL(a.natsURL))}
	case err != nil:
		nc.Close()
		return nil, nil, exitError{code: 3, err: fmt.Errorf("events stream at %s: %v", proto.RedactURL(a.natsURL), err)}
	}
	return nc, st, nil
}

func detailKV(d map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(d)) {
		parts = append(parts, k+"="+d[k])
	}
	return strings.Join(parts, " ")
}

func eventRow(ev proto.Event) []string {
	return []string{ev.Time.UTC().Format(timeLayout), ev.Site, ev.Edge, ev.MAC, ev.Kind, detailKV(ev.Detail)}
}

var eventHeader = []string{"TIME", "SITE", "EDGE", "MAC", "KIND", "DETAIL"}

func (a *app) eventsCmd() *cobra.Command {
	var (
		follow                        bool
		host, site, edge, since, kind string
		out                           string
	)
	cmd := &cobra.Command{
		Use:   "events [--follow] [--host MAC] [--site S] [--edge E] [--since 1h] [--kind PREFIX]",
		Short: "Show the boot events edges recorded (DHCP, TFTP, scripts, artifacts, callbacks)",
		Long: `Show the events edges recorded along the boot chain, read from the coordinator's
EVENTS stream: DHCP messages (with the transaction id and the edge's decision),
TFTP transfers, boot scripts served, artifact transfers and installer
callbacks. Without --follow it prints what is stored and exits; with --follow
it keeps printing new events until interrupted (-o json then prints one JSON
object per line). --since takes a duration back from now or an RFC 3339 time;
--kind keeps events whose kind starts with the prefix (dhcp, tftp., artifact.end).
Times are UTC.`,
		Example: `  fleetboot events --since 1h
  fleetboot events --host 52:54:00:12:34:56 --kind dhcp
  fleetboot events --site lab --edge edge1 --follow
  fleetboot events --since 2025-03-01T09:00:00Z -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			var macs []string
			if host != "" {
				m, err := proto.ParseMAC(host)
				if err != nil {
					return err
				}
				macs = []string{m}
			}
			subjects, err := eventlog.Subjects(site, edge, macs)
			if err != nil {
				return err
			}
			if since == "" && !follow {
				since = "1h"
			}
			from, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			q := eventlog.Query{Subjects: subjects, Since: from, Kind: kind}
			ctx := cmd.Context()
			nc, st, err := a.eventsStream(ctx)
			if err != nil {
				return err
			}
			defer nc.Close()
			if follow {
				return eventlog.Follow(ctx, st, q, a.stderr, a.followPrinter(out))
			}
			return a.printEvents(ctx, st, q, out)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	f.StringVar(&host, "host", "", "only events about this MAC")
	f.StringVar(&site, "site", "", "only events from this site")
	f.StringVar(&edge, "edge", "", "only events from this edge")
	f.StringVar(&since, "since", "", "events from this long ago (1h, 30m) or this RFC 3339 time (default 1h; with --follow, only new events)")
	f.StringVar(&kind, "kind", "", "only events whose kind starts with this prefix (dhcp, tftp., artifact.end)")
	outputFlag(cmd, &out)
	return cmd
}

// printEvents writes the stored events as a table or a JSON array, streaming
// the array so a long history is not held in memory twice.
func (a *app) printEvents(ctx context.Context, st jetstream.Stream, q eventlog.Query, out string) error {
	if out == "json" {
		n := 0
		err := eventlog.Read(ctx, st, q, a.stderr, func(ev proto.Event) error {
			b, err := json.MarshalIndent(ev, "  ", "  ")
			if err != nil {
				return err
			}
			sep := ",\n  "
			if n == 0 {
				sep = "[\n  "
			}
			n++
			_, err = fmt.Fprintf(a.stdout, "%s%s", sep, b)
			return err
		})
		if err != nil {
			return err
		}
		if n == 0 {
			_, err = fmt.Fprintln(a.stdout, "[]")
		} else {
			_, err = fmt.Fprintln(a.stdout, "\n]")
		}
		return err
	}
	var rows [][]string
	if err := eventlog.Read(ctx, st, q, a.stderr, func(ev proto.Event) error {
		rows = append(rows, eventRow(ev))
		return nil
	}); err != nil {
		return err
	}
	return table(a.stdout, eventHeader, rows)
}

// followPrinter prints each event as it comes: a JSON object per line, or
// table rows with fixed-width columns (a stream cannot be aligned afterwards).
func (a *app) followPrinter(out string) func(proto.Event) error {
	if out == "json" {
		enc := json.NewEncoder(a.stdout)
		return func(ev proto.Event) error { return enc.Encode(ev) }
	}
	const format = "%-24s  %-10s  %-12s  %-17s  %-15s  %s\n"
	header := false
	return func(ev proto.Event) error {
		if !header {
			header = true
			fmt.Fprintf(a.stdout, format, "TIME", "SITE", "EDGE", "MAC", "KIND", "DETAIL")
		}
		r := eventRow(ev)
		for i := range r {
			if r[i] == "" {
				r[i] = "-"
			}
		}
		_, err := fmt.Fprintf(a.stdout, format, r[0], r[1], r[2], r[3], r[4], r[5])
		return err
	}
}

// hostTimeline is the JSON form of `host timeline`.
type hostTimeline struct {
	MAC   string          `json:"mac"`
	MACs  []string        `json:"macs"`
	Host  *proto.Host     `json:"host,omitempty"`
	Since time.Time       `json:"since"`
	Total int             `json:"total_boots"`
	Boots []timeline.Boot `json:"boots"`
}

func (a *app) hostTimelineCmd() *cobra.Command {
	var (
		since, out string
		boots      int
	)
	cmd := &cobra.Command{
		Use:   "timeline MAC [--since 24h] [--boots 3]",
		Short: "Show a machine's last boots step by step, with a diagnosis",
		Long: `Show the last boots of a machine step by step: each event with the time since
the previous step and the edge that saw it, and a diagnosis line when a known
pattern shows: offers that never reach the client, DISCOVERs resuming about
30 s after each link drop (spanning tree without portfast), a TFTP transfer
that never finished, a boot script with no kernel requested after it, an
artifact transfer that stopped midway, NAKs, DECLINEs, and machines the edge
ignores. A known host's other MACs are included. Times are UTC.`,
		Example: `  fleetboot host timeline 52:54:00:12:34:56
  fleetboot host timeline 52:54:00:12:34:56 --since 7d --boots 10
  fleetboot host timeline 52:54:00:12:34:56 -o json`,
		Args: exactArgs(1, "MAC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			mac, err := macArg(out, args)
			if err != nil {
				return err
			}
			if boots < 0 {
				return fmt.Errorf("invalid --boots %d: want 1 or more, or 0 for all", boots)
			}
			now := time.Now()
			from, err := parseSince(since, now)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			tl := hostTimeline{MAC: mac, MACs: []string{mac}, Since: from.UTC()}
			var h proto.Host
			err = c.call(ctx, proto.APIHostGet, proto.MACRequest{V: proto.Version, MAC: mac}, &h)
			var ee exitError
			switch {
			case errors.As(err, &ee):
				return err
			case err == nil:
				// The edge records the MAC it saw, which may be any NIC of the machine.
				tl.Host = &h
				for _, m := range h.MACs() {
					if !slices.Contains(tl.MACs, m) {
						tl.MACs = append(tl.MACs, m)
					}
				}
			}
			// Otherwise the machine is unknown: its events are still worth
			// reading (an unknown host ignored by policy is a diagnosis).
			subjects, err := eventlog.Subjects("", "", tl.MACs)
			if err != nil {
				return err
			}
			nc, st, err := a.eventsStream(ctx)
			if err != nil {
				return err
			}
			defer nc.Close()
			var evs []proto.Event
			if err := eventlog.Read(ctx, st, eventlog.Query{Subjects: subjects, Since: from}, a.stderr, func(ev proto.Event) error {
				evs = append(evs, ev)
				return nil
			}); err != nil {
				return err
			}
			all := timeline.Build(evs, timeline.Options{Now: now})
			tl.Total, tl.Boots = len(all), timeline.Last(all, boots)
			if tl.Boots == nil {
				tl.Boots = []timeline.Boot{}
			}
			if out == "json" {
				return writeJSON(a.stdout, tl)
			}
			return printTimeline(a.stdout, tl)
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "24h", "boots from this long ago (24h, 90m) or this RFC 3339 time")
	f.IntVar(&boots, "boots", 3, "how many of the last boots to show (0: all)")
	outputFlag(cmd, &out)
	return cmd
}

func printTimeline(w io.Writer, tl hostTimeline) error {
	who := tl.MAC
	if tl.Host != nil {
		var about []string
		if tl.Host.Hostname != "" {
			about = append(about, tl.Host.Hostname)
		}
		about = append(about, "site "+tl.Host.Site)
		if len(tl.MACs) > 1 {
			about = append(about, "MACs "+strings.Join(tl.MACs, ", "))
		}
		who += " (" + strings.Join(about, ", ") + ")"
	} else {
		who += " (not a known host)"
	}
	since := tl.Since.Format(time.RFC3339)
	if len(tl.Boots) == 0 {
		_, err := fmt.Fprintf(w, "%s: no boot events since %s\n", who, since)
		return err
	}
	fmt.Fprintf(w, "%s: %d boot(s) since %s, showing the last %d\n", who, tl.Total, since, len(tl.Boots))
	first := tl.Total - len(tl.Boots) + 1
	for i, b := range tl.Boots {
		state := ""
		if b.InProgress {
			state = ", in progress"
		}
		fmt.Fprintf(w, "\nboot %d: %s, %s, %d steps%s\n", first+i, b.Start.UTC().Format(timeLayout), formatDuration(b.Duration()), len(b.Steps), state)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		header := []string{"TIME", "+DELTA", "EDGE", "KIND", "DETAIL"}
		if len(tl.MACs) > 1 {
			header = []string{"TIME", "+DELTA", "EDGE", "MAC", "KIND", "DETAIL"}
		}
		fmt.Fprintln(tw, strings.Join(header, "\t"))
		for j, s := range b.Steps {
			delta := "-"
			if j > 0 {
				delta = "+" + formatDuration(s.Delta)
			}
			row := []string{s.Event.Time.UTC().Format("15:04:05.000"), delta, orDash(s.Event.Edge)}
			if len(tl.MACs) > 1 {
				row = append(row, orDash(s.Event.MAC))
			}
			row = append(row, s.Event.Kind, orDash(timeline.Summary(s.Event)))
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, d := range b.Diagnoses {
			label := "diagnosis"
			if d.Level == timeline.LevelInfo {
				label = "note"
			}
			fmt.Fprintf(w, "%s: %s\n", label, d.Text)
		}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// formatDuration keeps step deltas short: 12ms, 1.5s, 30s, 2m5s.
func formatDuration(d time.Duration) string {
	d = d.Round(time.Millisecond)
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		return strings.TrimSuffix(strings.TrimSuffix(fmt.Sprintf("%.2f", d.Seconds()), "0"), ".0") + "s"
	default:
		return d.Round(time.Second).String()
	}
}
