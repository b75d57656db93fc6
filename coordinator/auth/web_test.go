package auth_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/proto"
)

// TestWebPassword: enrolment takes only a bcrypt hash of at least the
// authority's cost, never for an edge; a login needs the live person's
// password, and revoking her ends it.
func TestWebPassword(t *testing.T) {
	ctx := context.Background()
	a, err := auth.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	enrol := func(name string, role auth.Role, site, hash string) error {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		_, err := a.Enrol(ctx, auth.EnrolRequest{V: proto.Version, Name: name, Role: role, Site: site, PublicKey: pub, WebPassword: hash})
		return err
	}
	cheap, _ := bcrypt.GenerateFromPassword([]byte("correct horse battery"), bcrypt.MinCost)
	for _, c := range []struct {
		name, hash string
		role       auth.Role
		site, want string
	}{
		{"plain", "correct horse battery", auth.RoleAdmin, "", "web_password is not a bcrypt hash"},
		{"cheap", string(cheap), auth.RoleAdmin, "", "bcrypt cost 4 is below 10"},
		{"edge1", string(cheap), auth.RoleEdge, "lab", "an edge has no web password"},
	} {
		if err := enrol(c.name, c.role, c.site, c.hash); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := auth.HashWebPassword("short"); err == nil {
		t.Error("a 5-character password was hashed")
	}
	a.SetWebPasswordCost(bcrypt.MinCost)
	if err := enrol("alice", auth.RoleAdmin, "", string(cheap)); err != nil {
		t.Fatal(err)
	}
	if err := enrol("bob", auth.RoleViewer, "", ""); err != nil {
		t.Fatal(err)
	}
	id, err := a.WebLogin("alice", "correct horse battery")
	if err != nil || id.Name != "alice" || id.Role != auth.RoleAdmin {
		t.Fatalf("alice's login: %v %v", id, err)
	}
	for _, c := range [][2]string{{"alice", "wrong horse battery"}, {"bob", ""}, {"mallory", "correct horse battery"}} {
		if _, err := a.WebLogin(c[0], c[1]); !errors.Is(err, auth.ErrBadLogin) {
			t.Errorf("login %s: %v, want ErrBadLogin", c[0], err)
		}
	}
	if _, err := a.Revoke(ctx, "alice", false); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WebLogin("alice", "correct horse battery"); !errors.Is(err, auth.ErrBadLogin) {
		t.Errorf("revoked alice logged in: %v", err)
	}
	if _, ok := a.Person("alice"); ok {
		t.Error("a revoked person is still found")
	}
}
