package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/proto"
)

// Files of `fleetboot nats init DIR`: the identities of an existing NATS
// cluster run in operator mode for fleetboot. Seeds (*.nk, *.creds) are
// 0600; JWTs and resolver.conf hold nothing secret.
//
// Who needs what: the cluster's administrators include ResolverConfFile in
// every node's config. The coordinator gets FleetSigningSeedFile (it signs
// the user JWTs of `edge add` and `user add`), OperatorSigningSeedFile (an
// account's revocations and limits live in the account JWT, which only the
// operator or one of its signing keys may sign), APISigningSeedFile (it
// signs its own user of the API account, where it answers the API) and
// SysCredsFile (it pushes the re-signed account JWT to the resolver through
// the system account), plus the public FleetJWTFile and APIJWTFile. The
// identity seeds OperatorSeedFile, SysSeedFile, FleetSeedFile and
// APISeedFile are needed only to rotate those signing keys: keep them
// offline.
//
// The API account exists for the same reason as the embedded server's API
// account (see the package doc): the fleetboot account imports the API
// subjects from it with share=true, so every request that reaches the
// coordinator carries the caller's identity, stamped by nats-server.
const (
	OperatorSeedFile        = "operator.nk"
	OperatorSigningSeedFile = "operator-signing.nk"
	OperatorJWTFile         = "operator.jwt"
	SysSeedFile             = "sys.nk"
	SysJWTFile              = "sys.jwt"
	SysCredsFile            = "sys.creds"
	FleetSeedFile           = "fleetboot.nk"
	FleetSigningSeedFile    = "fleetboot-signing.nk"
	FleetJWTFile            = "fleetboot.jwt"
	APISeedFile             = "api.nk"
	APISigningSeedFile      = "api-signing.nk"
	APIJWTFile              = "api.jwt"
	ResolverConfFile        = "resolver.conf"
)

// clusterFiles lists every file InitCluster writes, so it can refuse
// before writing any of them.
func clusterFiles() []string {
	return []string{
		OperatorSeedFile, OperatorSigningSeedFile, OperatorJWTFile,
		SysSeedFile, SysJWTFile, SysCredsFile,
		FleetSeedFile, FleetSigningSeedFile, FleetJWTFile,
		APISeedFile, APISigningSeedFile, APIJWTFile,
		ResolverConfFile,
	}
}

// ErrClusterExists: InitCluster's directory already holds keys.
var ErrClusterExists = errors.New("already holds fleetboot NATS keys")

// ClusterInit is what InitCluster made: public keys (for the caller to
// print) and JWTs.
type ClusterInit struct {
	Dir, ResolverDir                    string
	Sync                                time.Duration
	Operator, System, Fleet, API        string // identity public keys
	OpSigning, FleetSigning, APISigning string // signing public keys
	OperatorJWT, SysJWT                 string
	FleetJWT, APIJWT                    string
}

