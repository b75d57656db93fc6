package cli

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/coordinator/eventlog"
	"github.com/fleetboot/fleetboot/coordinator/timeline"
	"github.com/fleetboot/fleetboot/proto"
)

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
artifact transfer that stopped midway, NAKs, DECLINEs, machines the edge
ignores, and iPXE waiting for IPv6 router advertisements before it asks for
its script. A known host's other MACs are included. Times are UTC.`,
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
			// A site admin's credentials read only her site's events, and a
			// consumer with several filters carries none in its subject (so
			// her permissions refuse it): then read the site's events and
			// keep the host's MACs here.
			site, filter := a.confinedSite(), tl.MACs
			if site != "" && len(filter) > 1 {
				filter = nil
			}
			subjects, err := eventlog.Subjects(site, "", filter)
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
				if m, err := proto.ParseMAC(ev.MAC); err == nil && slices.Contains(tl.MACs, m) {
					evs = append(evs, ev)
				}
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
