package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/selector"
)

func (a *app) hostCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "host", Short: "Manage machines: which image each MAC boots"})
	cmd.AddCommand(a.hostSetCmd(), a.hostLsCmd(), a.hostShowCmd(), a.hostRmCmd(), a.hostTimelineCmd(), a.hostLabelCmd(), a.hostUnlabelCmd(), a.hostImportCmd(),
		a.hostBMCCmd(), a.hostPowerCmd())
	return cmd
}

func (a *app) hostSetCmd() *cobra.Command {
	var (
		site, ip, hostname, image, loader, template, state, out, sel string
		vars, unset, extra                                           []string
		once, dryRun                                                 bool
	)
	cmd := &cobra.Command{
		Use:   "set MAC|--selector SEL [--image NAME] [--site S] [--ip A] [--hostname H] [--var k=v] [--once]",
		Short: "Create a host or change some of its settings",
		Long: `Create a host, or change only the given settings of an existing one. MACs are
accepted as aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff or aabbccddeeff.
--site may be left out when there is exactly one site. --ip reserves an address
inside the site's subnets (--ip '' removes it). --state local makes the machine
boot from its disk; --once switches it to local by itself after its installer
reports done.

--selector SEL --image NAME instead gives every host the selector matches the
image, in one request (--site narrows it to one site); --dry-run prints how
many match, and which, without changing them. Selectors are those of
fleetboot policy add (labels.rack=r12,facts.memory_gib>=64).`,
		Example: `  fleetboot host set 52:54:00:12:34:56 --image debian12 --site lab --ip 10.0.0.20 --hostname web1
  fleetboot host set 52:54:00:12:34:56 --var role=db --var disk=/dev/vda
  fleetboot host set 52:54:00:12:34:56 --state local
  fleetboot host set --selector 'labels.rack=r12' --image debian13 --dry-run`,
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("selector") {
				return exactArgs(0, "no MAC with --selector")(cmd, args)
			}
			return exactArgs(1, "MAC")(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("selector") {
				return a.hostSetSelector(cmd, sel, site, image, out, dryRun)
			}
			if dryRun {
				return fmt.Errorf("--dry-run goes with --selector")
			}
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
			req.Loader, req.Template = set("loader", loader), set("template", template)
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
	f.StringVar(&template, "template", "", "install template the edge renders for it at {{template_url}} (fleetboot template ls); '' removes it")
	f.StringVar(&ip, "ip", "", "reserved IPv4 address ('' removes the reservation)")
	f.StringVar(&hostname, "hostname", "", "host name (DHCP option 12, {{hostname}} in command lines)")
	f.StringVar(&state, "state", "", "boot: boot the image; local: boot from local disk")
	f.BoolVar(&once, "once", false, "switch to --state local after the installer reports done")
	f.StringArrayVar(&vars, "var", nil, "template variable NAME=VALUE for the command line (repeatable)")
	f.StringArrayVar(&unset, "unset-var", nil, "remove a template variable (repeatable)")
	f.StringSliceVar(&extra, "extra-mac", nil, "MACs of the machine's other NICs (replaces the list)")
	f.StringVar(&sel, "selector", "", "change every host this selector matches (with --image) instead of one MAC")
	f.BoolVar(&dryRun, "dry-run", false, "with --selector: print how many hosts match, and which, and change nothing")
	outputFlag(cmd, &out)
	return cmd
}

// hostSetSelector is host set --selector: one request for every match.
func (a *app) hostSetSelector(cmd *cobra.Command, sel, site, image, out string, dryRun bool) error {
	if err := checkOutput(out); err != nil {
		return err
	}
	for _, name := range []string{"ip", "hostname", "loader", "template", "state", "once", "var", "unset-var", "extra-mac"} {
		if cmd.Flags().Changed(name) {
			return fmt.Errorf("--%s does not go with --selector (it changes the image of many hosts)", name)
		}
	}
	if !cmd.Flags().Changed("image") || image == "" {
		return fmt.Errorf("--selector needs --image NAME")
	}
	if _, err := selector.Parse(sel); err != nil {
		return fmt.Errorf("invalid --selector: %v", err)
	}
	rep, err := request[proto.HostBulkSetReply](cmd.Context(), a, proto.APIHostBulkSet, proto.HostBulkSetRequest{V: proto.Version, Selector: sel, Site: site, Image: image, DryRun: dryRun})
	if err != nil {
		return err
	}
	if out == "json" {
		return writeJSON(a.stdout, rep)
	}
	if dryRun {
		fmt.Fprintf(a.stdout, "%d host(s) match; nothing changed (--dry-run)\n", len(rep.Matched))
		for _, m := range rep.Matched {
			fmt.Fprintln(a.stdout, m)
		}
		return nil
	}
	a.printProblems(rep.Refused)
	fmt.Fprintf(a.stdout, "%d host(s) match: changed %d, unchanged %d, refused %d\n", len(rep.Matched), rep.Changed, rep.Unchanged, len(rep.Refused))
	if len(rep.Refused) > 0 {
		return fmt.Errorf("%d host(s) changed concurrently and were refused; run it again", len(rep.Refused))
	}
	return nil
}

func (a *app) hostLsCmd() *cobra.Command {
	var site, state, out string
	cmd := &cobra.Command{
		Use:   "ls [--site S] [--state boot|local|discovered]",
		Short: "List hosts, or the machines waiting discovered",
		Long: `List hosts. --state discovered lists instead the machines that booted the
discovery system at a site with --unknown discover, reported their facts, and
wait for a policy to claim them or an admin to assign them.`,
		Example: `  fleetboot host ls --site lab -o json
  fleetboot host ls --state discovered`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			switch state {
			case "", proto.StateBoot, proto.StateLocal:
			case proto.StateDiscovered:
				ds, err := request[[]proto.Discovered](cmd.Context(), a, proto.APIDiscoveredList, proto.ListRequest{V: proto.Version, Site: site})
				if err != nil {
					return err
				}
				return a.printDiscovered(out, ds)
			default:
				return fmt.Errorf("invalid --state %q: want boot, local or discovered", state)
			}
			hosts, err := request[[]proto.Host](cmd.Context(), a, proto.APIHostList, proto.ListRequest{V: proto.Version, Site: site})
			if err != nil {
				return err
			}
			if state != "" {
				hosts = slices.DeleteFunc(hosts, func(h proto.Host) bool { return h.State != state })
			}
			return a.printHosts(out, hosts)
		},
	}
	cmd.Flags().StringVar(&site, "site", "", "only hosts of this site")
	cmd.Flags().StringVar(&state, "state", "", "only hosts in this state: boot, local, or discovered (machines waiting for a policy)")
	outputFlag(cmd, &out)
	return cmd
}

// printDiscovered lists waiting machines with a summary of their facts.
func (a *app) printDiscovered(out string, ds []proto.Discovered) error {
	if out == "json" {
		if ds == nil {
			ds = []proto.Discovered{}
		}
		return writeJSON(a.stdout, ds)
	}
	var rows [][]string
	for _, d := range ds {
		var f proto.Facts
		_ = json.Unmarshal(d.Facts, &f) // a report that is no proto.Facts shows empty columns
		var disks []string
		for _, dk := range f.Disks {
			disks = append(disks, fmt.Sprintf("%s:%gG", dk.Name, dk.SizeGiB))
		}
		rows = append(rows, []string{d.MAC, d.Site, strconv.Itoa(f.CPUs), fmt.Sprintf("%gG", f.MemoryGiB), strings.Join(disks, ","),
			strconv.Itoa(len(f.NICs)), strings.TrimSpace(f.DMI.Vendor + " " + f.DMI.Product), d.Last.Format("15:04:05"), d.Decision})
	}
	return table(a.stdout, []string{"MAC", "SITE", "CPUS", "MEMORY", "DISKS", "NICS", "MACHINE", "LAST REPORT", "DECISION"}, rows)
}

func (a *app) hostShowCmd() *cobra.Command {
	var out string
	var facts bool
	cmd := &cobra.Command{
		Use:   "show MAC [--facts]",
		Short: "Show one host (found by any of its MACs), or a discovered machine with --facts",
		Long: `Show one host. --facts adds the facts the machine last reported (from the
discovery system or its installer), and shows a machine that is still waiting
discovered as well.`,
		Example: `  fleetboot host show 52:54:00:12:34:56 -o json
  fleetboot host show 52:54:00:12:34:56 --facts`,
		Args: exactArgs(1, "MAC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			mac, err := macArg(out, args)
			if err != nil {
				return err
			}
			if facts {
				fr, err := request[proto.FactsReply](cmd.Context(), a, proto.APIFactsGet, proto.MACRequest{V: proto.Version, MAC: mac})
				if err != nil {
					return err
				}
				return a.printFacts(out, fr)
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
	cmd.Flags().BoolVar(&facts, "facts", false, "also show the facts it reported (and find discovered machines)")
	outputFlag(cmd, &out)
	return cmd
}

// printFacts shows a machine and its facts, indented JSON as reported.
func (a *app) printFacts(out string, fr proto.FactsReply) error {
	if out == "json" {
		return writeJSON(a.stdout, fr)
	}
	if fr.Host != nil {
		if err := a.printHosts(out, []proto.Host{*fr.Host}); err != nil {
			return err
		}
	} else if d := fr.Discovered; d != nil {
		fmt.Fprintf(a.stdout, "%s: discovered at site %s, %d report(s) since %s, last %s\n", d.MAC, d.Site, d.Reports,
			d.First.Format(time.RFC3339), d.Last.Format(time.RFC3339))
		if d.Decision != "" {
			fmt.Fprintf(a.stdout, "decision: %s\n", d.Decision)
		}
	}
	if len(fr.Facts) == 0 {
		fmt.Fprintln(a.stdout, "facts: none reported")
		return nil
	}
	var b bytes.Buffer
	if err := json.Indent(&b, fr.Facts, "", "  "); err != nil {
		return fmt.Errorf("malformed facts from the coordinator: %v", err)
	}
	fmt.Fprintf(a.stdout, "facts:\n%s\n", b.String())
	return nil
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
		rows = append(rows, []string{h.MAC, h.Site, h.Image, state, h.IP, h.Hostname, joinMap(h.Labels), strings.Join(vars, " "), strings.Join(h.ExtraMACs, ",")})
	}
	return table(a.stdout, []string{"MAC", "SITE", "IMAGE", "STATE", "IP", "HOSTNAME", "LABELS", "VARS", "EXTRA MACS"}, rows)
}

// joinMap prints k=v pairs in key order, comma-separated (as --labels takes them).
func joinMap(m map[string]string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, k+"="+m[k])
	}
	return strings.Join(out, ",")
}

func (a *app) hostLabelCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "label MAC KEY=VALUE...",
		Short: "Set labels on a host",
		Long: `Set or replace labels of a host. Selectors read them as labels.KEY (policy add
--match, host set --selector). A key is letters, digits, '.', '_', '-' or '/';
a value is one word of letters, digits, '.', '_' or '-'.`,
		Example: `  fleetboot host label 52:54:00:12:34:56 rack=r12 role=web`,
		Args:    minArgs(2, "MAC KEY=VALUE..."),
		RunE: func(cmd *cobra.Command, args []string) error {
			mac, err := macArg(out, args)
			if err != nil {
				return err
			}
			labels, err := proto.ParseLabels(args[1:]...)
			if err != nil {
				return err
			}
			h, err := request[proto.Host](cmd.Context(), a, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: mac, Labels: labels})
			if err != nil {
				return err
			}
			return a.printHosts(out, []proto.Host{h})
		},
	}
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) hostUnlabelCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "unlabel MAC KEY...",
		Short:   "Remove labels from a host",
		Example: `  fleetboot host unlabel 52:54:00:12:34:56 role`,
		Args:    minArgs(2, "MAC KEY..."),
		RunE: func(cmd *cobra.Command, args []string) error {
			mac, err := macArg(out, args)
			if err != nil {
				return err
			}
			for _, k := range args[1:] {
				if strings.Contains(k, "=") {
					return fmt.Errorf("unlabel takes label keys, not %q (host label sets values)", k)
				}
			}
			h, err := request[proto.Host](cmd.Context(), a, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: mac, UnsetLabels: args[1:]})
			if err != nil {
				return err
			}
			return a.printHosts(out, []proto.Host{h})
		},
	}
	outputFlag(cmd, &out)
	return cmd
}
