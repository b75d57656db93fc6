package cli

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/proto"
)

func (a *app) hostCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "host", Short: "Manage machines: which image each MAC boots"})
	cmd.AddCommand(a.hostSetCmd(), a.hostLsCmd(), a.hostShowCmd(), a.hostRmCmd(), a.hostTimelineCmd(), a.hostBMCCmd(), a.hostPowerCmd())
	return cmd
}

func (a *app) hostSetCmd() *cobra.Command {
	var (
		site, ip, hostname, image, loader, state, out string
		vars, unset, extra                            []string
		once                                          bool
	)
	cmd := &cobra.Command{
		Use:   "set MAC [--image NAME] [--site S] [--ip A] [--hostname H] [--var k=v] [--once]",
		Short: "Create a host or change some of its settings",
		Long: `Create a host, or change only the given settings of an existing one. MACs are
accepted as aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff or aabbccddeeff.
--site may be left out when there is exactly one site. --ip reserves an address
inside the site's subnets (--ip '' removes it). --state local makes the machine
boot from its disk; --once switches it to local by itself after its installer
reports done.`,
		Example: `  fleetboot host set 52:54:00:12:34:56 --image debian12 --site lab --ip 10.0.0.20 --hostname web1
  fleetboot host set 52:54:00:12:34:56 --var role=db --var disk=/dev/vda
  fleetboot host set 52:54:00:12:34:56 --state local`,
		Args: exactArgs(1, "MAC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			mac, err := macArg(out, args)
			if err != nil {
				return err
			}
			req := proto.HostSetRequest{V: proto.Version, MAC: mac}
			f := cmd.Flags()
			set := func(name string, v string) *string {
				if f.Changed(name) {
					return &v
				}
				return nil
			}
			req.Site, req.IP, req.Hostname, req.Image, req.State = set("site", site), set("ip", ip), set("hostname", hostname), set("image", image), set("state", state)
			req.Loader = set("loader", loader)
			if f.Changed("once") {
				req.Once = &once
			}
			if f.Changed("extra-mac") {
				req.ExtraMACs = &extra
			}
			for _, kv := range vars {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("invalid --var %q: want NAME=VALUE", kv)
				}
				if req.Vars == nil {
					req.Vars = map[string]string{}
				}
				req.Vars[k] = v
			}
			req.UnsetVars = unset
			h, err := request[proto.Host](cmd.Context(), a, proto.APIHostSet, req)
			if err != nil {
				return err
			}
			return a.printHosts(out, []proto.Host{h})
		},
	}
	f := cmd.Flags()
	f.StringVar(&site, "site", "", "site the machine is at (optional when there is one site)")
	f.StringVar(&image, "image", "", "image to boot")
	f.StringVar(&loader, "loader", "", "boot chain (fleetboot loader ls); '' uses the site's")
	f.StringVar(&ip, "ip", "", "reserved IPv4 address ('' removes the reservation)")
	f.StringVar(&hostname, "hostname", "", "host name (DHCP option 12, {{hostname}} in command lines)")
	f.StringVar(&state, "state", "", "boot: boot the image; local: boot from local disk")
	f.BoolVar(&once, "once", false, "switch to --state local after the installer reports done")
	f.StringArrayVar(&vars, "var", nil, "template variable NAME=VALUE for the command line (repeatable)")
	f.StringArrayVar(&unset, "unset-var", nil, "remove a template variable (repeatable)")
	f.StringSliceVar(&extra, "extra-mac", nil, "MACs of the machine's other NICs (replaces the list)")
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) hostLsCmd() *cobra.Command {
	var site, out string
	cmd := &cobra.Command{
		Use:     "ls [--site S]",
		Short:   "List hosts",
		Example: "  fleetboot host ls --site lab -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			hosts, err := request[[]proto.Host](cmd.Context(), a, proto.APIHostList, proto.ListRequest{V: proto.Version, Site: site})
			if err != nil {
				return err
			}
			return a.printHosts(out, hosts)
		},
	}
	cmd.Flags().StringVar(&site, "site", "", "only hosts of this site")
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) hostShowCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "show MAC",
		Short:   "Show one host (found by any of its MACs)",
		Example: "  fleetboot host show 52:54:00:12:34:56 -o json",
		Args:    exactArgs(1, "MAC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			mac, err := macArg(out, args)
			if err != nil {
				return err
			}
			h, err := request[proto.Host](cmd.Context(), a, proto.APIHostGet, proto.MACRequest{V: proto.Version, MAC: mac})
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(a.stdout, h)
			}
			if err := a.printHosts(out, []proto.Host{h}); err != nil {
				return err
			}
			a.printBMC(h)
			return nil
		},
	}
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) hostRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm MAC",
		Short:   "Remove a host",
		Example: "  fleetboot host rm 52:54:00:12:34:56",
		Args:    exactArgs(1, "MAC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			mac, err := proto.ParseMAC(args[0])
			if err != nil {
				return err
			}
			if _, err := request[struct{}](cmd.Context(), a, proto.APIHostRm, proto.MACRequest{V: proto.Version, MAC: mac}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "host %s removed\n", mac)
			return nil
		},
	}
}

func (a *app) printHosts(out string, hosts []proto.Host) error {
	if out == "json" {
		if hosts == nil {
			hosts = []proto.Host{}
		}
		return writeJSON(a.stdout, hosts)
	}
	var rows [][]string
	for _, h := range hosts {
		var vars []string
		for _, k := range slices.Sorted(maps.Keys(h.Vars)) {
			vars = append(vars, k+"="+h.Vars[k])
		}
		state := h.State
		if h.Once {
			state += " (once)"
		}
		rows = append(rows, []string{h.MAC, h.Site, h.Image, state, h.IP, h.Hostname, strings.Join(vars, " "), strings.Join(h.ExtraMACs, ",")})
	}
	return table(a.stdout, []string{"MAC", "SITE", "IMAGE", "STATE", "IP", "HOSTNAME", "VARS", "EXTRA MACS"}, rows)
}
