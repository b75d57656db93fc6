package proto

import (
	"fmt"
	"time"
)

// API endpoints (relative to APIPrefix) that enrol and revoke identities.
const (
	APIEdgeAdd    = "edge.add"
	APIEdgeRevoke = "edge.revoke"
	APIUserAdd    = "user.add"
	APIUserRevoke = "user.revoke"
)

// Role of an identity.
type Role string

// Roles.
const (
	RoleAdmin     Role = "admin"      // may change desired state
	RoleSiteAdmin Role = "site-admin" // may change one site's hosts and config, and see only that site
	RoleViewer    Role = "viewer"     // may list, show and watch
	RoleEdge      Role = "edge"       // an edge agent of one site
)

// Identity is one enrolled credential.
type Identity struct {
	Name      string     `json:"name"`
	Role      Role       `json:"role"`
	Site      string     `json:"site,omitempty"` // edges and site admins: the one site they belong to
	PublicKey string     `json:"public_key"`     // the user nkey (U…)
	Issued    time.Time  `json:"issued"`
	Revoked   *time.Time `json:"revoked,omitempty"`
	// WebPassword is the bcrypt hash of the person's web panel password
	// (`user add --web`); empty: she cannot log in to the panel.
	WebPassword string `json:"web_password,omitempty"`
}

// String names the identity the way audit lines and errors show it.
func (id Identity) String() string {
	if id.Role == RoleEdge || id.Role == RoleSiteAdmin {
		return fmt.Sprintf("%s %s (site %s)", id.Role, id.Name, id.Site)
	}
	return fmt.Sprintf("%s %s", id.Role, id.Name)
}

// EnrolRequest asks the coordinator to sign a user JWT for PublicKey. The
// seed stays with whoever made the key pair.
type EnrolRequest struct {
	V         int    `json:"v"`
	Name      string `json:"name"`
	Role      Role   `json:"role"`
	Site      string `json:"site,omitempty"`
	PublicKey string `json:"public_key"`
	// WebPassword is a bcrypt hash made by the CLI: the password itself
	// never leaves the operator's machine.
	WebPassword string `json:"web_password,omitempty"`
}

// EnrolReply carries the signed user JWT (not a secret without the seed)
// and the private inbox prefix the credential must connect with
// (nats.CustomInboxPrefix): replies to anyone else's prefix are refused.
type EnrolReply struct {
	V           int      `json:"v"`
	Identity    Identity `json:"identity"`
	JWT         string   `json:"jwt"`
	InboxPrefix string   `json:"inbox_prefix,omitempty"`
}
