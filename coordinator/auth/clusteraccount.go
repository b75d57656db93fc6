package auth

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ClusterAccount signs for the fleetboot account of a cluster prepared by
// `fleetboot nats init`: user JWTs with the account's signing key, and the
// account JWT itself (its revocations) with the operator's signing key. It
// holds no identity key: those stay offline.
type ClusterAccount struct {
	account   string // public key of the fleetboot account
	preloaded int64  // iat of the account JWT in resolver.conf

	mu        sync.Mutex
	last      int64         // iat of the last account JWT signed here
	signing   nkeys.KeyPair // the account's signing key: users
	opSigning nkeys.KeyPair // an operator signing key: the account JWT
}

// OpenClusterAccount loads the coordinator's part of a `nats init`
// directory: fleetboot.jwt (which account, and that it lists the signing
// key), fleetboot-signing.nk and operator-signing.nk.
func OpenClusterAccount(dir string) (*ClusterAccount, error) {
	tok, err := os.ReadFile(filepath.Join(dir, FleetJWTFile))
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	ac, err := jwt.DecodeAccountClaims(strings.TrimSpace(string(tok)))
	if err != nil {
		return nil, fmt.Errorf("auth: %s: not an account JWT: %w", filepath.Join(dir, FleetJWTFile), err)
	}
	c := &ClusterAccount{account: ac.Subject, preloaded: ac.IssuedAt}
	for _, k := range []struct {
		file string
		kp   *nkeys.KeyPair
	}{{FleetSigningSeedFile, &c.signing}, {OperatorSigningSeedFile, &c.opSigning}} {
		if *k.kp, err = readSeed(filepath.Join(dir, k.file)); err != nil {
			return nil, err
		}
	}
	if !ac.SigningKeys.Contains(mustPub(c.signing)) {
		return nil, fmt.Errorf("auth: %s is not a signing key of account %s", filepath.Join(dir, FleetSigningSeedFile), c.account)
	}
	if ac.Issuer != mustPub(c.opSigning) {
		return nil, fmt.Errorf("auth: %s did not sign account %s", filepath.Join(dir, OperatorSigningSeedFile), c.account)
	}
	return c, nil
}

// Account is the fleetboot account's public key.
func (c *ClusterAccount) Account() string { return c.account }

// SignUser signs a user JWT of the account with its signing key.
func (c *ClusterAccount) SignUser(uc *jwt.UserClaims) (string, error) {
	uc.IssuerAccount = c.account
	tok, err := uc.Encode(c.signing)
	if err != nil {
		return "", fmt.Errorf("auth: sign user: %w", err)
	}
	return tok, nil
}

// AccountJWT re-signs the account from its definition with the given
// revocations (user public key → revoked at), for PushAccount.
func (c *ClusterAccount) AccountJWT(revoked map[string]time.Time) (string, error) {
	// Each account JWT must be issued (iat, in whole seconds) after the
	// one before it. nats-server's full resolver keeps a stored JWT over
	// one with an older iat, and a restarted node stores the preloaded JWT
	// of resolver.conf over its directory's unless that one is newer. And
	// the jti is a hash of the standard claims alone (iat, issuer,
	// subject, name), not of the revocations: two updates signed in one
	// second share it, and a node that missed the second (it was down) is
	// told by the resolver's sync that it already has it, and never does.
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := time.Until(time.Unix(max(c.preloaded, c.last)+1, 0)); d > 0 {
		time.Sleep(d)
	}
	ac := ClusterFleetAccount(c.account, mustPub(c.signing))
	keys := make([]string, 0, len(revoked))
	for k := range revoked {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		ac.RevokeAt(k, revoked[k])
	}
	tok, err := ac.Encode(c.opSigning)
	if err != nil {
		return "", fmt.Errorf("auth: sign the fleetboot account: %w", err)
	}
	c.last = ac.IssuedAt
	return tok, nil
}

func readSeed(path string) (nkeys.KeyPair, error) {
	seed, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		// Never quote the file: it holds a seed.
		return nil, fmt.Errorf("auth: %s does not hold a valid nkey seed", path)
	}
	return kp, nil
}

// OpenCluster is Open for a coordinator on a NATS cluster prepared by
// `fleetboot nats init`: the registry lives in dir as with the embedded
// server, but user JWTs are signed with the cluster account's signing key
// and every change of the account (revocations) is pushed to the
// cluster's resolver through the connection given to AttachCluster.
func OpenCluster(dir string, acct *ClusterAccount, log *slog.Logger) (*Authority, error) {
	a, err := Open(dir, log)
	if err != nil {
		return nil, err
	}
	a.cluster = acct
	return a, nil
}

// AttachCluster is Attach for OpenCluster's authority: sys is a connection
// of the cluster's system account (sys.creds). It pushes the account as
// the registry has it at once, so revocations made while no coordinator
// could reach the cluster (or before the first start) take effect.
func (a *Authority) AttachCluster(ctx context.Context, sys *nats.Conn) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.push = func(ctx context.Context, _, claim string) error { return PushAccount(ctx, sys, claim) }
	return a.applyCluster(ctx)
}

// signUser signs an enrolled identity's JWT. Callers hold a.mu or need
// nothing it guards.
func (a *Authority) signUser(uc *jwt.UserClaims) (string, error) {
	if a.cluster != nil {
		return a.cluster.SignUser(uc)
	}
	tok, err := uc.Encode(a.fleet)
	if err != nil {
		return "", fmt.Errorf("auth: sign user: %w", err)
	}
	return tok, nil
}

// applyCluster re-signs the cluster account with the registry's
// revocations and pushes it. Callers hold a.mu.
func (a *Authority) applyCluster(ctx context.Context) error {
	if a.push == nil {
		return nil // not attached yet: AttachCluster pushes
	}
	revoked := map[string]time.Time{}
	for _, id := range a.ids {
		if id.Revoked != nil {
			revoked[id.PublicKey] = *id.Revoked
		}
	}
	tok, err := a.cluster.AccountJWT(revoked)
	if err != nil {
		return err
	}
	return a.push(ctx, a.cluster.Account(), tok)
}
