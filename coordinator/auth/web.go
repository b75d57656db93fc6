package auth

import (
	"errors"
	"fmt"

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

// SetWebPasswordCost lowers (or raises) the least bcrypt cost enrolment
// accepts, and the cost of the hash compared for unknown names, from
// MinWebPasswordCost. Only tests lower it: at cost 10 one comparison takes
// seconds under the race detector.
func (a *Authority) SetWebPasswordCost(cost int) {
	a.webMu.Lock()
	defer a.webMu.Unlock()
	a.webCost, a.dummy = cost, nil
}

func (a *Authority) webPasswordCost() int {
	a.webMu.Lock()
	defer a.webMu.Unlock()
	if a.webCost == 0 {
		return MinWebPasswordCost
	}
	return a.webCost
}

// dummyHash is compared against when a name has no web password, so that
// a login for an unknown name takes as long as one for a known name.
func (a *Authority) dummyHash() []byte {
	a.webMu.Lock()
	defer a.webMu.Unlock()
	if a.dummy == nil {
		cost := a.webCost
		if cost == 0 {
			cost = MinWebPasswordCost
		}
		a.dummy, _ = bcrypt.GenerateFromPassword([]byte("fleetboot-no-such-user"), cost)
	}
	return a.dummy
}

// validWebPassword refuses an enrolment whose web password is not a bcrypt
// hash of at least the authority's cost, or is given to an edge.
func (a *Authority) validWebPassword(r EnrolRequest) error {
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
	if least := a.webPasswordCost(); cost < least {
		return fmt.Errorf("%w: web_password's bcrypt cost %d is below %d", errInvalid, cost, least)
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
		hash = a.dummyHash()
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