// InitCluster creates in dir the operator, the system account, the
// fleetboot account and the API account with a signing key each, the system account's user
// credentials and resolver.conf, a nats-server configuration fragment
// whose full resolver keeps account JWTs in resolverDir on each node and
// compares them with the other nodes' every sync (so a node that was down
// when an update was pushed has it at most sync after it is back). It
// never overwrites: if dir holds any of its files it changes nothing.
func InitCluster(dir, resolverDir string, sync time.Duration) (ci *ClusterInit, err error) {
	if err := validResolverDir(resolverDir); err != nil {
		return nil, err
	}
	if sync < time.Second {
		return nil, fmt.Errorf("auth: nats init: sync interval %s: want 1s or more", sync)
	}
	for _, f := range clusterFiles() {
		p := filepath.Join(dir, f)
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("auth: nats init: %s %w (%s); refusing to overwrite", dir, ErrClusterExists, f)
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("auth: nats init: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: nats init: %w", err)
	}
	var made []string // removed again on failure: half a set of keys is worse than none
	defer func() {
		if err != nil {
			for _, p := range made {
				os.Remove(p)
			}
		}
	}()
	keys := map[string]nkeys.KeyPair{}
	for _, k := range []struct {
		file string
		mk   func() (nkeys.KeyPair, error)
	}{
		{OperatorSeedFile, nkeys.CreateOperator},
		{OperatorSigningSeedFile, nkeys.CreateOperator},
		{SysSeedFile, nkeys.CreateAccount},
		{FleetSeedFile, nkeys.CreateAccount},
		{FleetSigningSeedFile, nkeys.CreateAccount},
		{APISeedFile, nkeys.CreateAccount},
		{APISigningSeedFile, nkeys.CreateAccount},
	} {
		kp, err := loadOrCreateKey(filepath.Join(dir, k.file), k.mk)
		if err != nil {
			return nil, err
		}
		made = append(made, filepath.Join(dir, k.file))
		keys[k.file] = kp
	}
	op, opSigning := keys[OperatorSeedFile], keys[OperatorSigningSeedFile]
	sys, fleet, fleetSigning := keys[SysSeedFile], keys[FleetSeedFile], keys[FleetSigningSeedFile]
	api, apiSigning := keys[APISeedFile], keys[APISigningSeedFile]

	oc := jwt.NewOperatorClaims(mustPub(op))
	oc.Name = "fleetboot"
	oc.SystemAccount = mustPub(sys)
	oc.SigningKeys.Add(mustPub(opSigning))
	opJWT, err := oc.Encode(op)
	if err != nil {
		return nil, fmt.Errorf("auth: nats init: operator JWT: %w", err)
	}
	sc := jwt.NewAccountClaims(mustPub(sys))
	sc.Name = "SYS"
	sysJWT, err := sc.Encode(opSigning)
	if err != nil {
		return nil, fmt.Errorf("auth: nats init: system account JWT: %w", err)
	}
	fleetJWT, err := ClusterFleetAccount(mustPub(fleet), mustPub(fleetSigning), mustPub(api)).Encode(opSigning)
	if err != nil {
		return nil, fmt.Errorf("auth: nats init: fleetboot account JWT: %w", err)
	}
	apiJWT, err := ClusterAPIAccount(mustPub(api), mustPub(apiSigning)).Encode(opSigning)
	if err != nil {
		return nil, fmt.Errorf("auth: nats init: API account JWT: %w", err)
	}
	// The coordinator's connection to the system account: it only needs to
	// send $SYS.REQ.CLAIMS.UPDATE and read the reply.
	sysUser, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("auth: nats init: %w", err)
	}
	uc := jwt.NewUserClaims(mustPub(sysUser))
	uc.Name = "fleetboot-coordinator"
	uc.Pub.Allow.Add("$SYS.REQ.CLAIMS.UPDATE", "$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE")
	uc.Sub.Allow.Add("_INBOX.>")
	sysUserJWT, err := uc.Encode(sys)
	if err != nil {
		return nil, fmt.Errorf("auth: nats init: system user JWT: %w", err)
	}
	sysUserSeed, err := sysUser.Seed()
	if err != nil {
		return nil, fmt.Errorf("auth: nats init: %w", err)
	}
	if err := WriteCreds(filepath.Join(dir, SysCredsFile), sysUserJWT, sysUserSeed); err != nil {
		return nil, err
	}
	made = append(made, filepath.Join(dir, SysCredsFile))
	ci = &ClusterInit{
		Dir: dir, ResolverDir: resolverDir, Sync: sync,
		Operator: mustPub(op), System: mustPub(sys), Fleet: mustPub(fleet), API: mustPub(api),
		OpSigning: mustPub(opSigning), FleetSigning: mustPub(fleetSigning), APISigning: mustPub(apiSigning),
		OperatorJWT: opJWT, SysJWT: sysJWT, FleetJWT: fleetJWT, APIJWT: apiJWT,
	}
	for _, f := range []struct{ name, data string }{
		{OperatorJWTFile, opJWT},
		{SysJWTFile, sysJWT},
		{FleetJWTFile, fleetJWT},
		{APIJWTFile, apiJWT},
		{ResolverConfFile, ci.resolverConf()},
	} {
		if err := writePublic(filepath.Join(dir, f.name), f.data); err != nil {
			return nil, err
		}
		made = append(made, filepath.Join(dir, f.name))
	}
	return ci, nil
}

// ClusterFleetAccount is the fleetboot account's definition on a cluster:
// JetStream, the same caps as the embedded server's FLEET account, the
// signing key user JWTs are signed with (so the account's identity key
// stays offline) and, as FLEET's, the API subjects imported from the API
// account with share=true. Whoever re-signs it (revocations) starts from
// here.
func ClusterFleetAccount(account, signingKey, apiAccount string) *jwt.AccountClaims {
	ac := jwt.NewAccountClaims(account)
	ac.Name = "fleetboot"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: MaxConsumers, MaxAckPending: -1}
	ac.Limits.Conn = MaxConnections
	ac.SigningKeys.Add(signingKey)
	ac.Imports.Add(apiImport(apiAccount))
	return ac
}

