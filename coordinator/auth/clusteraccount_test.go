package auth_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/coordinator/auth"
)

// TestOpenClusterAccount: the coordinator's part of a `nats init`
// directory loads only if its keys belong together, never quoting a seed;
// the account JWTs it signs keep the signing key, carry the revocations and
// are each issued in a later second than the one before, the preloaded one
// included (see AccountJWT).
func TestOpenClusterAccount(t *testing.T) {
	otherAccount, _ := nkeys.CreateAccount()
	otherOperator, _ := nkeys.CreateOperator()
	seed := func(kp nkeys.KeyPair) string { s, _ := kp.Seed(); return string(s) }
	cases := []struct {
		name, file, content, want string
	}{
		{"ok", "", "", ""},
		{"signing key of another account", auth.FleetSigningSeedFile, seed(otherAccount), "is not a signing key of account"},
		{"another operator key", auth.OperatorSigningSeedFile, seed(otherOperator), "did not sign account"},
		{"not a seed", auth.FleetSigningSeedFile, "SUAsecretbutbroken", "does not hold a valid nkey seed"},
		{"not a JWT", auth.FleetJWTFile, "hello", "not an account JWT"},
		{"missing", auth.OperatorSigningSeedFile, "-", "no such file"},
		{"API signing key of another account", auth.APISigningSeedFile, seed(otherAccount), "is not a signing key of the API account"},
		{"API JWT missing", auth.APIJWTFile, "-", "made by an older `fleetboot nats init`"},
		{"readable by others", auth.FleetSigningSeedFile, "0644", "others may read it (mode 0644): chmod 600"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ci, err := auth.InitCluster(dir, "/var/lib/nats/fb", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if c.content == "0644" {
				if err := os.Chmod(filepath.Join(dir, c.file), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if c.file != "" {
				p := filepath.Join(dir, c.file)
				os.Remove(p)
				if c.content != "-" {
					if err := os.WriteFile(p, []byte(c.content), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			acct, err := auth.OpenClusterAccount(dir)
			if c.want != "" {
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("err = %v, want %q", err, c.want)
				}
				if len(c.content) > 4 && strings.Contains(err.Error(), c.content) {
					t.Errorf("the error quotes the file: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if acct.Account() != ci.Fleet {
				t.Errorf("account %s, want %s", acct.Account(), ci.Fleet)
			}
			user, _ := nkeys.CreateUser()
			userPub, _ := user.PublicKey()
			at := time.Now()
			tok, err := acct.AccountJWT(map[string]time.Time{userPub: at}, 0)
			if err != nil {
				t.Fatal(err)
			}
			ac, err := jwt.DecodeAccountClaims(tok)
			if err != nil {
				t.Fatal(err)
			}
			pre, _ := jwt.DecodeAccountClaims(ci.FleetJWT)
			if ac.Issuer != ci.OpSigning || !ac.SigningKeys.Contains(ci.FleetSigning) || ac.Revocations[userPub] != at.Unix() {
				t.Errorf("account JWT: issuer %s, signing keys %v, revocations %v", ac.Issuer, ac.SigningKeys.Keys(), ac.Revocations)
			}
			// The API import with share=true survives every re-signing: it
			// is how the coordinator learns who calls the API.
			if len(ac.Imports) != 1 || ac.Imports[0].Account != ci.API || !ac.Imports[0].Share || ac.Imports[0].Type != jwt.Service {
				t.Errorf("account JWT imports %+v, want the API from %s with share", ac.Imports, ci.API)
			}
			if ac.IssuedAt <= pre.IssuedAt {
				t.Errorf("iat %d, not after the preloaded %d", ac.IssuedAt, pre.IssuedAt)
			}
			// The next update, signed at once, is another JWT to the
			// resolver: a later iat, another jti.
			tok2, err := acct.AccountJWT(nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ac2, _ := jwt.DecodeAccountClaims(tok2)
			if ac2.IssuedAt <= ac.IssuedAt || ac2.ID == ac.ID {
				t.Errorf("two updates: iat %d then %d, jti %s then %s", ac.IssuedAt, ac2.IssuedAt, ac.ID, ac2.ID)
			}
			// After another coordinator's JWT (its clock a second ahead):
			// later still.
			tok3, err := acct.AccountJWT(nil, ac2.IssuedAt+1)
			if err != nil {
				t.Fatal(err)
			}
			if ac3, _ := jwt.DecodeAccountClaims(tok3); ac3.IssuedAt <= ac2.IssuedAt+1 {
				t.Errorf("iat %d, not after the other coordinator's %d", ac3.IssuedAt, ac2.IssuedAt+1)
			}
		})
	}
}
