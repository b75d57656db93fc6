package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/edge/dhcp"
	"github.com/fleetboot/fleetboot/edge/httpboot"
	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/proto"
)

// explanation is what `fleetboot explain` reports, step by step.
type explanation struct {
	MAC        string            `json:"mac"`
	Known      bool              `json:"known"`
	Site       string            `json:"site"`
	DHCPMode   string            `json:"dhcp_mode"`
	Admission  string            `json:"admission"`
	Loader     string            `json:"loader,omitempty"`
	Firmware   dhcpStep          `json:"firmware"`
	Chain      []chainStep       `json:"chain,omitempty"`
	IPXE       dhcpStep          `json:"ipxe"`
	Decision   httpboot.Decision `json:"decision"`
	ScriptText string            `json:"script"`
	// Policy says which policy claimed the machine (or why none did), for
	// hosts and for machines waiting discovered.
	Policy *proto.PolicyDecision `json:"policy,omitempty"`
}

type dhcpStep struct {
	BootFile string `json:"boot_file"`
	TFTP     bool   `json:"tftp"`
	Reason   string `json:"reason"`
}

func (a *app) explainCmd() *cobra.Command {
	var arch uint16
	var site, edgeURL, userClass, out string
	cmd := &cobra.Command{
		Use:   "explain MAC [--arch N] [--site S]",
		Short: "Show what a machine would boot now, and why",
		Long: `Walk a machine through the boot chain as the edge would right now, from the
desired state at the coordinator: whether DHCP answers it, which boot file its
firmware gets for the given client architecture (DHCP option 93: 0 BIOS,
7/9 UEFI x64, 11 UEFI arm64, 16 UEFI HTTP), what iPXE gets when it asks again,
and the script the edge renders for it.`,
		Example: `  fleetboot explain 52:54:00:12:34:56
  fleetboot explain 52:54:00:12:34:56 --arch 7 -o json`,
		Args: exactArgs(1, "MAC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			mac, err := macArg(out, args)
			if err != nil {
				return err
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			st := state.New()
			ex := explanation{MAC: mac}
			var h proto.Host
			switch err := c.call(ctx, proto.APIHostGet, proto.MACRequest{V: proto.Version, MAC: mac}, &h); {
			case err == nil:
				ex.Known = true
				st.PutHost(h)
				if site == "" {
					site = h.Site
				}
			case !strings.HasSuffix(err.Error(), "not found"):
				return err
			}
			var pd proto.PolicyDecision
			switch err := c.call(ctx, proto.APIPolicyExplain, proto.MACRequest{V: proto.Version, MAC: mac}, &pd); {
			case err == nil:
				ex.Policy = &pd
				if site == "" {
					site = pd.Site // a machine waiting discovered
				}
			case !strings.HasSuffix(err.Error(), "not found"):
				return err
			}
			if site == "" {
				return errors.New("explain: the MAC is unknown; give --site to see what its site does with unknown machines")
			}
			var s proto.Site
			if err := c.call(ctx, proto.APISiteGet, proto.NameRequest{V: proto.Version, Name: site}, &s); err != nil {
				return err
			}
			st.SetSite(s)
			ex.Site, ex.DHCPMode = s.Name, s.DHCP
			imageName := s.DiscoveryImage
			if ex.Known {
				imageName = h.Image
			}
			var image *proto.Image
			if imageName != "" {
				var im proto.Image
				if err := c.call(ctx, proto.APIImageGet, proto.NameRequest{V: proto.Version, Name: imageName}, &im); err == nil {
					st.PutImage(im)
					image = &im
				}
			}
			loaders := loaderMap{}
			var loader *proto.Loader
			if ex.Loader = dhcp.LoaderFor(h, ex.Known, s); ex.Loader != "" {
				var l proto.Loader
				if err := c.call(ctx, proto.APILoaderGet, proto.NameRequest{V: proto.Version, Name: ex.Loader}, &l); err != nil {
					return err
				}
				loaders[l.Name], loader = l, &l
			}
			fw, err := dhcpAnswer(ctx, st, loaders, s, mac, arch, userClass == "iPXE", edgeURL)
			if err != nil {
				return err
			}
			ex.Chain = bootChain(fw, loader, arch, image, edgeURL)
			ipxe, err := dhcpAnswer(ctx, st, loaders, s, mac, arch, true, edgeURL)
			if err != nil {
				return err
			}
			ex.Firmware, ex.IPXE = fw, ipxe
			ex.Admission = fw.Reason
			buildarch, platform := "x86_64", "efi"
			switch arch {
			case dhcp.ArchBIOS:
				buildarch, platform = "i386", "pcbios"
			case dhcp.ArchEFIarm64:
				buildarch = "arm64"
			}
			sc, err := httpboot.Render(httpboot.InputFor(st, edgeURL, mac, buildarch, platform, "", 0))
			if err != nil {
				return fmt.Errorf("explain: %w", err)
			}
			ex.Decision, ex.ScriptText = sc.Decision, sc.Text
			if out == "json" {
				return writeJSON(a.stdout, ex)
			}
			known := "unknown to the coordinator"
			if ex.Known {
				known = fmt.Sprintf("host at site %s, image %q, state %s", h.Site, h.Image, h.State)
			}
			if ex.Policy != nil && ex.Policy.State == proto.StateDiscovered {
				known = fmt.Sprintf("discovered at site %s, waiting for a policy", ex.Policy.Site)
			}
			fmt.Fprintf(a.stdout, "machine   %s: %s\n", mac, known)
			printPolicy(a.stdout, ex.Policy)
			fmt.Fprintf(a.stdout, "dhcp      site %s, mode %s\n", s.Name, s.DHCP)
			fmt.Fprintf(a.stdout, "firmware  arch %d: %s; boot file %s\n", arch, ex.Firmware.Reason, orNone(ex.Firmware.BootFile))
			fmt.Fprintf(a.stdout, "ipxe      %s; boot file %s\n", ex.IPXE.Reason, orNone(ex.IPXE.BootFile))
			printChain(a.stdout, ex.Loader, ex.Chain)
			if len(ex.Chain) > 0 && !usesIPXE(ex.Chain) {
				fmt.Fprintf(a.stdout, "script    none: this chain ends in GRUB, which reads grub.cfg, not the edge's iPXE script\n")
				return nil
			}
			fmt.Fprintf(a.stdout, "script    %s: %s\n\n%s", ex.Decision.Action, ex.Decision.Reason, ex.ScriptText)
			return nil
		},
	}
	cmd.Flags().Uint16Var(&arch, "arch", 0, "client architecture, DHCP option 93 (0 BIOS, 7 UEFI x64, 11 arm64, 16 UEFI HTTP)")
	cmd.Flags().StringVar(&site, "site", "", "site to assume for an unknown MAC")
	cmd.Flags().StringVar(&userClass, "user-class", "", "DHCP user class of the first request: iPXE when the NIC ROM is iPXE already (QEMU, many servers)")
	cmd.Flags().StringVar(&edgeURL, "edge-url", "http://EDGE:8080", "edge base URL to show in boot files and scripts")
	outputFlag(cmd, &out)
	return cmd
}

// dhcpAnswer runs the edge's own DHCP handler on a DISCOVER such as the
// machine's firmware (or iPXE) sends, against the desired state in st, and
// says what came back. The edge's address is assumed to be the first host
// address of the site's first subnet.
func dhcpAnswer(ctx context.Context, st *state.State, loaders dhcp.LoaderSource, site proto.Site, mac string, arch uint16, ipxe bool, edgeURL string) (dhcpStep, error) {
	if len(site.Networks) == 0 {
		return dhcpStep{Reason: "the site has no subnet"}, nil
	}
	prefix, err := netip.ParsePrefix(site.Networks[0].Subnet)
	if err != nil {
		return dhcpStep{}, fmt.Errorf("explain: site subnet: %w", err)
	}
	leases, err := dhcp.OpenLeases("")
	if err != nil {
		return dhcpStep{}, err
	}
	h, err := dhcp.NewHandler(dhcp.HandlerConfig{
		ServerIP: prefix.Addr().Next().AsSlice(), HTTPBase: edgeURL, Policy: st, Leases: leases, Loaders: loaders,
	})
	if err != nil {
		return dhcpStep{}, fmt.Errorf("explain: %w", err)
	}
	hw, _ := net.ParseMAC(mac)
	vendor := fmt.Sprintf("PXEClient:Arch:%05d:UNDI:003016", arch)
	if arch == dhcp.ArchEFIx64HTTP {
		vendor = fmt.Sprintf("HTTPClient:Arch:%05d:UNDI:003016", arch)
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.Arch(arch))),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(vendor)),
	}
	if ipxe {
		mods = append(mods, dhcpv4.WithUserClass("iPXE", false))
	}
	req, err := dhcpv4.NewDiscovery(hw, mods...)
	if err != nil {
		return dhcpStep{}, fmt.Errorf("explain: %w", err)
	}
	rep, err := h.Handle(ctx, req, dhcp.Input{Port: 67})
	if err != nil {
		return dhcpStep{}, fmt.Errorf("explain: %w", err)
	}
	if rep == nil {
		return dhcpStep{Reason: "no answer: " + noAnswer(site, st, mac)}, nil
	}
	file := rep.BootFileNameOption()
	if file == "" {
		file = rep.BootFileName
	}
	step := dhcpStep{BootFile: file, TFTP: file != "" && !strings.Contains(file, "://"), Reason: "answered"}
	if !rep.YourIPAddr.IsUnspecified() {
		step.Reason += ", offers " + rep.YourIPAddr.String()
	}
	if file == "" {
		step.Reason += " without a boot file (unknown architecture?)"
	}
	return step, nil
}

