package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/discovery/agent"
	"github.com/fleetboot/fleetboot/discovery/facts"
	"github.com/fleetboot/fleetboot/discovery/initramfs"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/bytesize"
)

// discoverCmd is the discovery system itself: /init of the discovery
// initramfs (main runs it when the binary is PID 1).
func (a *app) discoverCmd() *cobra.Command {
	var printFacts bool
	cmd := &cobra.Command{
		Use:   "discover",
		Short: "Run as init of the discovery initramfs: report this machine's facts, reboot when assigned",
		Long: `The discovery system. Run as PID 1 of the initramfs that
'fleetboot discovery build' makes, it mounts /proc, /sys and /dev, loads the
kernel modules in /lib/modules, brings up the NIC that booted (BOOTIF= on the
kernel command line) by DHCP, reports the machine's facts (NICs, CPUs, memory,
disks, DMI, firmware, Secure Boot) to the edge (fleetboot.edge=) with the
boot's token (fleetboot.token=), and asks the edge every few seconds what
next. When the machine has been assigned an image (policy or host set) or
local boot, it reboots into it. The edge puts all three on the command line.`,
		Example: `  fleetboot discover --facts      # print what this machine would report, as JSON`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if printFacts {
				f, err := facts.Collect("/", "")
				if err != nil {
					return err
				}
				return writeJSON(a.stdout, f)
			}
			// It mounts over /proc, /sys and /dev and reboots the
			// machine: only as the initramfs's init.
			if os.Getpid() != 1 {
				return fmt.Errorf("discover runs as init (PID 1) of the discovery initramfs; --facts prints this machine's facts")
			}
			return agent.Init(cmd.Context(), a.logger())
		},
	}
	cmd.Flags().BoolVar(&printFacts, "facts", false, "print this machine's facts as JSON and exit")
	return cmd
}

func (a *app) discoveryCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "discovery", Short: "Build the discovery system unknown machines boot"})
	cmd.AddCommand(a.discoveryBuildCmd())
	return cmd
}

func (a *app) discoveryBuildCmd() *cobra.Command {
	var kernel, out, modules, binary, image, site, cmdline, arch, store string
	var extra []string
	var noRegister bool
	cmd := &cobra.Command{
		Use:   "build --kernel VMLINUZ --out DIR [--modules DIR] [--site S]",
		Short: "Build the discovery initramfs and register it as an image (and a site's discovery image)",
		Long: `Build the discovery initramfs: this fleetboot binary (static) as /init, and the
kernel modules the NICs and disks need (virtio, common server NICs, NVMe,
AHCI) with their dependencies, taken from --modules (a /lib/modules/VERSION
tree, or any directory of .ko files; default /lib/modules/VERSION of
--kernel when it exists). No shell is needed. DIR gets vmlinuz and
discovery.img.

Then the kernel and initramfs are uploaded and registered as image --image
(default "discovery"), with the command line fleetboot.edge={{edge}} plus
--cmdline; with --site, that site's unknown machines boot it (--unknown
discover, --discovery-image). --no-register only builds.`,
		Example: `  fleetboot discovery build --kernel /boot/vmlinuz-$(uname -r) --out ./discovery --site lab
  fleetboot discovery build --kernel vmlinuz --modules ./lib/modules/6.1.0-28-cloud-amd64 --out ./d --no-register`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kernel == "" || out == "" {
				return fmt.Errorf("discovery build: --kernel and --out are required")
			}
			if err := proto.ValidName("image", image); err != nil {
				return err
			}
			if noRegister && site != "" {
				return fmt.Errorf("discovery build: --site needs the image registered; drop --no-register")
			}
			// Split on the space alone, as the edge does: any other
			// whitespace is refused by the token check.
			for _, w := range strings.Split(cmdline, " ") {
				if w == "" {
					continue
				}
				if err := proto.ValidCmdlineToken(w); err != nil {
					return fmt.Errorf("discovery build: --cmdline: %w", err)
				}
			}
			if st, err := os.Stat(kernel); err != nil || !st.Mode().IsRegular() {
				return fmt.Errorf("discovery build: --kernel %s: not a readable file", kernel)
			}
			ver, err := initramfs.KernelVersion(kernel)
			if err != nil {
				return fmt.Errorf("discovery build: %w", err)
			}
			if modules == "" && ver != "" {
				if st, err := os.Stat(filepath.Join("/lib/modules", ver)); err == nil && st.IsDir() {
					modules = filepath.Join("/lib/modules", ver)
				}
			}
			if binary == "" {
				if binary, err = os.Executable(); err != nil {
					return fmt.Errorf("discovery build: %w", err)
				}
			}
			var names []string
			if len(extra) > 0 {
				names = append(initramfs.DefaultModules(), extra...)
			}
			res, err := initramfs.Build(initramfs.Config{Binary: binary, ModulesDir: modules, Modules: names})
			if err != nil {
				return fmt.Errorf("discovery build: %w", err)
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return fmt.Errorf("discovery build: %w", err)
			}
			initrdPath := filepath.Join(out, "discovery.img")
			if err := initramfs.WriteFile(initrdPath, res.Image); err != nil {
				return fmt.Errorf("discovery build: %w", err)
			}
			kdata, err := os.ReadFile(kernel)
			if err != nil {
				return fmt.Errorf("discovery build: %w", err)
			}
			kernelPath := filepath.Join(out, "vmlinuz")
			if err := initramfs.WriteFile(kernelPath, kdata); err != nil {
				return fmt.Errorf("discovery build: %w", err)
			}
			if ver == "" {
				ver = "unknown version"
			}
			fmt.Fprintf(a.stdout, "built %s: %s (%s uncompressed), kernel %s\n", initrdPath,
				bytesize.Format(int64(len(res.Image))), bytesize.Format(int64(res.Uncompressed)), ver)
			switch {
			case modules == "":
				fmt.Fprintln(a.stdout, "modules: none (no --modules and no /lib/modules for this kernel): its NIC and disk drivers must be built in")
			default:
				fmt.Fprintf(a.stdout, "modules from %s: %d (%s)\n", modules, len(res.Modules), strings.Join(res.Modules, " "))
				if len(res.Builtin) > 0 {
					fmt.Fprintf(a.stdout, "built into the kernel: %s\n", strings.Join(res.Builtin, " "))
				}
				if len(res.Missing) > 0 {
					fmt.Fprintf(a.stdout, "not found (not built for this kernel, or built in with no modules.builtin to say so): %s\n", strings.Join(res.Missing, " "))
				}
			}
			if noRegister {
				return nil
			}
			return a.registerDiscovery(cmd, kernelPath, initrdPath, image, site, arch, store, strings.TrimSpace("fleetboot.edge={{edge}} "+cmdline))
		},
	}
	f := cmd.Flags()
	f.StringVar(&kernel, "kernel", "", "kernel the discovery system boots (required)")
	f.StringVar(&out, "out", "", "directory for vmlinuz and discovery.img (required)")
	f.StringVar(&modules, "modules", "", "kernel module tree (/lib/modules/VERSION) or directory of .ko files (default: /lib/modules/VERSION of --kernel)")
	f.StringArrayVar(&extra, "module", nil, "another module to include besides the default NIC and disk drivers (repeatable)")
	f.StringVar(&binary, "binary", "", "static fleetboot binary to use as /init (default: this one)")
	f.StringVar(&image, "image", "discovery", "image name to register")
	f.StringVar(&site, "site", "", "site whose unknown machines boot it (sets --unknown discover and --discovery-image)")
	f.StringVar(&cmdline, "cmdline", "console=tty0 console=ttyS0,115200", "kernel command line besides fleetboot.edge={{edge}}")
	f.StringVar(&arch, "arch", "x86_64", "architecture of the kernel")
	f.StringVar(&store, "store", "", "artifact store URL (default: the coordinator's)")
	f.BoolVar(&noRegister, "no-register", false, "only build; do not upload or register")
	return cmd
}

