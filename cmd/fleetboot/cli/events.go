package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/coordinator/eventlog"
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
			// A site admin's credentials read only her site's events.
			if own := a.confinedSite(); own != "" && site != "" && site != own {
				return fmt.Errorf("--site %s: these credentials read only the events of site %s", site, own)
			} else if own != "" {
				site = own
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
