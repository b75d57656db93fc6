package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/proto"
)

// group makes cmd a command group. Alone it prints its help; followed by
// anything else, which can only be a mistyped subcommand (`image rollbak`),
// it refuses with one line and exit 1, as the top level does: a group that
// printed its help and exited 0 would let a script believe it worked.
func group(cmd *cobra.Command) *cobra.Command {
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return fmt.Errorf("%s; see %s --help", msg, c.CommandPath())
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	return cmd
}

func (a *app) completionCmd() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: `Print a script that completes fleetboot's commands and flags in your shell.
MACs, sites, images and loaders are completed from the coordinator (--nats, or
FLEETBOOT_NATS and the other usual settings) when it answers within a second
or two; without it, only commands and flags are completed.`,
		Example: `  source <(fleetboot completion bash)
  fleetboot completion zsh > "${fpath[1]}/_fleetboot"
  fleetboot completion fish > ~/.config/fish/completions/fleetboot.fish`,
	})
	shells := []struct {
		name string
		gen  func(c *cobra.Command) error
	}{
		{"bash", func(c *cobra.Command) error { return c.Root().GenBashCompletionV2(a.stdout, true) }},
		{"zsh", func(c *cobra.Command) error { return c.Root().GenZshCompletion(a.stdout) }},
		{"fish", func(c *cobra.Command) error { return c.Root().GenFishCompletion(a.stdout, true) }},
	}
	for _, sh := range shells {
		cmd.AddCommand(&cobra.Command{
			Use:   sh.name,
			Short: "Print the " + sh.name + " completion script",
			Args:  cobra.NoArgs,
			RunE:  func(c *cobra.Command, _ []string) error { return sh.gen(c) },
		})
	}
	return cmd
}

// completionTimeout bounds a completion's call to the coordinator: a shell
// waiting on Tab must not hang on an unreachable one.
const completionTimeout = 2 * time.Second

// lister returns the names a completion offers, from the coordinator.
type lister func(ctx context.Context, c *client) ([]string, error)

func listMACs(ctx context.Context, c *client) ([]string, error) {
	var hosts []proto.Host
	if err := c.call(ctx, proto.APIHostList, proto.ListRequest{V: proto.Version}, &hosts); err != nil {
		return nil, err
	}
	var out []string
	for _, h := range hosts {
		desc := strings.TrimSpace(h.Hostname + " " + h.Site)
		for _, m := range h.MACs() {
			out = append(out, m+"\t"+desc)
		}
	}
	return out, nil
}

func listSites(ctx context.Context, c *client) ([]string, error) {
	var sites []proto.Site
	if err := c.call(ctx, proto.APISiteList, proto.ListRequest{V: proto.Version}, &sites); err != nil {
		return nil, err
	}
	var out []string
	for _, s := range sites {
		out = append(out, s.Name)
	}
	return out, nil
}

func listImages(ctx context.Context, c *client) ([]string, error) {
	var ims []proto.Image
	if err := c.call(ctx, proto.APIImageList, proto.ListRequest{V: proto.Version}, &ims); err != nil {
		return nil, err
	}
	var out []string
	for _, im := range ims {
		out = append(out, im.Name)
	}
	return out, nil
}

func listRollouts(ctx context.Context, c *client) ([]string, error) {
	var rs []proto.Rollout
	if err := c.call(ctx, proto.APIRolloutList, proto.ListRequest{V: proto.Version}, &rs); err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out, nil
}

func listLoaders(ctx context.Context, c *client) ([]string, error) {
	var ls []proto.Loader
	if err := c.call(ctx, proto.APILoaderList, proto.ListRequest{V: proto.Version}, &ls); err != nil {
		return nil, err
	}
	var out []string
	for _, l := range ls {
		out = append(out, l.Name)
	}
	return out, nil
}

// completeFrom completes from what list returns, asking the coordinator with
// the same settings and API as the ls commands. Any failure (no coordinator,
// no credentials, a refusal) completes nothing, silently: a completion
// cannot print errors into the user's command line.
func (a *app) completeFrom(list lister) func(cmd *cobra.Command, toComplete string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, toComplete string) ([]string, cobra.ShellCompDirective) {
		const none = cobra.ShellCompDirectiveNoFileComp
		// Completion skips the usual pre-run: apply FLEETBOOT_* and the
		// config file here so --nats and --creds come from where they would.
		if err := a.applyEnvAndFile(cmd); err != nil {
			return nil, none
		}
		opts := append(a.natsOptions("fleetboot-completion"), nats.Timeout(completionTimeout), nats.MaxReconnects(0))
		nc, err := nats.Connect(a.natsURL, opts...)
		if err != nil {
			return nil, none
		}
		defer nc.Close()
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		names, err := list(ctx, &client{nc: nc, url: a.natsURL, timeout: completionTimeout})
		if err != nil {
			return nil, none
		}
		var out []string
		for _, n := range names {
			if strings.HasPrefix(strings.ToLower(n), strings.ToLower(toComplete)) {
				out = append(out, n)
			}
		}
		slices.Sort(out)
		return out, none
	}
}

// firstArg completes a command's first argument; later ones get nothing.
func firstArg(f func(*cobra.Command, string) ([]string, cobra.ShellCompDirective)) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return f(cmd, toComplete)
	}
}

// addCompletions attaches the dynamic completions to the tree: arguments
// by command, flags by name wherever they occur.
func (a *app) addCompletions(root *cobra.Command) {
	macs, sites, images := a.completeFrom(listMACs), a.completeFrom(listSites), a.completeFrom(listImages)
	loaders, rollouts := a.completeFrom(listLoaders), a.completeFrom(listRollouts)
	args := map[string]func(*cobra.Command, string) ([]string, cobra.ShellCompDirective){
		"fleetboot host set":         macs,
		"fleetboot host show":        macs,
		"fleetboot host rm":          macs,
		"fleetboot host timeline":    macs,
		"fleetboot explain":          macs,
		"fleetboot site show":        sites,
		"fleetboot site rm":          sites,
		"fleetboot image show":       images,
		"fleetboot image rm":         images,
		"fleetboot loader show":      loaders,
		"fleetboot loader rm":        loaders,
		"fleetboot edge add":         sites,
		"fleetboot rollout status":   rollouts,
		"fleetboot rollout pause":    rollouts,
		"fleetboot rollout resume":   rollouts,
		"fleetboot rollout abort":    rollouts,
		"fleetboot rollout rollback": rollouts,
	}
	flags := map[string]func(*cobra.Command, string) ([]string, cobra.ShellCompDirective){
		"site": sites, "image": images, "loader": loaders,
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if f, ok := args[c.CommandPath()]; ok {
			c.ValidArgsFunction = firstArg(f)
		}
		for name, f := range flags {
			if c.Flags().Lookup(name) != nil {
				_ = c.RegisterFlagCompletionFunc(name, func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
					return f(cmd, toComplete)
				})
			}
		}
		if c.CommandPath() == "fleetboot events" {
			_ = c.RegisterFlagCompletionFunc("host", func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
				return macs(cmd, toComplete)
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
