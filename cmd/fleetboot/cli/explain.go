package cli

import (
	"errors"
	"fmt"
	"strings"

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
	Firmware   dhcpStep          `json:"firmware"`
	IPXE       dhcpStep          `json:"ipxe"`
	Decision   httpboot.Decision `json:"decision"`
	ScriptText string            `json:"script"`
}

type dhcpStep struct {
	BootFile string `json:"boot_file"`
	TFTP     bool   `json:"tftp"`
	Reason   string `json:"reason"`
}

func (a *app) explainCmd() *cobra.Command {
	var arch uint16
	var site, edgeURL, out string
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
			if err := checkOutput(out); err != nil {
				return err
			}
			mac, err := proto.ParseMAC(args[0])
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
			if imageName != "" {
				var im proto.Image
				if err := c.call(ctx, proto.APIImageGet, proto.NameRequest{V: proto.Version, Name: imageName}, &im); err == nil {
					st.PutImage(im)
				}
			}
			ex.Admission = admission(s, ex.Known)
			m := dhcp.Machine{MAC: mac, Arch: arch, HasArch: true, IsPXE: true}
			if arch == dhcp.ArchEFIx64HTTP {
				m.IsPXE, m.IsHTTPClient = false, true
			}
			b := dhcp.BootFor(m, dhcp.BootFiles{}, edgeURL)
			ex.Firmware = dhcpStep{b.File, b.TFTP, b.Reason}
			m.IsIPXE = true
			b = dhcp.BootFor(m, dhcp.BootFiles{}, edgeURL)
			ex.IPXE = dhcpStep{b.File, b.TFTP, b.Reason}
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
			fmt.Fprintf(a.stdout, "machine   %s: %s\n", mac, known)
			fmt.Fprintf(a.stdout, "dhcp      site %s, mode %s: %s\n", s.Name, s.DHCP, ex.Admission)
			fmt.Fprintf(a.stdout, "firmware  arch %d gets %s (%s)\n", arch, orNone(ex.Firmware.BootFile), ex.Firmware.Reason)
			fmt.Fprintf(a.stdout, "ipxe      gets %s (%s)\n", orNone(ex.IPXE.BootFile), ex.IPXE.Reason)
			fmt.Fprintf(a.stdout, "script    %s: %s\n\n%s", ex.Decision.Action, ex.Decision.Reason, ex.ScriptText)
			return nil
		},
	}
	cmd.Flags().Uint16Var(&arch, "arch", 0, "client architecture, DHCP option 93 (0 BIOS, 7 UEFI x64, 11 arm64, 16 UEFI HTTP)")
	cmd.Flags().StringVar(&site, "site", "", "site to assume for an unknown MAC")
	cmd.Flags().StringVar(&edgeURL, "edge-url", "http://EDGE:8080", "edge base URL to show in boot files and scripts")
	outputFlag(cmd, &out)
	return cmd
}

// admission says whether the site's DHCP answers the machine at all.
func admission(s proto.Site, known bool) string {
	switch {
	case s.DHCP == proto.DHCPOff:
		return "no answer: DHCP is off at this site"
	case s.DHCP == proto.DHCPProxy:
		return "proxy offer with boot information only (PXE/HTTP clients); the site's own server gives the address"
	case known:
		return "answered: known host"
	case s.DHCP == proto.DHCPReservations:
		return "no answer: reservations-only mode answers known MACs only"
	case s.Unknown == proto.UnknownDiscover:
		return "answered: unknown host, discovery image " + s.DiscoveryImage
	case s.Unknown == proto.UnknownExit:
		return "answered: unknown host, the script exits to the next boot device"
	default:
		return "no answer: unknown hosts are ignored at this site"
	}
}

func orNone(s string) string {
	if s == "" {
		return "no boot file"
	}
	return s
}
