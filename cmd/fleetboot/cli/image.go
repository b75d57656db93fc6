package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fleetboot/fleetboot/shared/bytesize"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
)

func (a *app) imageCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "image", Short: "Manage boot images (kernel, initrd, optional LiveOS ISO)"})
	cmd.AddCommand(a.imageAddCmd(), a.imageLsCmd(), a.imageShowCmd(), a.imageRmCmd(), a.imageHistoryCmd(), a.imageRollbackCmd())
	return cmd
}

func (a *app) imageAddCmd() *cobra.Command {
	var kernel, iso, cmdline, arch, store, out string
	var initrds []string
	cmd := &cobra.Command{
		Use:   "add NAME --kernel FILE --initrd FILE [--initrd FILE…] [--iso FILE] [--cmdline '…']",
		Short: "Upload an image's files to the artifact store and register it",
		Long: `Upload the kernel, initrd and (for LiveOS images) ISO to the artifact store,
recording each file's size and sha256, then register the image with the
coordinator. Files are stored by content: adding identical content again
uploads nothing. Adding an existing NAME records a new immutable revision
and makes it current: hosts that follow NAME boot it from their next boot,
hosts pinned to NAME@N stay where they are. Content equal to the current
revision adds no revision. See image history and image rollback.

--initrd may be given several times: the boot loader loads the files in
that order, so the CPU's early microcode comes first, then the initrd.

The command line may use template variables, filled per machine by the edge:
{{mac}} {{hostname}} {{ip}} {{site}} {{edge}} {{image}} and {{var.NAME}}.

The store is the coordinator's (asked over NATS) unless --store is given;
S3 credentials come from FLEETBOOT_S3_ACCESS_KEY / FLEETBOOT_S3_SECRET_KEY or
the standard AWS variables.`,
		Example: `  fleetboot image add debian12 --kernel vmlinuz --initrd initrd.img --cmdline 'console=ttyS0 hostname={{hostname}}'
  fleetboot image add debian12 --kernel vmlinuz --initrd amd-ucode.img --initrd initrd.img
  fleetboot image add azl-live --kernel vmlinuz --initrd initrd.img --iso azl.iso --cmdline 'rd.live.image'`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			name := args[0]
			if err := proto.ValidName("image", name); err != nil {
				return err
			}
			if kernel == "" || len(initrds) == 0 {
				return fmt.Errorf("image add: --kernel and --initrd are required")
			}
			files := []struct{ role, path string }{{proto.RoleKernel, kernel}}
			for _, ird := range initrds {
				files = append(files, struct{ role, path string }{proto.RoleInitrd, ird})
			}
			if iso != "" {
				files = append(files, struct{ role, path string }{proto.RoleISO, iso})
			}
			for _, f := range files {
				if st, err := os.Stat(f.path); err != nil {
					return fmt.Errorf("image add: %s file: %v", f.role, err)
				} else if !st.Mode().IsRegular() {
					return fmt.Errorf("image add: %s file %s is not a regular file", f.role, f.path)
				}
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			st, err := a.uploadStore(ctx, c, store, "image add")
			if err != nil {
				return err
			}
			im := proto.Image{V: proto.Version, Name: name, Arch: arch, Cmdline: cmdline}
			for _, f := range files {
				up, err := a.upload(ctx, st, f.role, f.path, "image add")
				if err != nil {
					return err
				}
				im.Artifacts = append(im.Artifacts, proto.Artifact{
					Role: f.role, Name: artifactName(f.role, f.path), Key: up.Key, Size: up.Size, SHA256: up.SHA256,
				})
			}
			var saved proto.Image
			if err := c.call(ctx, proto.APIImageAdd, im, &saved); err != nil {
				return err
			}
			return a.printImages(out, []proto.Image{saved})
		},
	}
	f := cmd.Flags()
	f.StringVar(&kernel, "kernel", "", "kernel file (required)")
	f.StringArrayVar(&initrds, "initrd", nil, "initrd file (required); repeat for several, loaded in order (microcode first)")
	f.StringVar(&iso, "iso", "", "LiveOS ISO: booted with root=live:http://EDGE/artifacts/NAME/FILE")
	f.StringVar(&cmdline, "cmdline", "", "kernel command line (template variables allowed, see above)")
	f.StringVar(&arch, "arch", "x86_64", "architecture: x86_64 or arm64")
	f.StringVar(&store, "store", "", "artifact store URL (default: the coordinator's): s3://BUCKET?endpoint=HOST:PORT or dir:///PATH")
	outputFlag(cmd, &out)
	return cmd
}

