package cli

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/selector"
)

func (a *app) rolloutCmd() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "rollout",
		Short: "Roll an image revision out to many hosts in stages: canaries, then batches, site by site",
		Long: `A rollout moves the hosts a selector picks to one image revision in stages. The
canaries (the first hosts of the first site) go first; once every one of them
has proved it booted the new revision, the rest follow batch by batch, site by
site, each batch once the one before is over. With --power cycle each host is
power-cycled through its BMC (next boot PXE) after its assignment; without,
the machines' own reboots are awaited.

A host is done when its done callback comes (an image whose cmdline holds
fleetboot.done={{callback}} makes its system call it), or, for an image whose
cmdline has no {{callback}}, when its boot fetched the new revision's kernel
and every initrd whole (recognised by their sha256). It fails when the boot
timeout passes first, or when its boot stops with a problem the timeline
diagnoses (the diagnosis is shown). The rollout halts by itself when a canary
fails or when more hosts failed than --max-failed, leaving the hosts it has
not touched untouched.

The state lives in the coordinators' KV: a restarted coordinator resumes the
rollout where it was, and one coordinator at a time drives it.`,
	})
	cmd.AddCommand(a.rolloutStartCmd(), a.rolloutStatusCmd(), a.rolloutLsCmd(),
		a.rolloutActCmd("pause", proto.APIRolloutPause, "Stop starting hosts (those booting are still watched)"),
		a.rolloutActCmd("resume", proto.APIRolloutResume, "Resume a paused rollout"),
		a.rolloutActCmd("abort", proto.APIRolloutAbort, "Stop a rollout for good: nothing more is started, hosts keep what they have"),
		a.rolloutActCmd("rollback", proto.APIRolloutRollback, "Move the hosts the rollout touched (done, failed, booting) back to their previous image"),
	)
	return cmd
}

func (a *app) rolloutStartCmd() *cobra.Command {
	var spec proto.RolloutSpec
	var timeout time.Duration
	var out string
	cmd := &cobra.Command{
		Use:   "start NAME --selector S --image IMG[@N] [--site S]... [--canary N] [--batch 10%|N] [--max-failed N] [--boot-timeout 15m] [--power cycle]",
		Short: "Start a rollout",
		Long: `Start a rollout: select the hosts (--selector over labels, facts and host
fields, as host set --selector; only at the --site(s) given, in that order,
else at every site by name), record each one's current image (what rollback
restores), and let the coordinator drive it. A bare --image NAME is pinned to
NAME's current revision now. A host may be in one running, paused or
rolling-back rollout at a time. With --power cycle every selected host needs
a BMC (fleetboot host bmc).`,
		Example: `  fleetboot rollout start web7 --selector 'labels.role=web' --image web@7 --canary 2 --batch 10% --max-failed 1 --boot-timeout 15m --power cycle
  fleetboot rollout start lab-debian --selector 'site=lab' --image debian12 --site lab --canary 1 --batch 5`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			spec.V, spec.Name = proto.Version, args[0]
			if err := proto.ValidName("rollout", spec.Name); err != nil {
				return err
			}
			if _, err := selector.Parse(spec.Selector); err != nil {
				return fmt.Errorf("invalid --selector: %v", err)
			}
			if err := proto.ValidImageRef(spec.Image); err != nil {
				return fmt.Errorf("invalid --image: %v", err)
			}
			if timeout <= 0 || timeout%time.Second != 0 {
				return fmt.Errorf("invalid --boot-timeout %s: want whole seconds, more than 0 (15m, 90s)", timeout)
			}
			spec.BootTimeout = int(timeout / time.Second)
			if spec.Power == "none" {
				spec.Power = proto.RolloutPowerNone
			}
			r, err := request[proto.Rollout](cmd.Context(), a, proto.APIRolloutStart, spec)
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(a.stdout, r)
			}
			return a.printRollout(r)
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Selector, "selector", "", "the hosts to roll out to: a selector over labels, facts and host fields (labels.role=web,site=lab)")
	f.StringVar(&spec.Image, "image", "", "the target: NAME@N, or NAME for its current revision (pinned at start)")
	f.StringArrayVar(&spec.Sites, "site", nil, "only this site's hosts, sites in the order given (repeatable; default every site, by name)")
	f.IntVar(&spec.Canary, "canary", 1, "hosts of the first site done first, before any batch (0: none)")
	f.StringVar(&spec.Batch, "batch", "10%", "hosts per batch: a percentage of the selection (10%) or a count (5)")
	f.IntVar(&spec.MaxFailed, "max-failed", 0, "halt when more hosts than this have failed")
	f.DurationVar(&timeout, "boot-timeout", 15*time.Minute, "a host not done this long after its assignment has failed")
	f.StringVar(&spec.Power, "power", "", "cycle: power-cycle each assigned host through its BMC, next boot PXE (default: no power action)")
	_ = cmd.MarkFlagRequired("selector")
	_ = cmd.MarkFlagRequired("image")
	outputFlag(cmd, &out)
	return cmd
}

