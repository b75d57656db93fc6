package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/atomicfile"
)

// API endpoints that enrol and revoke (defined in proto, named here for
// the callers that know them by this package).
const (
	APIEdgeAdd    = proto.APIEdgeAdd
	APIEdgeRevoke = proto.APIEdgeRevoke
	APIUserAdd    = proto.APIUserAdd
	APIUserRevoke = proto.APIUserRevoke
)

// Sentinel errors. Invalid, not found and conflict reuse the service's, so
// the API answers them with the same codes.
var (
	// ErrDenied: the caller may not make this request.
	ErrDenied   = errors.New("permission denied")
	errInvalid  = service.ErrInvalid
	errNotFound = service.ErrNotFound
	errConflict = service.ErrConflict
)

// Account says which of the coordinator's accounts a connection joins.
type Account int

// The accounts. FLEET holds JetStream, edges and people; API holds only the
// coordinator's API responder (so requests cross an import and carry the
// caller's identity); SYS is the server's system account (claim updates).
const (
	AccountFleet Account = iota
	AccountAPI
	AccountSys
)

// EnrolRequest and EnrolReply are the wire types of enrolment (proto).
type (
	EnrolRequest = proto.EnrolRequest
	EnrolReply   = proto.EnrolReply
)

// Limits of the FLEET account: a leaked or misbehaving credential may not
// open connections or consumers without bound. A fleet needs a few of each
// per edge (three watches) and per running CLI command.
const (
	MaxConnections = 4096
	MaxConsumers   = 4096
)

// Authority holds the operator and account keys (under its directory, 0600)
// and the registry of enrolled identities, signs user JWTs and revokes them.
type Authority struct {
	dir string
	log *slog.Logger
	now func() time.Time

	operator, fleet, api, sys nkeys.KeyPair // fixed after Open
	resolver                  *server.MemAccResolver
	cluster                   *ClusterAccount // set by OpenCluster: signs instead of fleet
	reg                       *registry       // set by OpenCluster: the cluster's registry instead of ids

	mu   sync.Mutex
	ids  []Identity
	push func(ctx context.Context, account, claim string) error

	webMu   sync.Mutex
	webCost int    // least bcrypt cost of web passwords; 0 = MinWebPasswordCost
	dummy   []byte // compared for names without a web password
}

// Open loads the keys and registry from dir, creating them the first time.
func Open(dir string, log *slog.Logger) (*Authority, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	a := &Authority{dir: dir, log: log, now: time.Now}
	var err error
	for _, k := range []struct {
		file string
		kp   *nkeys.KeyPair
		mk   func() (nkeys.KeyPair, error)
	}{
		{"operator.nk", &a.operator, nkeys.CreateOperator},
		{"fleet.nk", &a.fleet, nkeys.CreateAccount},
		{"api.nk", &a.api, nkeys.CreateAccount},
		{"sys.nk", &a.sys, nkeys.CreateAccount},
	} {
		if *k.kp, err = loadOrCreateKey(filepath.Join(dir, k.file), k.mk); err != nil {
			return nil, err
		}
	}
	data, err := os.ReadFile(a.registryPath())
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("auth: %w", err)
	default:
		if err := json.Unmarshal(data, &a.ids); err != nil {
			return nil, fmt.Errorf("auth: %s: %w", a.registryPath(), err)
		}
	}
	return a, nil
}

func (a *Authority) registryPath() string { return filepath.Join(a.dir, "identities.json") }

// FleetAccount is the public key of the account edges and people join.
func (a *Authority) FleetAccount() string {
	if a.cluster != nil {
		return a.cluster.Account()
	}
	return mustPub(a.fleet)
}

