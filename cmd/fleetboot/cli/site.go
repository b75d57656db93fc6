package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/proto"
)

func (a *app) siteCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "site", Short: "Manage sites (subnets, ranges, DHCP mode)"})
	cmd.AddCommand(a.siteAddCmd(), a.siteLsCmd(), a.siteShowCmd(), a.siteRmCmd())
	return cmd
}

func (a *app) siteAddCmd() *cobra.Command {
	var (
		subnet, rng, router, domain, dhcp, unknown, discovery, loader string
		dns, extra                                                    []string
		lease                                                         time.Duration
		out                                                           string
	)
	cmd := &cobra.Command{
		Use:   "add NAME --subnet CIDR [--range A-B] [--router R] [--dns D]",
		Short: "Create or replace a site",
		Long: `Create a site, or replace its settings if it exists. A site is one place with
one or more IPv4 subnets; the edges of the site answer DHCP for them (directly
or through relays). Further subnets (VLANs behind relays) are given with
--network, as comma-separated key=value pairs.`,
		Example: `  fleetboot site add lab --subnet 10.0.0.0/24 --range 10.0.0.100-10.0.0.200 --router 10.0.0.1 --dns 10.0.0.1
  fleetboot site add branch --subnet 192.168.5.0/24 --dhcp proxy
  fleetboot site add dc1 --subnet 10.1.0.0/24 --range 10.1.0.50-10.1.0.250 \
      --network subnet=10.2.0.0/24,range=10.2.0.50-10.2.0.250,router=10.2.0.1`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			if subnet == "" {
				return fmt.Errorf("site add: --subnet is required")
			}
			n := proto.Network{Subnet: subnet, Router: router, DNS: dns, Domain: domain, LeaseSeconds: int(lease / time.Second)}
			if err := parseRange(rng, &n); err != nil {
				return err
			}
			site := proto.Site{V: proto.Version, Name: args[0], Networks: []proto.Network{n}, DHCP: dhcp, Unknown: unknown, DiscoveryImage: discovery, Loader: loader}
			for _, e := range extra {
				n, err := parseNetwork(e)
				if err != nil {
					return err
				}
				site.Networks = append(site.Networks, n)
			}
			saved, err := request[proto.Site](cmd.Context(), a, proto.APISiteAdd, site)
			if err != nil {
				return err
			}
			return a.printSites(out, []proto.Site{saved})
		},
	}
	f := cmd.Flags()
	f.StringVar(&subnet, "subnet", "", "IPv4 subnet in CIDR form (required)")
	f.StringVar(&rng, "range", "", "dynamic address pool START-END inside the subnet (empty: reservations only)")
	f.StringVar(&router, "router", "", "default gateway handed out by DHCP")
	f.StringSliceVar(&dns, "dns", nil, "DNS server(s) handed out by DHCP")
	f.StringVar(&domain, "domain", "", "domain name handed out by DHCP")
	f.DurationVar(&lease, "lease", time.Hour, "DHCP lease time")
	f.StringVar(&dhcp, "dhcp", proto.DHCPFull, "DHCP mode: full, reservations (known MACs only), proxy (another server hands out addresses) or off")
	f.StringVar(&unknown, "unknown", proto.UnknownIgnore, "what unknown machines get: ignore, discover (boot --discovery-image) or exit")
	f.StringVar(&discovery, "discovery-image", "", "image booted by unknown machines with --unknown discover")
	f.StringVar(&loader, "loader", "", "boot chain of the site's machines (fleetboot loader ls); empty: iPXE from the edge's --boot-dir")
	f.StringArrayVar(&extra, "network", nil, "another subnet: subnet=CIDR,range=A-B,router=R,dns=D (repeatable)")
	outputFlag(cmd, &out)
	return cmd
}

func parseRange(s string, n *proto.Network) error {
	if s == "" {
		return nil
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok || a == "" || b == "" {
		return fmt.Errorf("invalid --range %q: want START-END, e.g. 10.0.0.100-10.0.0.200", s)
	}
	n.RangeStart, n.RangeEnd = strings.TrimSpace(a), strings.TrimSpace(b)
	return nil
}

func parseNetwork(s string) (proto.Network, error) {
	var n proto.Network
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return n, fmt.Errorf("invalid --network %q: want key=value pairs", s)
		}
		switch k {
		case "subnet":
			n.Subnet = v
		case "range":
			if err := parseRange(v, &n); err != nil {
				return n, err
			}
		case "router":
			n.Router = v
		case "dns":
			n.DNS = append(n.DNS, v)
		case "domain":
			n.Domain = v
		case "lease":
			d, err := time.ParseDuration(v)
			if err != nil {
				return n, fmt.Errorf("invalid --network lease %q: %v", v, err)
			}
			n.LeaseSeconds = int(d / time.Second)
		default:
			return n, fmt.Errorf("invalid --network key %q: want subnet, range, router, dns, domain or lease", k)
		}
	}
	if n.Subnet == "" {
		return n, fmt.Errorf("invalid --network %q: subnet= is required", s)
	}
	return n, nil
}

func (a *app) siteLsCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "ls",
		Short:   "List sites",
		Example: "  fleetboot site ls -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			sites, err := request[[]proto.Site](cmd.Context(), a, proto.APISiteList, proto.ListRequest{V: proto.Version})
			if err != nil {
				return err
			}
			return a.printSites(out, sites)
		},
	}
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) siteShowCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "show NAME",
		Short:   "Show one site",
		Example: "  fleetboot site show lab -o json",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			site, err := request[proto.Site](cmd.Context(), a, proto.APISiteGet, proto.NameRequest{V: proto.Version, Name: args[0]})
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(a.stdout, site)
			}
			return a.printSites(out, []proto.Site{site})
		},
	}
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) siteRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Short:   "Remove a site that has no hosts",
		Example: "  fleetboot site rm lab",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := request[struct{}](cmd.Context(), a, proto.APISiteRm, proto.NameRequest{V: proto.Version, Name: args[0]}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "site %s removed\n", args[0])
			return nil
		},
	}
}

func (a *app) printSites(out string, sites []proto.Site) error {
	if out == "json" {
		if sites == nil {
			sites = []proto.Site{}
		}
		return writeJSON(a.stdout, sites)
	}
	var rows [][]string
	for _, s := range sites {
		for i, n := range s.Networks {
			name, dhcp, unknown := s.Name, s.DHCP, s.Unknown
			if i > 0 {
				name, dhcp, unknown = "", "", ""
			}
			rng := ""
			if n.RangeStart != "" {
				rng = n.RangeStart + "-" + n.RangeEnd
			}
			rows = append(rows, []string{name, dhcp, unknown, n.Subnet, rng, n.Router, strings.Join(n.DNS, ","), strconv.Itoa(n.LeaseSeconds) + "s"})
		}
	}
	return table(a.stdout, []string{"SITE", "DHCP", "UNKNOWN", "SUBNET", "RANGE", "ROUTER", "DNS", "LEASE"}, rows)
}

// exactArgs is cobra.ExactArgs with a message that names what is missing.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s: want %s, got %d argument(s) (see --help)", cmd.CommandPath(), what, len(args))
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return fmt.Errorf("%s: want %s, got %d argument(s) (see --help)", cmd.CommandPath(), what, len(args))
		}
		return nil
	}
}
