package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/bytesize"
)

func (a *app) imageHistoryCmd() *cobra.Command {
	return imageNameCmd(a, proto.APIImageHistory, &cobra.Command{
		Use:   "history NAME",
		Short: "List an image's revisions, oldest first; * marks the current one",
		Long: `Every image add of new content records an immutable revision of the
image (its files by digest and its command line). Hosts follow NAME (the
current revision) or pin NAME@N (host set MAC --image NAME@N).`,
		Example: "  fleetboot image history debian12",
	}, func(h proto.ImageHistory) error {
		var rows [][]string
		for _, im := range h.Revisions {
			mark := ""
			if im.Revision == h.Current {
				mark = "*"
			}
			var files []string
			var total int64
			for _, ar := range im.Artifacts {
				files = append(files, ar.Name+":"+ar.SHA256[:12])
				total += ar.Size
			}
			rows = append(rows, []string{mark, proto.ImageRef(h.Name, im.Revision), im.Updated.Format(time.RFC3339),
				strings.Join(files, ","), bytesize.Format(total), im.Cmdline})
		}
		return table(a.stdout, []string{"", "REVISION", "ADDED", "FILES", "SIZE", "CMDLINE"}, rows)
	})
}

func (a *app) imageRollbackCmd() *cobra.Command {
	return imageNameCmd(a, proto.APIImageRollback, &cobra.Command{
		Use:   "rollback NAME",
		Short: "Make the revision before the current one current again",
		Long: `The revision before the current one becomes current: hosts that follow
NAME boot it from their next boot on. Nothing is uploaded, and the edges
serve its files from their caches (they keep the previous revision's files
longest). Hosts pinned to a revision do not move. Rolling back again goes
one revision further back; image add records a new revision.`,
		Example: "  fleetboot image rollback debian12",
	}, func(im proto.Image) error {
		fmt.Fprintf(a.stdout, "image %s now at revision %d (%s)\n", im.Name, im.CurrentRevision(), proto.ImageRef(im.Name, im.CurrentRevision()))
		return nil
	})
}

// imageNameCmd completes cmd as an image subcommand that takes NAME, sends
// it to endpoint and shows the reply: as JSON with -o json, else with show.
func imageNameCmd[T any](a *app, endpoint string, cmd *cobra.Command, show func(T) error) *cobra.Command {
	var out string
	cmd.Args = exactArgs(1, "NAME")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(out); err != nil {
			return err
		}
		if err := proto.ValidName("image", args[0]); err != nil {
			return err
		}
		v, err := request[T](cmd.Context(), a, endpoint, proto.NameRequest{V: proto.Version, Name: args[0]})
		if err != nil {
			return err
		}
		if out == "json" {
			return writeJSON(a.stdout, v)
		}
		return show(v)
	}
	outputFlag(cmd, &out)
	return cmd
}