// Configure puts the embedded server in operator mode: trusted operator,
// accounts from an in-memory resolver, system account.
func (a *Authority) Configure(o *server.Options) error {
	op := jwt.NewOperatorClaims(mustPub(a.operator))
	op.Name = "fleetboot"
	op.SystemAccount = mustPub(a.sys)
	opJWT, err := op.Encode(a.operator)
	if err != nil {
		return fmt.Errorf("auth: operator JWT: %w", err)
	}
	opClaims, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		return fmt.Errorf("auth: operator JWT: %w", err)
	}
	res := &server.MemAccResolver{}
	a.mu.Lock()
	fleetJWT, err := a.fleetJWT()
	a.mu.Unlock()
	if err != nil {
		return err
	}
	apiAcc := jwt.NewAccountClaims(mustPub(a.api))
	apiAcc.Name = "API"
	apiAcc.Exports.Add(apiExport())
	sysAcc := jwt.NewAccountClaims(mustPub(a.sys))
	sysAcc.Name = "SYS"
	for _, acc := range []struct {
		claims *jwt.AccountClaims
		jwt    string
	}{{apiAcc, ""}, {sysAcc, ""}, {nil, fleetJWT}} {
		tok := acc.jwt
		if acc.claims != nil {
			if tok, err = acc.claims.Encode(a.operator); err != nil {
				return fmt.Errorf("auth: account JWT: %w", err)
			}
		}
		c, err := jwt.DecodeAccountClaims(tok)
		if err != nil {
			return fmt.Errorf("auth: account JWT: %w", err)
		}
		if err := res.Store(c.Subject, tok); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	}
	o.TrustedOperators = []*jwt.OperatorClaims{opClaims}
	o.AccountResolver = res
	o.SystemAccount = mustPub(a.sys)
	a.resolver = res
	return nil
}

// fleetJWT signs the FLEET account: JetStream, the API import with
// share=true (the server then adds the caller's identity to each request),
// and the revocations. Callers hold a.mu.
func (a *Authority) fleetJWT() (string, error) {
	ac := jwt.NewAccountClaims(mustPub(a.fleet))
	ac.Name = "FLEET"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: MaxConsumers, MaxAckPending: -1}
	ac.Limits.Conn = MaxConnections
	ac.Imports.Add(apiImport(mustPub(a.api)))
	for _, id := range a.ids {
		if id.Revoked != nil {
			ac.RevokeAt(id.PublicKey, *id.Revoked)
		}
	}
	tok, err := ac.Encode(a.operator)
	if err != nil {
		return "", fmt.Errorf("auth: sign FLEET account: %w", err)
	}
	return tok, nil
}

// ConnectOption returns credentials for one of the coordinator's own
// connections: a fresh user with no restrictions, never written to disk.
func (a *Authority) ConnectOption(acc Account) (nats.Option, error) {
	if a.cluster != nil {
		return a.cluster.ConnectOption(acc)
	}
	kp := map[Account]nkeys.KeyPair{AccountFleet: a.fleet, AccountAPI: a.api, AccountSys: a.sys}[acc]
	if kp == nil {
		return nil, fmt.Errorf("auth: unknown account %d", acc)
	}
	return coordinatorUser(kp, "")
}

// coordinatorUser signs, with an account's key kp (issuerAccount set when
// kp is one of its signing keys), a fresh user with no restrictions for
// one of the coordinator's own connections; its seed never leaves memory.
func coordinatorUser(kp nkeys.KeyPair, issuerAccount string) (nats.Option, error) {
	user, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	uc := jwt.NewUserClaims(mustPub(user))
	uc.Name = "fleetboot-coordinator"
	uc.IssuerAccount = issuerAccount
	uc.Tags.Add("role:coordinator")
	tok, err := uc.Encode(kp)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	seed, err := user.Seed()
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return nats.UserJWTAndSeed(tok, string(seed)), nil
}