// uploadStore opens the artifact store files are uploaded to: --store, or
// the coordinator's. It is asked before any upload, so a command that would
// be refused anyway (no store) uploads nothing.
func (a *app) uploadStore(ctx context.Context, c *client, store, cmdName string) (artifactstore.Store, error) {
	if store == "" {
		var info proto.StoreInfo
		if err := c.call(ctx, proto.APIStoreInfo, proto.ListRequest{V: proto.Version}, &info); err != nil {
			return nil, err
		}
		store = info.URL
	}
	if store == "" {
		return nil, fmt.Errorf("%s: the coordinator has no artifact store; pass --store", cmdName)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return artifactstore.Open(sctx, a.storeConfig(store))
}

// upload stores one file (content-addressed: nothing is sent when the
// store has it) and says so on stderr, one line a file.
func (a *app) upload(ctx context.Context, st artifactstore.Store, role, path, cmdName string) (artifactstore.Uploaded, error) {
	up, err := artifactstore.UploadFile(ctx, st, path, a.progress(filepath.Base(path)))
	if err != nil {
		return up, fmt.Errorf("%s: upload %s: %w", cmdName, path, err)
	}
	verb := "uploaded"
	if up.Skipped {
		verb = "already stored"
	}
	fmt.Fprintf(a.stderr, "%-8s %s: %s, %s, sha256 %s\n", role, filepath.Base(path), verb, bytesize.Format(up.Size), up.SHA256[:12])
	return up, nil
}

// artifactName is the file name a booting machine sees. It is the uploaded
// file's base name when that is a safe name, else a name for the role.
func artifactName(role, path string) string {
	base := strings.ToLower(filepath.Base(path))
	if proto.ValidName("artifact", base) == nil {
		return base
	}
	switch role {
	case proto.RoleKernel:
		return "vmlinuz"
	case proto.RoleInitrd:
		return "initrd.img"
	}
	return "live.iso"
}

// progress returns a progress callback that redraws one line when stderr is a
// terminal, and nil (no output) otherwise.
func (a *app) progress(name string) func(done, total int64) {
	f, ok := a.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	var last time.Time
	return func(done, total int64) {
		if done < total && time.Since(last) < 100*time.Millisecond {
			return
		}
		last = time.Now()
		pct := 100.0
		if total > 0 {
			pct = float64(done) * 100 / float64(total)
		}
		fmt.Fprintf(f, "\r%-24s %5.1f%%  %s / %s", name, pct, bytesize.Format(done), bytesize.Format(total))
		if done >= total {
			fmt.Fprint(f, "\r\033[K")
		}
	}
}

func (a *app) imageLsCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "ls",
		Short:   "List images",
		Example: "  fleetboot image ls -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			ims, err := request[[]proto.Image](cmd.Context(), a, proto.APIImageList, proto.ListRequest{V: proto.Version})
			if err != nil {
				return err
			}
			return a.printImages(out, ims)
		},
	}
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) imageShowCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "show NAME[@N]",
		Short:   "Show an image (its current revision, or revision N) and its artifacts",
		Example: "  fleetboot image show debian12\n  fleetboot image show debian12@3",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			im, err := request[proto.Image](cmd.Context(), a, proto.APIImageGet, proto.NameRequest{V: proto.Version, Name: args[0]})
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(a.stdout, im)
			}
			fmt.Fprintf(a.stdout, "image:    %s\nrevision: %d\narch:     %s\ncmdline:  %s\nupdated:  %s\n\n", im.Name, im.CurrentRevision(), im.Arch, im.Cmdline, im.Updated.Format(time.RFC3339))
			var rows [][]string
			for _, ar := range im.Artifacts {
				rows = append(rows, []string{ar.Role, ar.Name, bytesize.Format(ar.Size), ar.SHA256, ar.Key})
			}
			return table(a.stdout, []string{"ROLE", "FILE", "SIZE", "SHA256", "KEY"}, rows)
		},
	}
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) imageRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME[@N]",
		Short: "Remove an image no host uses, or one revision no host pins (stored files stay)",
		Long: `Remove an image with all its revisions (NAME), or one revision (NAME@N).
Refused while a host or a site's discovery image uses it: NAME is used by
hosts that follow it or pin any of its revisions; NAME@N by hosts pinned to
it, and the current revision cannot be removed at all.`,
		Example: "  fleetboot image rm debian12\n  fleetboot image rm debian12@2",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := request[struct{}](cmd.Context(), a, proto.APIImageRm, proto.NameRequest{V: proto.Version, Name: args[0]}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "image %s removed\n", args[0])
			return nil
		},
	}
}

func (a *app) printImages(out string, ims []proto.Image) error {
	if out == "json" {
		if ims == nil {
			ims = []proto.Image{}
		}
		return writeJSON(a.stdout, ims)
	}
	var rows [][]string
	for _, im := range ims {
		var files []string
		var total int64
		for _, ar := range im.Artifacts {
			files = append(files, ar.Name)
			total += ar.Size
		}
		live := ""
		if _, ok := im.Artifact(proto.RoleISO); ok {
			live = "yes"
		}
		rows = append(rows, []string{im.Name, fmt.Sprint(im.CurrentRevision()), im.Arch, strings.Join(files, ","), bytesize.Format(total), live, im.Cmdline})
	}
	return table(a.stdout, []string{"IMAGE", "REV", "ARCH", "FILES", "SIZE", "LIVEOS", "CMDLINE"}, rows)
}
