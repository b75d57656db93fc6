package auth

import (
	"encoding/json"
	"errors"
	"fmt"
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
// `fleetboot nats init`: user JWTs with the account's signing key, the
// account JWT itself (its revocations) with the operator's signing key,
// and the coordinator's own users of the API account with that account's
// signing key. It holds no identity key: those stay offline.
type ClusterAccount struct {
	account   string // public key of the fleetboot account
	api       string // public key of the API account
	preloaded int64  // iat of the account JWT in resolver.conf
	// preloadedDef is the account JWT of resolver.conf (fleetboot.jwt): the
	// cluster's account while no coordinator has stored a newer one.
	preloadedDef *jwt.AccountClaims

	mu         sync.Mutex
	last       int64         // iat of the last account JWT signed here
	signing    nkeys.KeyPair // the account's signing key: users
	apiSigning nkeys.KeyPair // the API account's signing key: the coordinator's API users
	opSigning  nkeys.KeyPair // an operator signing key: the account JWT
}

// OpenClusterAccount loads the coordinator's part of a `nats init`
// directory; see OpenClusterKey.
func OpenClusterAccount(dir string) (*ClusterAccount, error) {
	return OpenClusterKey(filepath.Join(dir, FleetSigningSeedFile))
}

// OpenClusterKey loads the fleetboot account's signing key from keyFile
// and, from the same directory, fleetboot.jwt (which account, and that it
// lists the signing key and imports the API), operator-signing.nk, api.jwt
// and api-signing.nk. Seeds must be readable by their owner only.
func OpenClusterKey(keyFile string) (*ClusterAccount, error) {
	dir := filepath.Dir(keyFile)
	ac, err := readAccountJWT(filepath.Join(dir, FleetJWTFile))
	if err != nil {
		return nil, err
	}
	apiAC, err := readAccountJWT(filepath.Join(dir, APIJWTFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("auth: %s: no such file: the directory was made by an older `fleetboot nats init`, without the API account; run it again in a new directory", filepath.Join(dir, APIJWTFile))
	}
	if err != nil {
		return nil, err
	}
	c := &ClusterAccount{account: ac.Subject, api: apiAC.Subject, preloaded: ac.IssuedAt, preloadedDef: ac}
	for _, k := range []struct {
		path string
		kp   *nkeys.KeyPair
	}{{keyFile, &c.signing}, {filepath.Join(dir, OperatorSigningSeedFile), &c.opSigning}, {filepath.Join(dir, APISigningSeedFile), &c.apiSigning}} {
		if *k.kp, err = readSeed(k.path); err != nil {
			return nil, err
		}
	}
	if !ac.SigningKeys.Contains(mustPub(c.signing)) {
		return nil, fmt.Errorf("auth: %s is not a signing key of account %s (%s)", keyFile, c.account, filepath.Join(dir, FleetJWTFile))
	}
	if !apiAC.SigningKeys.Contains(mustPub(c.apiSigning)) {
		return nil, fmt.Errorf("auth: %s is not a signing key of the API account %s", filepath.Join(dir, APISigningSeedFile), c.api)
	}
	for _, a := range []*jwt.AccountClaims{ac, apiAC} {
		if a.Issuer != mustPub(c.opSigning) {
			return nil, fmt.Errorf("auth: %s did not sign account %s", filepath.Join(dir, OperatorSigningSeedFile), a.Subject)
		}
	}
	if !importsAPI(ac, c.api) {
		return nil, fmt.Errorf("auth: account %s (%s) does not import the API from %s: made by an older `fleetboot nats init`? run it again in a new directory", c.account, filepath.Join(dir, FleetJWTFile), c.api)
	}
	return c, nil
}

func readAccountJWT(path string) (*jwt.AccountClaims, error) {
	tok, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	ac, err := jwt.DecodeAccountClaims(strings.TrimSpace(string(tok)))
	if err != nil {
		return nil, fmt.Errorf("auth: %s: not an account JWT: %w", path, err)
	}
	return ac, nil
}

func importsAPI(ac *jwt.AccountClaims, api string) bool {
	for _, im := range ac.Imports {
		if im.Account == api && im.Type == jwt.Service && im.Share && string(im.Subject) == string(apiImport(api).Subject) {
			return true
		}
	}
	return false
}

// Account is the fleetboot account's public key.
func (c *ClusterAccount) Account() string { return c.account }

// API is the API account's public key.
func (c *ClusterAccount) API() string { return c.api }

// SignUser signs a user JWT of the account with its signing key.
func (c *ClusterAccount) SignUser(uc *jwt.UserClaims) (string, error) {
	uc.IssuerAccount = c.account
	tok, err := uc.Encode(c.signing)
	if err != nil {
		return "", fmt.Errorf("auth: sign user: %w", err)
	}
	return tok, nil
}

// ConnectOption returns credentials for one of the coordinator's own
// connections to the fleetboot or the API account: a fresh user with no
// restrictions, signed here and never written to disk. The system account
// is reached with sys.creds instead (its signing keys stay offline).
func (c *ClusterAccount) ConnectOption(acc Account) (nats.Option, error) {
	issuer, kp := c.account, c.signing
	switch acc {
	case AccountFleet:
	case AccountAPI:
		issuer, kp = c.api, c.apiSigning
	default:
		return nil, fmt.Errorf("auth: the coordinator signs no user of account %d on a cluster", acc)
	}
	return coordinatorUser(kp, issuer)
}

// AccountJWT re-signs the account from its definition with the given
// revocations (user public key → revoked at), issued after the second
// after (the iat of the newest account JWT anyone stored), for
// PushAccount.
func (c *ClusterAccount) AccountJWT(revoked map[string]time.Time, after int64) (string, error) {
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
	floor := max(c.preloaded, c.last, after) + 1
	if d := time.Until(time.Unix(floor, 0)); d > maxClockWait {
		return "", fmt.Errorf("auth: the newest fleetboot account JWT was issued %s in this machine's future: is its clock behind the other coordinator's?", d.Round(time.Second))
	} else if d > 0 {
		time.Sleep(d)
	}
	ac := ClusterFleetAccount(c.account, mustPub(c.signing), c.api)
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

// maxClockWait bounds how long AccountJWT waits for its clock to pass
// the newest account JWT's iat (signed by a coordinator whose clock runs
// ahead): longer means the clocks disagree, which NTP should fix.
const maxClockWait = 30 * time.Second

// upToDate tells whether an account JWT ("" : the preloaded one) carries
// this version's definition of the account (ClusterFleetAccount: limits,
// import of the API, signing keys), whatever its revocations. A cluster
// set up by an older fleetboot, or whose account someone re-signed by hand,
// gets the definition pushed again when a coordinator starts.
func (c *ClusterAccount) upToDate(tok string) (bool, error) {
	have := c.preloadedDef
	if tok != "" {
		var err error
		if have, err = jwt.DecodeAccountClaims(tok); err != nil {
			return false, fmt.Errorf("auth: stored account JWT: %w", err)
		}
	}
	defTok, err := ClusterFleetAccount(c.account, mustPub(c.signing), c.api).Encode(c.opSigning)
	if err != nil {
		return false, fmt.Errorf("auth: sign the fleetboot account: %w", err)
	}
	want, err := jwt.DecodeAccountClaims(defTok)
	if err != nil {
		return false, fmt.Errorf("auth: fleetboot account: %w", err)
	}
	return definition(have) == definition(want), nil
}

// definition is what an account JWT says about the account besides its
// revocations, in a comparable form.
func definition(ac *jwt.AccountClaims) string {
	a := ac.Account
	a.Revocations = nil
	b, err := json.Marshal(a)
	if err != nil {
		return "" // never equal to a real definition
	}
	return string(b)
}

// revocations returns the revocations of an account JWT of c's account
// signed by c's operator signing key, and its iat.
func (c *ClusterAccount) revocations(tok string) (map[string]time.Time, int64, error) {
	ac, err := jwt.DecodeAccountClaims(tok)
	if err != nil {
		return nil, 0, fmt.Errorf("auth: stored account JWT: %w", err)
	}
	if ac.Subject != c.account || ac.Issuer != mustPub(c.opSigning) {
		return nil, 0, fmt.Errorf("auth: stored account JWT is for account %s signed by %s, not %s by this operator signing key", ac.Subject, ac.Issuer, c.account)
	}
	out := make(map[string]time.Time, len(ac.Revocations))
	for k, at := range ac.Revocations {
		out[k] = time.Unix(at, 0)
	}
	return out, ac.IssuedAt, nil
}

// readSeed reads an nkey seed that only its owner may read.
func readSeed(path string) (nkeys.KeyPair, error) {
	seed, err := readSecret(path)
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		// Never quote the file: it holds a seed.
		return nil, fmt.Errorf("auth: %s does not hold a valid nkey seed", path)
	}
	return kp, nil
}

// readSecret reads a file holding a seed, refusing one that others may
// read: a key the whole machine can read is a key to the whole fleet.
func readSecret(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("auth: %s holds a secret key but others may read it (mode %04o): chmod 600 %s", path, m, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return data, nil
}

// CheckCredsFile checks a NATS credentials file before it is used: it
// exists, only its owner may read it, and it holds a user JWT and seed.
func CheckCredsFile(path string) error {
	data, err := readSecret(path)
	if err != nil {
		return err
	}
	if _, err := jwt.ParseDecoratedJWT(data); err != nil {
		return fmt.Errorf("auth: %s is not a NATS credentials file", path)
	}
	if _, err := jwt.ParseDecoratedNKey(data); err != nil {
		return fmt.Errorf("auth: %s is not a NATS credentials file", path)
	}
	return nil
}
