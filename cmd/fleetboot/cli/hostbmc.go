package cli

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/sealbox"
)

// maxBMCPassword: IPMI 2.0 passwords are at most 20 bytes.
const maxBMCPassword = 20

func (a *app) hostBMCCmd() *cobra.Command {
	var addr, user, passwordFile string
	cmd := &cobra.Command{
		Use:   "bmc MAC --ipmi HOST[:PORT] --user U --password-file F",
		Short: "Set a host's BMC (IPMI over LAN) for power control",
		Long: `Record the host's BMC: its IPMI LAN address (port 623 unless given), user
and password. The edge of the host's site drives the BMC (it is on the
site's management network) with ipmitool over IPMI lanplus.

The password never leaves this command in clear: it is read from the file
(its first line), sealed here to the curve key of each edge of the host's
site (nkeys xkeys; the edges publish their keys in their heartbeats), and
only the sealed boxes go to the coordinator. Only those edges can open them,
for this host only. An edge whose state directory is replaced gets a new
key: run this command again then.`,
		Example: `  fleetboot host bmc 52:54:00:12:34:56 --ipmi 10.0.10.21 --user admin --password-file bmc.pw`,
		Args:    exactArgs(1, "MAC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			mac, err := proto.ParseMAC(args[0])
			if err != nil {
				return err
			}
			if addr, err = proto.ParseBMCAddress(addr); err != nil {
				return fmt.Errorf("host bmc: --ipmi: %w", err)
			}
			if err := proto.ValidBMCUser(user); err != nil {
				return fmt.Errorf("host bmc: --user: %w", err)
			}
			if passwordFile == "" {
				return fmt.Errorf("host bmc: --password-file is required (the password is never taken on the command line)")
			}
			pw, err := readPassword(passwordFile)
			if err != nil {
				return err
			}
			defer clear(pw)
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			var keys proto.BMCKeys
			if err := c.call(ctx, proto.APIHostBMCKeys, proto.MACRequest{V: proto.Version, MAC: mac}, &keys); err != nil {
				return err
			}
			req := proto.HostBMCRequest{V: proto.Version, MAC: keys.MAC, Address: addr, User: user, Sealed: map[string]proto.SealedSecret{}}
			var edges []string
			for _, k := range keys.Keys {
				box, err := sealbox.Seal(pw, keys.MAC, k.XKey)
				if err != nil {
					return fmt.Errorf("host bmc: edge %s: %w", k.Edge, err)
				}
				req.Sealed[k.Edge] = box
				edges = append(edges, k.Edge)
			}
			var h proto.Host
			if err := c.call(ctx, proto.APIHostBMC, req, &h); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "host %s: BMC %s user %s, password sealed to edge(s) %s of site %s\n", h.MAC, addr, user, strings.Join(edges, ", "), keys.Site)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "ipmi", "", "BMC address HOST[:PORT] (IPMI over LAN, lanplus; port 623 by default)")
	f.StringVar(&user, "user", "", "BMC user")
	f.StringVar(&passwordFile, "password-file", "", "file whose first line is the BMC password")
	return cmd
}

// readPassword reads the first line of a password file.
func readPassword(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("host bmc: password file: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	pw := bytes.Clone(bytes.TrimSuffix(line, []byte("\r")))
	clear(b)
	switch {
	case len(pw) == 0:
		return nil, fmt.Errorf("host bmc: password file %s: the first line is empty", path)
	case len(pw) > maxBMCPassword:
		clear(pw)
		return nil, fmt.Errorf("host bmc: password file %s: longer than %d bytes (IPMI 2.0's limit)", path, maxBMCPassword)
	}
	return pw, nil
}

func (a *app) hostPowerCmd() *cobra.Command {
	var pxe bool
	var out string
	cmd := &cobra.Command{
		Use:   "power MAC on|off|cycle|status [--pxe]",
		Short: "Power a host on, off or through a cycle, or ask its power state, through its BMC",
		Long: `The edge of the host's site drives the host's BMC (see host bmc) with
ipmitool and answers with the power state after the action. --pxe first sets
the next boot device to the network (PXE), for one boot. A cycle of a host
that is off powers it on. Every action is an event in the host's timeline.`,
		Example: `  fleetboot host power 52:54:00:12:34:56 cycle --pxe
  fleetboot host power 52:54:00:12:34:56 status`,
		Args: exactArgs(2, "MAC and an action (on, off, cycle, status)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out); err != nil {
				return err
			}
			mac, err := proto.ParseMAC(args[0])
			if err != nil {
				return err
			}
			if err := proto.ValidPowerAction(args[1]); err != nil {
				return err
			}
			rep, err := request[proto.PowerReply](cmd.Context(), a, proto.APIHostPower, proto.PowerRequest{V: proto.Version, MAC: mac, Action: args[1], PXE: pxe})
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(a.stdout, rep)
			}
			boot := ""
			if rep.PXE {
				boot = ", next boot from the network"
			}
			fmt.Fprintf(a.stdout, "host %s: power %s done by edge %s%s; power is %s\n", rep.MAC, rep.Action, rep.Edge, boot, rep.Power)
			return nil
		},
	}
	cmd.Flags().BoolVar(&pxe, "pxe", false, "set the next boot device to PXE first")
	outputFlag(cmd, &out)
	return cmd
}

// printBMC adds a host's BMC to host show: address, user and the edges its
// password is sealed to (never the boxes).
func (a *app) printBMC(h proto.Host) {
	if h.BMC == nil {
		return
	}
	edges := slices.Sorted(maps.Keys(h.BMC.Sealed))
	fmt.Fprintf(a.stdout, "\nbmc: %s user %s, password sealed to edge(s) %s\n", h.BMC.Address, h.BMC.User, strings.Join(edges, ", "))
}
