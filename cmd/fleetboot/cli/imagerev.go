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
	var out string
	cmd := &cobra.Command{
		Use:   "history NAME",
		Short: "List an image's revisions, oldest first; * marks the current one",
		Long: `Every image add of new content records an immutable revision of the
image (its files by digest and its command line). Hosts follow NAME (the
current revision) or pin NAME@N (host set MAC --image NAME@N).`,
		Example: "  fleetboot image history debian12",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			if err := proto.ValidName("image", args[0]); err != nil {
				return err
			}
			h, err := request[proto.ImageHistory](cmd.Context(), a, proto.APIImageHistory, proto.NameRequest{V: proto.Version, Name: args[0]})
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(a.stdout, h)
			}
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
		},
	}
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) imageRollbackCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "rollback NAME",
		Short: "Make the revision before the current one current again",
		Long: `The revision before the current one becomes current: hosts that follow
NAME boot it from their next boot on. Nothing is uploaded, and the edges
serve its files from their caches (they keep the previous revision's files
longest). Hosts pinned to a revision do not move. Rolling back again goes
one revision further back; image add records a new revision.`,
		Example: "  fleetboot image rollback debian12",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			if err := proto.ValidName("image", args[0]); err != nil {
				return err
			}
			im, err := request[proto.Image](cmd.Context(), a, proto.APIImageRollback, proto.NameRequest{V: proto.Version, Name: args[0]})
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(a.stdout, im)
			}
			fmt.Fprintf(a.stdout, "image %s now at revision %d (%s)\n", im.Name, im.CurrentRevision(), proto.ImageRef(im.Name, im.CurrentRevision()))
			return nil
		},
	}
	outputFlag(cmd, &out)
	return cmd
}