// Attach gives the authority the system-account connection it pushes
// account updates (revocations) through.
func (a *Authority) Attach(sys *nats.Conn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.push = func(ctx context.Context, account, claim string) error {
		msg, err := sys.RequestWithContext(ctx, "$SYS.REQ.ACCOUNT."+account+".CLAIMS.UPDATE", []byte(claim))
		if err != nil {
			return fmt.Errorf("auth: push account update: %w", err)
		}
		var rep struct {
			Data *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"data"`
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		if err := json.Unmarshal(msg.Data, &rep); err != nil {
			return fmt.Errorf("auth: account update reply: %w", err)
		}
		if rep.Error != nil {
			return fmt.Errorf("auth: account update refused: %s", rep.Error.Description)
		}
		return nil
	}
}

// Enrol signs a user JWT for a new identity and records it.
func (a *Authority) Enrol(ctx context.Context, r EnrolRequest) (EnrolReply, error) {
	if !nkeys.IsValidPublicUserKey(r.PublicKey) {
		return EnrolReply{}, fmt.Errorf("%w: public_key is not an nkey user public key", errInvalid)
	}
	id := Identity{Name: r.Name, Role: r.Role, Site: r.Site, PublicKey: r.PublicKey, Issued: a.now().UTC().Truncate(time.Second), WebPassword: r.WebPassword}
	if err := a.validWebPassword(r); err != nil {
		return EnrolReply{}, err
	}
	switch r.Role {
	case RoleEdge:
		if err := ValidEdge(r.Site, r.Name); err != nil {
			return EnrolReply{}, fmt.Errorf("%w: %v", errInvalid, err)
		}
	case RoleAdmin, RoleViewer:
		if err := proto.ValidName("user", r.Name); err != nil {
			return EnrolReply{}, fmt.Errorf("%w: %v", errInvalid, err)
		}
		if r.Site != "" {
			return EnrolReply{}, fmt.Errorf("%w: role %s has no site (only a site-admin has one)", errInvalid, r.Role)
		}
	case RoleSiteAdmin:
		if err := ValidSiteAdmin(r.Site, r.Name); err != nil {
			return EnrolReply{}, fmt.Errorf("%w: %v", errInvalid, err)
		}
	default:
		return EnrolReply{}, fmt.Errorf("%w: invalid role %q: want admin, viewer or site-admin", errInvalid, r.Role)
	}
	perms, err := Permissions(id)
	if err != nil {
		return EnrolReply{}, err
	}
	uc := jwt.NewUserClaims(r.PublicKey)
	uc.Name = r.Name
	uc.Tags.Add("role:" + string(r.Role))
	if r.Site != "" {
		uc.Tags.Add("site:" + r.Site)
	}
	uc.Permissions = perms
	if a.reg != nil {
		return a.enrolCluster(ctx, id, uc)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, o := range a.ids {
		if o.Revoked == nil && o.Name == id.Name && (o.Role == RoleEdge) == (id.Role == RoleEdge) {
			return EnrolReply{}, fmt.Errorf("%w: %s is already enrolled; revoke it first", errConflict, o)
		}
		if o.PublicKey == id.PublicKey {
			return EnrolReply{}, fmt.Errorf("%w: this public key was enrolled before; make a new key pair", errConflict)
		}
	}
	tok, err := a.signUser(uc)
	if err != nil {
		return EnrolReply{}, err
	}
	a.ids = append(a.ids, id)
	if err := a.save(); err != nil {
		a.ids = a.ids[:len(a.ids)-1]
		return EnrolReply{}, err
	}
	a.log.Info("identity enrolled", "identity", id.String(), "key", id.PublicKey)
	return EnrolReply{V: proto.Version, Identity: id, JWT: tok, InboxPrefix: InboxPrefixOf(id)}, nil
}

// Revoke ends every live credential of an edge (edge true) or a user by
// name: the re-signed account JWT goes to the server, which disconnects the
// credential's connections and refuses it from then on.
func (a *Authority) Revoke(ctx context.Context, name string, edge bool) ([]Identity, error) {
	if a.reg != nil {
		return a.revokeCluster(ctx, name, edge)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	old := slices.Clone(a.ids)
	at := a.now().UTC().Truncate(time.Second)
	var done []Identity
	for i, id := range a.ids {
		if id.Revoked == nil && id.Name == name && (id.Role == RoleEdge) == edge {
			a.ids[i].Revoked = &at
			done = append(done, a.ids[i])
		}
	}
	kind := "user"
	if edge {
		kind = "edge"
	}
	if len(done) == 0 {
		return nil, fmt.Errorf("%s %q: %w (never enrolled, or revoked already)", kind, name, errNotFound)
	}
	// The registry on disk is the commit point: save (fsynced) first, then
	// tell the server. Pushed first, a failed save would leave the server
	// refusing a credential that a restart (which re-signs the account from
	// the registry) lets in again. A failed save changes nothing anywhere.
	if err := a.save(); err != nil {
		a.ids = old
		return nil, fmt.Errorf("auth: revoke %s %q: nothing revoked: %w", kind, name, err)
	}
	for _, id := range done {
		a.log.Info("identity revoked", "identity", id.String(), "key", id.PublicKey)
	}
	if err := a.apply(ctx); err != nil {
		// Saved, so it holds from the next start on; say loudly that the
		// running server has not taken it yet.
		a.log.Error("revocation saved but not pushed to the running server; restart the coordinator to enforce it", "kind", kind, "name", name, "err", err)
		return nil, fmt.Errorf("auth: %s %q is revoked in the registry but the running server did not take it (restart the coordinator to enforce it): %w", kind, name, err)
	}
	return done, nil
}

// apply re-signs the FLEET account and hands it to the running server.
// Callers hold a.mu.
func (a *Authority) apply(ctx context.Context) error {
	tok, err := a.fleetJWT()
	if err != nil {
		return err
	}
	if a.resolver != nil {
		if err := a.resolver.Store(mustPub(a.fleet), tok); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	}
	if a.push == nil {
		return nil // the server is not running yet: Configure picks it up
	}
	return a.push(ctx, mustPub(a.fleet), tok)
}

// Lookup returns the live identity holding a user public key.
func (a *Authority) Lookup(pub string) (Identity, bool) {
	if a.reg != nil {
		id, ok := a.reg.lookup(pub)
		return id, ok && id.Revoked == nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, id := range a.ids {
		if id.PublicKey == pub && id.Revoked == nil {
			return id, true
		}
	}
	return Identity{}, false
}

// Identities lists every enrolled identity, revoked ones included.
func (a *Authority) Identities() []Identity {
	if a.reg != nil {
		return a.reg.list()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.ids)
}

// WriteAdminCreds enrols the first admin and writes its credentials to path
// (0600), unless path exists. Embedded server only (see WriteFirstAdmin). Run it before the server starts: if a live
// "admin" exists (its file was deleted), it is revoked and replaced, so
// deleting admin.creds and restarting is how a lost admin key is rotated.
func (a *Authority) WriteAdminCreds(path string) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return false, fmt.Errorf("auth: %w", err)
	}
	a.mu.Lock()
	at := a.now().UTC().Truncate(time.Second)
	for i, id := range a.ids {
		if id.Revoked == nil && id.Name == "admin" && id.Role != RoleEdge {
			a.ids[i].Revoked = &at
		}
	}
	err = a.apply(context.Background())
	a.mu.Unlock()
	if err != nil {
		return false, err
	}
	rep, err := a.Enrol(context.Background(), EnrolRequest{V: proto.Version, Name: "admin", Role: RoleAdmin, PublicKey: mustPub(kp)})
	if err != nil {
		return false, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return false, fmt.Errorf("auth: %w", err)
	}
	return true, WriteCreds(path, rep.JWT, seed)
}

// save writes the registry atomically (0600: it maps names to keys).
func (a *Authority) save() error {
	data, err := json.MarshalIndent(a.ids, "", "  ")
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if err := atomicfile.WriteFile(a.registryPath(), data, 0o600); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	return nil
}

func loadOrCreateKey(path string, mk func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	seed, err := os.ReadFile(path)
	if err == nil {
		kp, err := nkeys.FromSeed(seed)
		if err != nil {
			// Never quote the file: it holds a seed.
			return nil, fmt.Errorf("auth: %s does not hold a valid nkey seed", path)
		}
		return kp, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("auth: %w", err)
	}
	kp, err := mk()
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	seed, err = kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if err := writeSecret(path, seed); err != nil {
		return nil, err
	}
	return kp, nil
}

func mustPub(kp nkeys.KeyPair) string {
	// PublicKey fails only on a key pair without a seed or public key,
	// which Open never builds.
	pub, err := kp.PublicKey()
	if err != nil {
		return ""
	}
	return pub
}
