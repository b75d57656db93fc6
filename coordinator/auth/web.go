package auth

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// MinWebPasswordCost is the least bcrypt cost a web password hash may have:
// a cheaper hash would let whoever reads the registry guess passwords fast.
const MinWebPasswordCost = bcrypt.DefaultCost

// ErrBadLogin: no live person of that name with a web password, or the
// wrong password. One error for both, so a login does not tell which
// names exist.
var ErrBadLogin = errors.New("wrong name or password")

// HashWebPassword makes the bcrypt hash `user add --web` sends.
func HashWebPassword(password string) (string, error) {
	if len(password) < 12 {
		return "", fmt.Errorf("the web password must have at least 12 characters")
	}
	if len(password) > 72 {
		return "", fmt.Errorf("the web password may have at most 72 bytes (bcrypt reads no further)")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), MinWebPasswordCost)
	if err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	return string(h), nil
}

// validWebPassword refuses an enrolment whose web password is not a bcrypt
// hash of at least MinWebPasswordCost, or is given to an edge.
func validWebPassword(r EnrolRequest) error {
	if r.WebPassword == "" {
		return nil
	}
	if r.Role == RoleEdge {
		return fmt.Errorf("%w: an edge has no web password", errInvalid)
	}
	cost, err := bcrypt.Cost([]byte(r.WebPassword))
	if err != nil {
		return fmt.Errorf("%w: web_password is not a bcrypt hash", errInvalid)
	}
	if cost < MinWebPasswordCost {
		return fmt.Errorf("%w: web_password's bcrypt cost %d is below %d", errInvalid, cost, MinWebPasswordCost)
	}
	return nil
}

// WebLogin returns the live person named name if password is her web
// password. The bcrypt comparison runs even for an unknown name, so the
// time taken does not tell which names exist.
func (a *Authority) WebLogin(name, password string) (Identity, error) {
	id, ok := a.person(name)
	hash := []byte(id.WebPassword)
	if !ok || len(hash) == 0 {
		hash = dummyHash()
	}
	if err := bcrypt.CompareHashAndPassword(hash, []byte(password)); err != nil || !ok || id.WebPassword == "" {
		return Identity{}, ErrBadLogin
	}
	return id, nil
}

// Person returns the live (not revoked) person, not edge, named name: the
// panel checks a session's holder on every request, so a revocation ends
// her sessions too.
func (a *Authority) Person(name string) (Identity, bool) { return a.person(name) }

func (a *Authority) person(name string) (Identity, bool) {
	var found Identity
	ok := false
	for _, id := range a.Identities() {
		if id.Revoked == nil && id.Role != RoleEdge && id.Name == name && (!ok || id.Issued.After(found.Issued)) {
			found, ok = id, true
		}
	}
	return found, ok
}

// dummyHash is compared against when a name has no web password (made
// once, at the first such login: it is constant).
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("fleetboot-no-such-user"), MinWebPasswordCost)
	return h
})
