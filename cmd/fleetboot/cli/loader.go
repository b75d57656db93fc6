package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/bytesize"
)

func (a *app) loaderCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "loader", Short: "Manage boot loaders (iPXE, shim then GRUB for Secure Boot, GRUB)"})
	cmd.AddCommand(a.loaderAddCmd(), a.loaderLsCmd(), a.loaderShowCmd(), a.loaderRmCmd())
	return cmd
}

// loaderFlags are the files loader add takes, before anything is uploaded.
type loaderFlags struct {
	kind, arch, shim, grub, bios, efi string
	modules                           []string // GRUB modules and lists (--module, repeated)
}

// loaderUpload is one file to upload: its path and how the loader lists it.
type loaderUpload struct {
	path string
	file proto.LoaderFile
}

// plan checks the flags against the kind and names each file as its
// firmware fetches it: shim asks for GRUB by a fixed name from its own
// directory, and shim itself is named like the removable-media path.
func (lf loaderFlags) plan() ([]loaderUpload, error) {
	if err := proto.ValidLoaderKind(lf.kind); err != nil {
		return nil, fmt.Errorf("loader add: %v (--kind)", err)
	}
	fw := map[string]string{"x64": proto.FirmwareX64, "arm64": proto.FirmwareARM64}[lf.arch]
	if fw == "" {
		return nil, fmt.Errorf("loader add: invalid --arch %q: want x64 or arm64", lf.arch)
	}
	given := map[string]string{"shim": lf.shim, "grub": lf.grub, "bios": lf.bios, "efi": lf.efi}
	allowed := map[string][]string{
		proto.LoaderIPXE:     {"bios", "efi"},
		proto.LoaderShimGrub: {"shim", "grub"},
		proto.LoaderGrub:     {"grub"},
	}[lf.kind]
	for _, flag := range []string{"shim", "grub", "bios", "efi"} {
		if given[flag] != "" && !slices.Contains(allowed, flag) {
			return nil, fmt.Errorf("loader add: --%s does not go with --kind %s (it takes --%s)", flag, lf.kind, strings.Join(allowed, " and --"))
		}
	}
	if len(lf.modules) > 0 && lf.kind == proto.LoaderIPXE {
		return nil, fmt.Errorf("loader add: --module does not go with --kind ipxe (GRUB modules: --kind shim-grub or grub)")
	}
	suffix := map[string]string{proto.FirmwareX64: "x64", proto.FirmwareARM64: "aa64"}[fw]
	var out []loaderUpload
	add := func(path, firmware, role, name string) {
		out = append(out, loaderUpload{path, proto.LoaderFile{Firmware: firmware, Artifact: proto.Artifact{Role: role, Name: name}}})
	}
	switch lf.kind {
	case proto.LoaderIPXE:
		if lf.bios == "" && lf.efi == "" {
			return nil, fmt.Errorf("loader add: --kind ipxe needs --bios FILE, --efi FILE or both")
		}
		if lf.bios != "" {
			add(lf.bios, proto.FirmwareBIOS, proto.RoleIPXE, bootFileName(lf.bios, "undionly.kpxe"))
		}
		if lf.efi != "" {
			add(lf.efi, fw, proto.RoleIPXE, bootFileName(lf.efi, "ipxe.efi"))
		}
	case proto.LoaderShimGrub:
		if lf.shim == "" || lf.grub == "" {
			return nil, fmt.Errorf("loader add: --kind shim-grub needs --shim FILE and --grub FILE")
		}
		add(lf.shim, fw, proto.RoleShim, "boot"+suffix+".efi")
		add(lf.grub, fw, proto.RoleGrub, proto.GrubName(fw))
	case proto.LoaderGrub:
		if lf.grub == "" {
			return nil, fmt.Errorf("loader add: --kind grub needs --grub FILE")
		}
		add(lf.grub, fw, proto.RoleGrub, "grub"+suffix+".efi")
	}
	// GRUB asks for modules at <prefix>/<platform>/<file>: each keeps its
	// base name under the platform directory of --arch.
	seen := map[string]string{}
	for _, m := range lf.modules {
		base := filepath.Base(m)
		if err := proto.ValidFileName(base); err != nil {
			return nil, fmt.Errorf("loader add: --module %s: %v", m, err)
		}
		name := proto.GrubModuleName(fw, base)
		if prev, ok := seen[name]; ok {
			return nil, fmt.Errorf("loader add: --module %s and %s are both %s", prev, m, name)
		}
		seen[name] = m
		add(m, fw, proto.RoleGrubModule, name)
	}
	for _, u := range out {
		if st, err := os.Stat(u.path); err != nil {
			return nil, fmt.Errorf("loader add: %s file: %w", u.file.Role, err)
		} else if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("loader add: %s file %s is not a regular file", u.file.Role, u.path)
		}
	}
	return out, nil
}