// noAnswer says why the handler stayed silent.
func noAnswer(s proto.Site, st *state.State, mac string) string {
	_, known := st.Host(mac)
	switch {
	case s.DHCP == proto.DHCPOff:
		return "DHCP is off at this site"
	case known:
		return "the pool has no free address for it"
	case s.DHCP == proto.DHCPReservations:
		return "reservations-only mode answers known MACs only"
	default:
		return "unknown hosts are ignored at this site (--unknown " + s.Unknown + ")"
	}
}

// printPolicy prints which policy decided, and every policy's verdict.
func printPolicy(w io.Writer, d *proto.PolicyDecision) {
	if d == nil {
		return
	}
	fmt.Fprintf(w, "policy    %s\n", d.Reason)
	for _, v := range d.Verdicts {
		mark := "no "
		if v.Matched {
			mark = "yes"
		}
		if v.Policy == d.Policy {
			mark = "won"
		}
		fmt.Fprintf(w, "  %s %s (priority %d): %s\n", mark, v.Policy, v.Priority, v.Reason)
	}
}

// printChain prints the boot chain file by file with its transport.
func printChain(w io.Writer, loader string, steps []chainStep) {
	if loader == "" {
		loader = "default ipxe"
	}
	fmt.Fprintf(w, "chain     loader %s\n", loader)
	for i, st := range steps {
		fmt.Fprintf(w, "  %d. %-4s  %s  (%s)\n", i+1, st.Transport, st.File, st.Note)
	}
}

func orNone(s string) string {
	if s == "" {
		return "no boot file"
	}
	return s
}
