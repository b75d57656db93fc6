package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/proto"
)

// clusterAuth is --auth on a NATS cluster prepared by `fleetboot nats
// init`: the accounts' signing keys, the system account's credentials and
// where the first admin's go.
type clusterAuth struct {
	acct                 *auth.ClusterAccount
	sysCreds, adminCreds string
}

// openClusterAuth checks every file the coordinator needs, before any
// connection: a wrong key must not look like a dead cluster.
func openClusterAuth(cfg Config) (*clusterAuth, error) {
	if cfg.AccountKey == "" {
		return nil, errors.New("coordinator: --auth with --nats-url needs --account-key (fleetboot-signing.nk of `fleetboot nats init DIR`)")
	}
	acct, err := auth.OpenClusterKey(cfg.AccountKey)
	if err != nil {
		return nil, fmt.Errorf("coordinator: --account-key: %w", err)
	}
	c := &clusterAuth{acct: acct, sysCreds: cfg.SystemCreds, adminCreds: adminCredsPath(cfg)}
	if c.sysCreds == "" {
		c.sysCreds = filepath.Join(filepath.Dir(cfg.AccountKey), auth.SysCredsFile)
	}
	if err := auth.CheckCredsFile(c.sysCreds); err != nil {
		return nil, fmt.Errorf("coordinator: --system-creds: %w", err)
	}
	if c.adminCreds == "" {
		return nil, errors.New("coordinator: --auth with --nats-url needs --admin-creds FILE (or --data): where the first admin's credentials go")
	}
	return c, nil
}

// CheckAuthFiles checks, without connecting, the files --auth needs on a
// NATS cluster (Auth with NATSURL); it checks nothing otherwise.
func CheckAuthFiles(cfg Config) error {
	if !cfg.Auth || cfg.NATSURL == "" {
		return nil
	}
	_, err := openClusterAuth(cfg)
	return err
}

// adminCredsPath is where the first admin's credentials go.
func adminCredsPath(cfg Config) string {
	if cfg.AdminCreds != "" || cfg.DataDir == "" {
		return cfg.AdminCreds
	}
	return filepath.Join(cfg.DataDir, "admin.creds")
}

// options are the coordinator's three connections' options: the fleetboot
// and API accounts with users signed here (never on disk), the system
// account with sys.creds.
func (c *clusterAuth) options(base []nats.Option) (fleet, api, sys []nats.Option, err error) {
	fo, err := c.acct.ConnectOption(auth.AccountFleet)
	if err != nil {
		return nil, nil, nil, err
	}
	ao, err := c.acct.ConnectOption(auth.AccountAPI)
	if err != nil {
		return nil, nil, nil, err
	}
	return append(slices.Clone(base), fo), append(slices.Clone(base), ao), append(slices.Clone(base), nats.UserCredentials(c.sysCreds)), nil
}

// open binds to the cluster's identity registry (creating its bucket).
func (c *clusterAuth) open(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) (*auth.Authority, error) {
	return auth.OpenCluster(ctx, c.acct, js, replicas, log)
}

// attach starts the account pushes and writes the first admin's
// credentials if the cluster has no live admin.
func (c *clusterAuth) attach(ctx context.Context, a *auth.Authority, sys *nats.Conn, log *slog.Logger) error {
	if err := a.AttachCluster(ctx, sys); err != nil {
		return fmt.Errorf("coordinator: push the fleetboot account to the cluster: %w", err)
	}
	wrote, err := a.WriteFirstAdmin(ctx, c.adminCreds)
	if errors.Is(err, auth.ErrAdminCredsExist) {
		// Edges keep being served; the operator is told how to get an admin.
		log.Error("no admin credentials written", "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	if wrote {
		log.Info("first admin credentials written (keep this file secret)", "file", c.adminCreds)
	} else {
		log.Info("the cluster has an admin already; no admin credentials written", "file", c.adminCreds)
	}
	return nil
}

// connectError says what failed, adding on a cluster in operator mode the
// likeliest cause of a refusal.
func connectError(what string, cluster bool, err error) error {
	msg := proto.RedactErr(err).Error()
	if cluster && (errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(msg), "authorization")) {
		msg += " (does every node's config include the resolver.conf of the same `fleetboot nats init` as --account-key?)"
	}
	return fmt.Errorf("coordinator: %s: %s", what, msg)
}