// bootFileName is the uploaded file's base name when it is a safe file
// name (undionly.kpxe, ipxe.pxe, snponly.efi), else def.
func bootFileName(path, def string) string {
	base := filepath.Base(path)
	if proto.ValidFileName(base) == nil {
		return base
	}
	return def
}

func (a *app) loaderAddCmd() *cobra.Command {
	var lf loaderFlags
	var store, out string
	cmd := &cobra.Command{
		Use:   "add NAME --kind ipxe|shim-grub|grub [--shim FILE] [--grub FILE] [--bios FILE] [--efi FILE] [--module FILE]... [--arch x64|arm64]",
		Short: "Upload a boot loader's files to the artifact store and register it",
		Long: `Upload a boot chain's files to the artifact store, recording each file's size
and sha256, then register the loader with the coordinator. Edges serve its
files over TFTP as loaders/NAME/FILE. Sites and hosts choose it with
--loader NAME; without one they boot iPXE from the edge's --boot-dir.

Kinds:
  ipxe       --bios FILE (undionly.kpxe or ipxe.pxe) and/or --efi FILE (ipxe.efi or snponly.efi)
  shim-grub  --shim FILE --grub FILE: Secure Boot; served as bootx64.efi and grubx64.efi
             (bootaa64.efi and grubaa64.efi with --arch arm64)
  grub       --grub FILE

shim-grub and grub also take --module FILE, repeated: files GRUB reads from
its prefix once it runs (modules such as http.mod, lists such as
command.lst). GRUB asks for them as grub/x86_64-efi/FILE (arm64-efi with
--arch arm64) from the server it came from; the edge answers each machine
with its own loader's file. Under Secure Boot, GRUB refuses unsigned
modules that are not built into its image.

Adding an existing NAME replaces that loader.`,
		Example: `  fleetboot loader add shim-debian --kind shim-grub --shim shimx64.efi.signed --grub grubnetx64.efi.signed
  fleetboot loader add ipxe-snp --kind ipxe --bios ipxe.pxe --efi snponly.efi
  fleetboot loader add grub-arm --kind grub --grub grubnetaa64.efi.signed --arch arm64
  fleetboot loader add grub-http --kind grub --grub grubnetx64.efi \
      --module /usr/lib/grub/x86_64-efi/http.mod --module /usr/lib/grub/x86_64-efi/command.lst`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			name := args[0]
			if err := proto.ValidName("loader", name); err != nil {
				return err
			}
			ups, err := lf.plan()
			if err != nil {
				return err
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			st, err := a.uploadStore(ctx, c, store, "loader add")
			if err != nil {
				return err
			}
			l := proto.Loader{V: proto.Version, Name: name, Kind: lf.kind}
			for _, u := range ups {
				up, err := a.upload(ctx, st, u.file.Role, u.path, "loader add")
				if err != nil {
					return err
				}
				f := u.file
				f.Key, f.Size, f.SHA256 = up.Key, up.Size, up.SHA256
				l.Files = append(l.Files, f)
			}
			var saved proto.Loader
			if err := c.call(ctx, proto.APILoaderAdd, l, &saved); err != nil {
				return err
			}
			return a.printLoaders(out, []proto.Loader{saved})
		},
	}
	f := cmd.Flags()
	f.StringVar(&lf.kind, "kind", "", "boot chain: ipxe, shim-grub or grub (required)")
	f.StringVar(&lf.shim, "shim", "", "signed shim (shim-grub), e.g. shimx64.efi.signed")
	f.StringVar(&lf.grub, "grub", "", "GRUB network image (shim-grub, grub), e.g. grubnetx64.efi.signed")
	f.StringVar(&lf.bios, "bios", "", "iPXE for BIOS PXE (ipxe): undionly.kpxe, or ipxe.pxe for NICs with a broken UNDI")
	f.StringVar(&lf.efi, "efi", "", "iPXE for UEFI (ipxe): ipxe.efi, or snponly.efi to use the firmware's NIC driver")
	f.StringArrayVar(&lf.modules, "module", nil, "a file GRUB reads from its prefix (shim-grub, grub), e.g. /usr/lib/grub/x86_64-efi/http.mod; repeat for more")
	f.StringVar(&lf.arch, "arch", "x64", "UEFI architecture of --shim, --grub, --efi and --module: x64 or arm64")
	f.StringVar(&store, "store", "", "artifact store URL (default: the coordinator's): s3://BUCKET?endpoint=HOST:PORT or dir:///PATH")
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) loaderLsCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "ls",
		Short:   "List boot loaders",
		Example: "  fleetboot loader ls -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			ls, err := request[[]proto.Loader](cmd.Context(), a, proto.APILoaderList, proto.ListRequest{V: proto.Version})
			if err != nil {
				return err
			}
			return a.printLoaders(out, ls)
		},
	}
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) loaderShowCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "show NAME",
		Short:   "Show a boot loader and its files",
		Example: "  fleetboot loader show shim-debian",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			l, err := request[proto.Loader](cmd.Context(), a, proto.APILoaderGet, proto.NameRequest{V: proto.Version, Name: args[0]})
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(a.stdout, l)
			}
			fmt.Fprintf(a.stdout, "loader:   %s\nkind:     %s\nupdated:  %s\n\n", l.Name, l.Kind, l.Updated.Format(time.RFC3339))
			var rows [][]string
			for _, f := range l.Files {
				p := proto.LoaderPath(l.Name, f.Name)
				if f.Role == proto.RoleGrubModule {
					p = proto.GrubModulePath(f.Name) // where GRUB asks for it
				}
				rows = append(rows, []string{f.Firmware, f.Role, p, bytesize.Format(f.Size), f.SHA256, f.Key})
			}
			return table(a.stdout, []string{"FIRMWARE", "ROLE", "PATH", "SIZE", "SHA256", "KEY"}, rows)
		},
	}
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) loaderRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Short:   "Remove a boot loader no site or host uses (its stored files stay)",
		Example: "  fleetboot loader rm shim-debian",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := request[struct{}](cmd.Context(), a, proto.APILoaderRm, proto.NameRequest{V: proto.Version, Name: args[0]}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "loader %s removed\n", args[0])
			return nil
		},
	}
}

func (a *app) printLoaders(out string, ls []proto.Loader) error {
	if out == "json" {
		if ls == nil {
			ls = []proto.Loader{}
		}
		return writeJSON(a.stdout, ls)
	}
	var rows [][]string
	for _, l := range ls {
		var files []string
		var total int64
		for _, f := range l.Files {
			files = append(files, f.Name)
			total += f.Size
		}
		rows = append(rows, []string{l.Name, l.Kind, strings.Join(l.Firmwares(), ","), strings.Join(files, ","), bytesize.Format(total)})
	}
	return table(a.stdout, []string{"LOADER", "KIND", "FIRMWARE", "FILES", "SIZE"}, rows)
}
