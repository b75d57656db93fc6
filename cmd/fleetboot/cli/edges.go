package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/proto"
)

func (a *app) edgeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Run an edge agent, or list the edges",
		Long: `Without a subcommand, runs the edge agent of one site (see fleetboot edge run
--help). "fleetboot edge ls" lists every edge's last heartbeat.`,
	}
	cmd.AddCommand(a.edgeLsCmd())
	return cmd
}

func (a *app) edgeLsCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "ls",
		Short:   "List edges and their last heartbeat (stale ones flagged)",
		Example: "  fleetboot edge ls -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			var edges []proto.EdgeView
			if err := c.call(cmd.Context(), proto.APIEdgeList, proto.ListRequest{V: proto.Version}, &edges); err != nil {
				return err
			}
			if out == "json" {
				if edges == nil {
					edges = []proto.EdgeView{}
				}
				return writeJSON(a.stdout, edges)
			}
			var rows [][]string
			for _, e := range edges {
				status := "ok"
				if e.Stale {
					status = "STALE"
				}
				rows = append(rows, []string{e.Name, e.Site, status, time.Since(e.Time).Round(time.Second).String() + " ago",
					e.Version, fmt.Sprint(e.Revision), fmt.Sprint(e.Lag), humanBytes(e.CacheBytes), fmt.Sprintf("%.0f%%", e.HitRatio*100), strings.Join(e.Interfaces, ",")})
			}
			return table(a.stdout, []string{"EDGE", "SITE", "STATUS", "LAST SEEN", "VERSION", "REVISION", "LAG", "CACHE", "HIT", "INTERFACES"}, rows)
		},
	}
	outputFlag(cmd, &out)
	return cmd
}