// ClusterAPIAccount is the API account's definition on a cluster: as the
// embedded server's API account, it exports the API subjects as a service,
// and only the coordinators connect to it (users signed with signingKey).
func ClusterAPIAccount(account, signingKey string) *jwt.AccountClaims {
	ac := jwt.NewAccountClaims(account)
	ac.Name = "fleetboot-api"
	ac.SigningKeys.Add(signingKey)
	ac.Exports.Add(apiExport())
	return ac
}

// apiExport and apiImport are the API service of the API account and its
// import into the fleet account, the same in the embedded server and on a
// cluster: share=true makes nats-server stamp each request with its caller.
func apiExport() *jwt.Export {
	return &jwt.Export{Name: "fleetboot-api", Subject: jwt.Subject(proto.APIPrefix + ".>"), Type: jwt.Service, ResponseType: jwt.ResponseTypeSingleton}
}

func apiImport(apiAccount string) *jwt.Import {
	return &jwt.Import{Name: "fleetboot-api", Subject: jwt.Subject(proto.APIPrefix + ".>"), Account: apiAccount, Type: jwt.Service, Share: true}
}

// resolverConf is the nats-server fragment: the operator, the system
// account and a full resolver (each node keeps every account JWT in its
// own directory and takes updates pushed to $SYS.REQ.CLAIMS.UPDATE, so a
// revocation reaches every node and survives restarts). The accounts are
// preloaded so the cluster starts without anyone pushing them; a node keeps
// a newer JWT from its directory over the preloaded one (higher iat).
func (ci *ClusterInit) resolverConf() string {
	var b strings.Builder
	fmt.Fprintf(&b, `# fleetboot operator mode, written by "fleetboot nats init".
# Include it in every node's nats-server configuration (include resolver.conf;
# the path is relative to the including file). Nothing here is secret.
# operator %s, system account %s, fleetboot account %s, API account %s
operator: %q
system_account: %s
resolver: {
    type: full
    # each node's own directory (same path on every node is fine)
    dir: %q
    allow_delete: false
    # a node that missed an update (down when it was pushed) gets it from
    # the others at the next sync
    interval: %q
}
resolver_preload: {
    %s: %q
    %s: %q
    %s: %q
}
# Branch offices' leaf nodes (deploy/nats/leaf.conf) use this cluster's
# JetStream in the fleetboot account: without this line nats-server denies
# JetStream API requests that cross a leaf connection.
default_js_domain: { %s: "" }
`, ci.Operator, ci.System, ci.Fleet, ci.API, ci.OperatorJWT, ci.System, ci.ResolverDir, ci.Sync.String(),
		ci.System, ci.SysJWT, ci.Fleet, ci.FleetJWT, ci.API, ci.APIJWT, ci.Fleet)
	return b.String()
}

// validResolverDir: an absolute path (nats-server resolves a relative one
// against its working directory, not the config file) that the fragment
// can quote as it is.
func validResolverDir(d string) error {
	if !filepath.IsAbs(d) {
		return fmt.Errorf("auth: nats init: resolver dir %q must be an absolute path", d)
	}
	if strings.ContainsAny(d, "\"\\$") || strings.ContainsFunc(d, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("auth: nats init: resolver dir %q contains a quote, backslash, $ or control character", d)
	}
	return nil
}

// writePublic writes a file that holds nothing secret, never overwriting.
func writePublic(path, data string) error { return writeNew(path, []byte(data), 0o644) }

// PushAccount sends a signed account JWT to the cluster's full resolver
// over a system-account connection. The node that answers stores it and
// forwards it to the others; the reply says whether it was taken.
func PushAccount(ctx context.Context, sys *nats.Conn, accountJWT string) error {
	msg, err := sys.RequestWithContext(ctx, "$SYS.REQ.CLAIMS.UPDATE", []byte(accountJWT))
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("auth: push account update: no resolver answers (does every node's config include resolver.conf, with its full resolver?): %w", err)
	}
	if err != nil {
		return fmt.Errorf("auth: push account update: %w", err)
	}
	var rep struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return fmt.Errorf("auth: account update reply %q: %w", msg.Data, err)
	}
	if rep.Error != nil {
		return fmt.Errorf("auth: account update refused: %s", rep.Error.Description)
	}
	return nil
}
