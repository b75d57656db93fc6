package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/selector"
)

func (a *app) policyCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "policy", Short: "Manage policies: which discovered machines become which hosts"})
	cmd.AddCommand(a.policyAddCmd(), a.policyLsCmd(), a.policyShowCmd(), a.policyRmCmd(), a.policyEnableCmd(true), a.policyEnableCmd(false))
	return cmd
}

func (a *app) policyAddCmd() *cobra.Command {
	var p proto.Policy
	var labels []string
	var out string
	cmd := &cobra.Command{
		Use:   "add NAME --match SELECTOR --image IMAGE [--template T] [--labels k=v] [--max N] [--priority P] [--site S]",
		Short: "Add (or replace) a policy",
		Long: `Add a policy, or replace the one of that name. When a discovered machine reports
its facts, or when a policy is added or enabled, the enabled policies are tried
highest --priority first (then by name): the first whose selector matches the
machine's labels and facts, and which has claimed fewer than --max machines
(0: no limit), claims it. The machine becomes a host with the policy's image,
labels and template, and the discovery system reboots into it. A machine no
policy matches waits, discovered, until one does or an admin assigns it.

A selector is comma-separated requirements, all of which must hold:
  labels.rack=r12            a label
  facts.memory_gib>=64       a fact (= != >= <= > <)
  facts.dmi.vendor=QEMU      a nested fact
  facts.disks[0].size_gib>100  a list element
  facts.nics>=2              a list compares by its length
  site=lab, image, !labels.x  host fields, presence and absence
A value holding a comma is double-quoted: facts.dmi.vendor="Dell, Inc.".
--max is exact even with several coordinators: a claim takes its place with
compare-and-set. Removing a host a policy created gives its place back.`,
		Example: `  fleetboot policy add r12-db --match 'labels.rack=r12,facts.memory_gib>=64' --image debian12 --template db --labels role=db --max 4 --priority 10
  fleetboot policy add qemu --match 'facts.dmi.vendor=QEMU' --image debian12 --site lab`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			p.V, p.Name = proto.Version, args[0]
			if _, err := selector.Parse(p.Match); err != nil {
				return fmt.Errorf("invalid --match: %v", err)
			}
			l, err := proto.ParseLabels(labels...)
			if err != nil {
				return err
			}
			p.Labels = l
			rep, err := request[proto.PolicyAddReply](cmd.Context(), a, proto.APIPolicyAdd, p)
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(a.stdout, rep)
			}
			if err := a.printPolicies([]proto.PolicyView{rep.Policy}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "claimed %d waiting machine(s)", len(rep.Claimed))
			if len(rep.Claimed) > 0 {
				fmt.Fprintf(a.stdout, ": %s", strings.Join(rep.Claimed, ", "))
			}
			fmt.Fprintln(a.stdout)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.Match, "match", "", "selector over labels and facts (see above); '' matches every machine")
	f.StringVar(&p.Image, "image", "", "image the claimed machines boot")
	f.StringVar(&p.Template, "template", "", "install template of the claimed machines")
	f.StringArrayVar(&labels, "labels", nil, "labels the claimed machines get, KEY=VALUE[,KEY=VALUE] (repeatable)")
	f.IntVar(&p.Max, "max", 0, "claim at most this many machines (0: no limit)")
	f.IntVar(&p.Priority, "priority", 0, "higher is tried first")
	f.StringVar(&p.Site, "site", "", "claim only machines of this site ('' every site)")
	_ = cmd.MarkFlagRequired("match")
	_ = cmd.MarkFlagRequired("image")
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) policyLsCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "ls",
		Short:   "List policies in the order they are tried",
		Example: "  fleetboot policy ls -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			ps, err := request[[]proto.PolicyView](cmd.Context(), a, proto.APIPolicyList, proto.ListRequest{V: proto.Version})
			if err != nil {
				return err
			}
			if out == "json" {
				if ps == nil {
					ps = []proto.PolicyView{}
				}
				return writeJSON(a.stdout, ps)
			}
			return a.printPolicies(ps)
		},
	}
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) policyShowCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "show NAME",
		Short:   "Show one policy and the machines it claimed",
		Example: "  fleetboot policy show r12-db",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			p, err := request[proto.PolicyView](cmd.Context(), a, proto.APIPolicyGet, proto.NameRequest{V: proto.Version, Name: args[0]})
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(a.stdout, p)
			}
			if err := a.printPolicies([]proto.PolicyView{p}); err != nil {
				return err
			}
			for _, m := range p.Claimed {
				fmt.Fprintf(a.stdout, "claimed %s\n", m)
			}
			return nil
		},
	}
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) policyRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Short:   "Remove a policy (the hosts it created stay)",
		Example: "  fleetboot policy rm r12-db",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := request[struct{}](cmd.Context(), a, proto.APIPolicyRm, proto.NameRequest{V: proto.Version, Name: args[0]}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "policy %s removed\n", args[0])
			return nil
		},
	}
}

func (a *app) policyEnableCmd(disable bool) *cobra.Command {
	use, short := "enable", "Enable a policy (it claims waiting machines at once)"
	if disable {
		use, short = "disable", "Disable a policy: it claims nothing until enabled"
	}
	return &cobra.Command{
		Use:     use + " NAME",
		Short:   short,
		Example: "  fleetboot policy " + use + " r12-db",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := request[proto.PolicyView](cmd.Context(), a, proto.APIPolicyEnable, proto.PolicyEnableRequest{V: proto.Version, Name: args[0], Disabled: disable})
			if err != nil {
				return err
			}
			return a.printPolicies([]proto.PolicyView{p})
		},
	}
}

func (a *app) printPolicies(ps []proto.PolicyView) error {
	var rows [][]string
	for _, p := range ps {
		max := "-"
		if p.Max > 0 {
			max = strconv.Itoa(p.Max)
		}
		state := "enabled"
		if p.Disabled {
			state = "disabled"
		}
		rows = append(rows, []string{p.Name, strconv.Itoa(p.Priority), p.Match, p.Image, p.Template, joinMap(p.Labels), p.Site,
			fmt.Sprintf("%d/%s", len(p.Claimed), max), state})
	}
	return table(a.stdout, []string{"NAME", "PRIORITY", "MATCH", "IMAGE", "TEMPLATE", "LABELS", "SITE", "CLAIMED", "STATE"}, rows)
}
