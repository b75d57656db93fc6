package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/proto"
)

// OpenCluster is Open for a coordinator on a NATS cluster prepared by
// `fleetboot nats init`: user JWTs are signed with the cluster account's
// signing key, and the registry of identities is the cluster's identities
// bucket (created here through js with replicas), shared with every other
// coordinator, not a file. It returns once it knows every identity the
// bucket holds. Call AttachCluster before serving, Close when done.
func OpenCluster(ctx context.Context, acct *ClusterAccount, js jetstream.JetStream, replicas int, log *slog.Logger) (*Authority, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg, err := openRegistry(ctx, js, replicas, acct, log)
	if err != nil {
		return nil, err
	}
	return &Authority{log: log, now: time.Now, cluster: acct, reg: reg}, nil
}

// AttachCluster gives OpenCluster's authority its connection to the
// cluster's system account (sys.creds). From then on it pushes the
// fleetboot account JWT to the cluster's resolver whenever any coordinator
// stores a new one; it pushes the current one at once, first signing a new
// one if a revocation recorded in the registry is missing from it (a
// coordinator stopped before it could push).
func (a *Authority) AttachCluster(ctx context.Context, sys *nats.Conn) error {
	if a.reg == nil {
		return errors.New("auth: AttachCluster needs an authority from OpenCluster")
	}
	return a.reg.attach(ctx, sys)
}

// Close stops what OpenCluster started (the registry's watch and the
// account pushes). It does nothing for an embedded server's authority.
func (a *Authority) Close() {
	if a.reg != nil {
		a.reg.close()
	}
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

// enrolCluster signs a validated identity and records it in the cluster's
// registry (compare-and-set on its name and its public key).
func (a *Authority) enrolCluster(ctx context.Context, id Identity, uc *jwt.UserClaims) (EnrolReply, error) {
	tok, err := a.signUser(uc)
	if err != nil {
		return EnrolReply{}, err
	}
	if err := a.reg.add(ctx, id); err != nil {
		return EnrolReply{}, err
	}
	a.log.Info("identity enrolled", "identity", id.String(), "key", id.PublicKey)
	return EnrolReply{V: proto.Version, Identity: id, JWT: tok, InboxPrefix: InboxPrefixOf(id)}, nil
}

// revokeCluster records the revocation in the registry (the commit point:
// every coordinator re-publishes a recorded revocation missing from the
// account JWT when it starts), then publishes the account JWT with it and
// pushes it to the cluster.
func (a *Authority) revokeCluster(ctx context.Context, name string, edge bool) ([]Identity, error) {
	done, err := a.reg.revoke(ctx, name, edge, a.now().UTC().Truncate(time.Second))
	if err != nil {
		return nil, err
	}
	for _, id := range done {
		a.log.Info("identity revoked", "identity", id.String(), "key", id.PublicKey)
	}
	if err := a.publish(ctx); err != nil {
		a.log.Error("revocation recorded but not pushed to the cluster; every coordinator pushes it when it starts", "kind", kindOf(edge), "name", name, "err", err)
		return nil, fmt.Errorf("auth: %s %q is revoked in the registry but the cluster did not take it yet (it does when a coordinator starts): %w", kindOf(edge), name, err)
	}
	return done, nil
}

// publish stores a new account JWT with every revocation and pushes it.
func (a *Authority) publish(ctx context.Context) error {
	if _, err := a.reg.publishAccount(ctx); err != nil {
		return err
	}
	return a.reg.pushCurrent(ctx)
}

// ErrAdminCredsExist: WriteFirstAdmin would write the first admin's
// credentials but will not overwrite the file there.
var ErrAdminCredsExist = errors.New("admin credentials not written")

// WriteFirstAdmin enrols the cluster's first admin, named "admin", and
// writes its credentials to path (0600) when the registry holds no live
// admin; otherwise it writes nothing and returns false. Of coordinators
// starting at once, exactly one enrols it (the name is taken with
// compare-and-set); the others return false. path must not exist when an
// admin is to be written.
func (a *Authority) WriteFirstAdmin(ctx context.Context, path string) (bool, error) {
	if a.reg == nil {
		return false, errors.New("auth: WriteFirstAdmin needs an authority from OpenCluster")
	}
	if a.liveAdmin() {
		return false, nil
	}
	if _, err := os.Lstat(path); err == nil {
		return false, fmt.Errorf("%w: the cluster has no live admin, and %s exists (the credentials of a revoked admin?): move it away and restart a coordinator to get a new first admin", ErrAdminCredsExist, path)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
		return false, fmt.Errorf("auth: admin credentials %s: directory %s does not exist", path, filepath.Dir(path))
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return false, fmt.Errorf("auth: %w", err)
	}
	rep, err := a.Enrol(ctx, EnrolRequest{V: proto.Version, Name: "admin", Role: RoleAdmin, PublicKey: mustPub(kp)})
	if errors.Is(err, errConflict) {
		// Another coordinator enrolled it a moment ago, or a live user
		// other than an admin holds the name.
		if holder, ok := a.reg.holder(ctx, "admin", false); ok && holder.Role == RoleAdmin {
			return false, nil
		}
		return false, fmt.Errorf("auth: the cluster has no live admin and the name admin is taken: revoke user admin (with the credentials of whoever holds it) and start again: %w", err)
	}
	if err != nil {
		return false, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return false, fmt.Errorf("auth: %w", err)
	}
	if err := WriteCreds(path, rep.JWT, seed); err != nil {
		return false, fmt.Errorf("auth: the first admin is enrolled but its credentials could not be written (revoke it from another coordinator, or start on a fresh cluster): %w", err)
	}
	return true, nil
}

func (a *Authority) liveAdmin() bool {
	for _, id := range a.reg.list() {
		if id.Role == RoleAdmin && id.Revoked == nil {
			return true
		}
	}
	return false
}
