package cli

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetboot/fleetboot/coordinator/auth"
)

// natsCmd groups what fleetboot does for a NATS cluster it does not run.
func (a *app) natsCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "nats", Short: "Prepare an existing NATS cluster for fleetboot"})
	resolverDir := "/var/lib/nats/fleetboot-jwt"
	sync := 30 * time.Second
	initCmd := &cobra.Command{
		Use:   "init DIR [--resolver-dir PATH]",
		Short: "Create the operator and accounts for a NATS cluster in operator mode",
		Long: `Create in DIR the NATS operator, the system account, the fleetboot account
and the API account (nkeys and JWTs), and DIR/resolver.conf, a nats-server
configuration fragment: the operator, the system account and a full resolver
with the three accounts preloaded. Each node keeps every account JWT in
--resolver-dir and takes the updates the coordinator pushes, such as
revocations; a node that was down when one was pushed gets it from the
others at their next comparison (every --sync-interval). Copy resolver.conf
next to each node's configuration and add "include resolver.conf"; it holds
nothing secret.

Edges and people join the fleetboot account; the coordinators answer the API
in the API account, which the fleetboot account imports with share=true, so
the NATS server stamps every API request with the identity of who sent it.

Seeds are written 0600. The coordinator needs fleetboot-signing.nk (it signs
the credentials of edge add and user add), operator-signing.nk (it re-signs
the fleetboot account with revocations and limits), api-signing.nk (it signs
its own user of the API account), sys.creds (it pushes the account to the
cluster) and the public fleetboot.jwt and api.jwt, all in one directory:
give it --account-key DIR/fleetboot-signing.nk. operator.nk, sys.nk,
fleetboot.nk and api.nk are needed only to rotate those: keep them offline.
Existing keys are never overwritten.`,
		Example: `  fleetboot nats init /etc/fleetboot/nats --resolver-dir /var/lib/nats/fleetboot-jwt
  scp /etc/fleetboot/nats/resolver.conf nats1:/etc/nats/   # and nats2, nats3
  # in each node's nats-server.conf:  include resolver.conf
  fleetboot coordinator --auth --nats-url tls://nats1:4222 --tls-ca ca.pem \
    --account-key /etc/fleetboot/nats/fleetboot-signing.nk --data /var/lib/fleetboot --store …`,
		Args: exactArgs(1, "DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ci, err := auth.InitCluster(args[0], resolverDir, sync)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, `operator:          %s
system account:    %s
fleetboot account: %s (signing key %s)
API account:       %s (signing key %s)
nats-server fragment: %s (include it in every node's config)
for the coordinator:  %s, %s, %s, %s (keep them secret), %s, %s
keep offline:         %s, %s, %s, %s
`, ci.Operator, ci.System, ci.Fleet, ci.FleetSigning, ci.API, ci.APISigning,
				filepath.Join(ci.Dir, auth.ResolverConfFile),
				filepath.Join(ci.Dir, auth.FleetSigningSeedFile), filepath.Join(ci.Dir, auth.OperatorSigningSeedFile),
				filepath.Join(ci.Dir, auth.APISigningSeedFile), filepath.Join(ci.Dir, auth.SysCredsFile),
				filepath.Join(ci.Dir, auth.FleetJWTFile), filepath.Join(ci.Dir, auth.APIJWTFile),
				filepath.Join(ci.Dir, auth.OperatorSeedFile), filepath.Join(ci.Dir, auth.SysSeedFile),
				filepath.Join(ci.Dir, auth.FleetSeedFile), filepath.Join(ci.Dir, auth.APISeedFile))
			return nil
		},
	}
	initCmd.Flags().StringVar(&resolverDir, "resolver-dir", resolverDir, "directory where each NATS node keeps the account JWTs (absolute; the same path on every node)")
	initCmd.Flags().DurationVar(&sync, "sync-interval", sync, "how often each node compares its account JWTs with the others' (how a node that missed an update catches up)")
	cmd.AddCommand(initCmd)
	return cmd
}