// rolloutStates are the states --wait accepts.
var rolloutStates = []string{proto.RolloutRunning, proto.RolloutPaused, proto.RolloutHalted, proto.RolloutAborted,
	proto.RolloutDone, proto.RolloutRollingBack, proto.RolloutRolledBack}

// rolloutFinal are the states a rollout does not leave by itself.
var rolloutFinal = []string{proto.RolloutHalted, proto.RolloutAborted, proto.RolloutDone, proto.RolloutRolledBack}

func (a *app) rolloutStatusCmd() *cobra.Command {
	var out string
	var wait []string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status NAME [-o json] [--wait done,halted,…] [--timeout 15m]",
		Short: "Show a rollout: its state and every host's",
		Long: `Show a rollout: its state and why, its counts, and per host its site, batch,
state, since when, and for a failed host the diagnosis.

--wait polls until the rollout is in one of the given states (comma-separated
or repeated: ` + strings.Join(rolloutStates, ", ") + `), then shows it. It fails (exit 1)
when the rollout settles in another state it will not leave by itself, or when
--timeout passes first.`,
		Example: `  fleetboot rollout status web7
  fleetboot rollout status web7 --wait done,halted --timeout 30m -o json`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			var want []string
			for _, w := range wait {
				for s := range strings.SplitSeq(w, ",") {
					s = strings.TrimSpace(s)
					if !slices.Contains(rolloutStates, s) {
						return fmt.Errorf("invalid --wait %q: want one or more of %s", s, strings.Join(rolloutStates, ", "))
					}
					want = append(want, s)
				}
			}
			req := proto.NameRequest{V: proto.Version, Name: args[0]}
			var r proto.Rollout
			var err error
			if len(want) == 0 {
				r, err = request[proto.Rollout](cmd.Context(), a, proto.APIRolloutGet, req)
			} else {
				r, err = a.waitRollout(cmd.Context(), req, want, timeout)
			}
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(a.stdout, r)
			}
			return a.printRollout(r)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&wait, "wait", nil, "poll until the rollout is in one of these states")
	f.DurationVar(&timeout, "timeout", 15*time.Minute, "with --wait: give up after this long")
	outputFlag(cmd, &out)
	return cmd
}

