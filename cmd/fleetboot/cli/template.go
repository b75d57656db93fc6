package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/installtmpl"
)

func (a *app) templateCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "template", Short: "Manage install templates (cloud-init, kickstart, preseed, ignition, script)"})
	cmd.AddCommand(a.templateAddCmd(), a.templateLsCmd(), a.templateShowCmd(), a.templateRmCmd())
	return cmd
}

func (a *app) templateAddCmd() *cobra.Command {
	var kind, file string
	cmd := &cobra.Command{
		Use:   "add NAME --kind cloud-init|kickstart|preseed|ignition|script --file F",
		Short: "Add (or replace) an install template",
		Long: `Add an install template: Go text/template text the edge renders for each host
that uses it (host set --template, policy add --template). A template that does
not parse is refused with its line. It sees:
  {{.MAC}} {{.Hostname}} {{.IP}} {{.Site}} {{.Image}}
  {{.Labels.rack}} {{.Vars.role}} {{.Facts.memory_gib}} {{index .Facts.disks 0}}
  {{.DoneURL}}      the "install done" callback with this boot's token
  {{.TemplateURL}}  where this template is served for the host
and the functions quote, json, default, lower, upper (quote or json any value
the machine reported itself before putting it into YAML or JSON).`,
		Example: `  fleetboot template add web --kind cloud-init --file user-data.tmpl
  fleetboot template add c9 --kind kickstart --file ks.cfg.tmpl`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			text, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("template add: %w", err)
			}
			// The coordinator checks it again; this answers before the upload.
			if _, err := installtmpl.Parse(args[0], kind, string(text)); err != nil {
				return err
			}
			t, err := request[proto.Template](cmd.Context(), a, proto.APITemplateAdd, proto.Template{V: proto.Version, Name: args[0], Kind: kind, Text: string(text)})
			if err != nil {
				return err
			}
			return a.printTemplates([]proto.Template{t})
		},
	}
	cmd.Flags().StringVar(&kind, "kind", "", "template kind: "+strings.Join(installtmpl.Kinds, ", "))
	cmd.Flags().StringVar(&file, "file", "", "file holding the template text")
	_ = cmd.MarkFlagRequired("kind")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func (a *app) templateLsCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "ls",
		Short:   "List install templates",
		Example: "  fleetboot template ls",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			ts, err := request[[]proto.Template](cmd.Context(), a, proto.APITemplateList, proto.ListRequest{V: proto.Version})
			if err != nil {
				return err
			}
			if out == "json" {
				if ts == nil {
					ts = []proto.Template{}
				}
				return writeJSON(a.stdout, ts)
			}
			return a.printTemplates(ts)
		},
	}
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) templateShowCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "show NAME",
		Short:   "Print an install template's text",
		Example: "  fleetboot template show web",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			t, err := request[proto.Template](cmd.Context(), a, proto.APITemplateGet, proto.NameRequest{V: proto.Version, Name: args[0]})
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(a.stdout, t)
			}
			fmt.Fprint(a.stdout, t.Text)
			return nil
		},
	}
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) templateRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Short:   "Remove an install template no host or policy uses",
		Example: "  fleetboot template rm web",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := request[struct{}](cmd.Context(), a, proto.APITemplateRm, proto.NameRequest{V: proto.Version, Name: args[0]}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "template %s removed\n", args[0])
			return nil
		},
	}
}

func (a *app) printTemplates(ts []proto.Template) error {
	var rows [][]string
	for _, t := range ts {
		rows = append(rows, []string{t.Name, t.Kind, fmt.Sprintf("%d", strings.Count(t.Text, "\n")), t.Updated.Format("2006-01-02 15:04:05")})
	}
	return table(a.stdout, []string{"NAME", "KIND", "LINES", "UPDATED"}, rows)
}