// registerDiscovery uploads and registers the image, and points the site at
// it.
func (a *app) registerDiscovery(cmd *cobra.Command, kernelPath, initrdPath, name, site, arch, store, cmdline string) error {
	c, err := a.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx := cmd.Context()
	// The site first: a site that does not exist stops the command before
	// anything is uploaded.
	var s proto.Site
	if site != "" {
		if err := c.call(ctx, proto.APISiteGet, proto.NameRequest{V: proto.Version, Name: site}, &s); err != nil {
			return fmt.Errorf("discovery build: site %s: %w", site, err)
		}
	}
	st, err := a.uploadStore(ctx, c, store, "discovery build")
	if err != nil {
		return err
	}
	im := proto.Image{V: proto.Version, Name: name, Arch: arch, Cmdline: cmdline}
	for _, f := range []struct{ role, path string }{{proto.RoleKernel, kernelPath}, {proto.RoleInitrd, initrdPath}} {
		up, err := a.upload(ctx, st, f.role, f.path, "discovery build")
		if err != nil {
			return err
		}
		im.Artifacts = append(im.Artifacts, proto.Artifact{Role: f.role, Name: artifactName(f.role, f.path), Key: up.Key, Size: up.Size, SHA256: up.SHA256})
	}
	var saved proto.Image
	if err := c.call(ctx, proto.APIImageAdd, im, &saved); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "registered image %s (cmdline %q)\n", saved.Name, saved.Cmdline)
	if site == "" {
		fmt.Fprintf(a.stdout, "no --site: point a site at it with fleetboot site add NAME … --unknown discover --discovery-image %s\n", saved.Name)
		return nil
	}
	s.V = proto.Version
	s.Unknown = proto.UnknownDiscover
	s.DiscoveryImage = saved.Name
	if err := c.call(ctx, proto.APISiteAdd, s, &s); err != nil {
		return fmt.Errorf("discovery build: site %s: %w", site, err)
	}
	fmt.Fprintf(a.stdout, "site %s: unknown machines now boot %s (--unknown discover)\n", s.Name, saved.Name)
	return nil
}