// waitRollout polls a rollout until its state is one of want.
func (a *app) waitRollout(ctx context.Context, req proto.NameRequest, want []string, timeout time.Duration) (proto.Rollout, error) {
	if timeout <= 0 {
		return proto.Rollout{}, fmt.Errorf("invalid --timeout %s: want a duration such as 15m", timeout)
	}
	c, err := a.connect()
	if err != nil {
		return proto.Rollout{}, err
	}
	defer c.Close()
	deadline := time.Now().Add(timeout)
	for {
		var r proto.Rollout
		if err := c.call(ctx, proto.APIRolloutGet, req, &r); err != nil {
			return proto.Rollout{}, err
		}
		switch {
		case slices.Contains(want, r.State):
			return r, nil
		case slices.Contains(rolloutFinal, r.State):
			return proto.Rollout{}, fmt.Errorf("rollout %s is %s (%s), not %s", r.Name, r.State, reasonOr(r.Reason), strings.Join(want, " or "))
		case time.Now().After(deadline):
			return proto.Rollout{}, fmt.Errorf("rollout %s is still %s after %s, not %s", r.Name, r.State, timeout, strings.Join(want, " or "))
		}
		select {
		case <-ctx.Done():
			return proto.Rollout{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func reasonOr(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}

func (a *app) rolloutLsCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     "ls",
		Short:   "List rollouts",
		Example: "  fleetboot rollout ls -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			rs, err := request[[]proto.Rollout](cmd.Context(), a, proto.APIRolloutList, proto.ListRequest{V: proto.Version})
			if err != nil {
				return err
			}
			if out == "json" {
				if rs == nil {
					rs = []proto.Rollout{}
				}
				return writeJSON(a.stdout, rs)
			}
			var rows [][]string
			for _, r := range rs {
				rows = append(rows, []string{r.Name, r.State, r.Image, strconv.Itoa(len(r.Hosts)), counts(r), r.Updated.Local().Format(time.DateTime), r.Reason})
			}
			return table(a.stdout, []string{"NAME", "STATE", "IMAGE", "HOSTS", "COUNTS", "UPDATED", "REASON"}, rows)
		},
	}
	outputFlag(cmd, &out)
	return cmd
}

func (a *app) rolloutActCmd(use, endpoint, short string) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:     use + " NAME",
		Short:   short,
		Example: "  fleetboot rollout " + use + " web7",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			r, err := request[proto.Rollout](cmd.Context(), a, endpoint, proto.NameRequest{V: proto.Version, Name: args[0]})
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(a.stdout, r)
			}
			return a.printRollout(r)
		},
	}
	if use == "rollback" {
		cmd.Long = `Roll a rollout back: every host it touched (done, failed, or still booting)
goes back to the image it had before the rollout (power-cycled again with
--power cycle); hosts it never touched stay as they are. The rollout is
rolled-back once every such host is reassigned; their boots are not awaited.`
	}
	outputFlag(cmd, &out)
	return cmd
}

// counts is "2 done, 1 failed, 3 waiting"-style, states in host order.
func counts(r proto.Rollout) string {
	order := []string{proto.RolloutHostDone, proto.RolloutHostFailed, proto.RolloutHostBooting, proto.RolloutHostPowerCycled,
		proto.RolloutHostAssigned, proto.RolloutHostWaiting, proto.RolloutHostRolledBack}
	n := map[string]int{}
	for _, h := range r.Hosts {
		n[h.State]++
	}
	var parts []string
	for _, s := range order {
		if n[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[s], s))
		}
	}
	return strings.Join(parts, ", ")
}

func (a *app) printRollout(r proto.Rollout) error {
	w := a.stdout
	state := r.State
	if r.Reason != "" {
		state += ": " + r.Reason
	}
	fmt.Fprintf(w, "rollout %s  %s\n", r.Name, state)
	power := "none"
	if r.Power != "" {
		power = r.Power
	}
	fmt.Fprintf(w, "image %s  selector %s  canary %d  batch %s  max-failed %d  boot-timeout %s  power %s\n",
		r.Image, r.Selector, r.Canary, r.Batch, r.MaxFailed, time.Duration(r.BootTimeout)*time.Second, power)
	driver := r.Driver
	if driver == "" {
		driver = "-"
	}
	fmt.Fprintf(w, "hosts %d: %s  driver %s\n\n", len(r.Hosts), counts(r), driver)
	now := time.Now()
	var rows [][]string
	for _, h := range r.Hosts {
		diag := h.Diagnosis
		if h.State == proto.RolloutHostDone && h.Proof != "" {
			diag = "proof: " + h.Proof
		}
		rows = append(rows, []string{h.MAC, h.Site, strconv.Itoa(h.Batch), h.State, ago(now, h.Since), diag})
	}
	return table(w, []string{"MAC", "SITE", "BATCH", "STATE", "SINCE", "DIAGNOSIS"}, rows)
}

// ago is how long ago t was, to the second.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}
