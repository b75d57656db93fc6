package auth

import (
	"fmt"
	"strings"

	"github.com/nats-io/jwt/v2"

	"github.com/fleetboot/fleetboot/proto"
)

// Role and Identity are defined in proto (the enrol reply carries them).
type (
	Role     = proto.Role
	Identity = proto.Identity
)

// Roles.
const (
	RoleAdmin  = proto.RoleAdmin
	RoleViewer = proto.RoleViewer
	RoleEdge   = proto.RoleEdge
)

// EdgeInboxPrefix is the private inbox prefix of an edge: its replies (KV
// watch deliveries above all) go there, and no other edge may subscribe to it.
func EdgeInboxPrefix(name string) string { return "_INBOX_edge_" + name }

// UserInboxPrefix is the private inbox prefix of a person's credential: API
// replies and event deliveries go there, and no other user may subscribe to
// it. It is made from the public key, not the name: a user name may hold
// '.', and "_INBOX_user_a.>" would then cover user "a.b"'s inbox.
func UserInboxPrefix(publicKey string) string { return "_INBOX_user_" + publicKey }

// InboxPrefixOf is the private inbox prefix an identity must connect with.
func InboxPrefixOf(id Identity) string {
	if id.Role == RoleEdge {
		return EdgeInboxPrefix(id.Name)
	}
	return UserInboxPrefix(id.PublicKey)
}

// Durable consumers: the legacy $JS.API.CONSUMER.DURABLE.CREATE subject is
// on no allow-list (CONSUMER.CREATE.> does not cover it). The named
// $JS.API.CONSUMER.CREATE.<stream>.<name>[.<filter>] form, which ordered
// consumers and KV watches need, can carry a durable name in its body, which
// permissions cannot see: every stream's consumer limits
// (proto.ConsumerLimits) make such a consumer expire like an ephemeral one,
// and the account's consumer limit (MaxConsumers) bounds how many exist.

// Permissions returns the NATS permissions of an identity. They are
// allow-lists: anything not listed is refused by the server.
func Permissions(id Identity) (jwt.Permissions, error) {
	var p jwt.Permissions
	switch id.Role {
	case RoleEdge:
		if err := ValidEdge(id.Site, id.Name); err != nil {
			return p, fmt.Errorf("%w: %v", errInvalid, err)
		}
		s, n := id.Site, id.Name
		p.Pub.Allow.Add(
			// KV access: open the bucket (STREAM.INFO), read keys by name
			// (direct get with the key in the subject; the server refuses a
			// body that asks for another sequence or subject), and watch
			// through a filtered ordered consumer (the server checks the
			// filter in the subject against the one in the body).
			"$JS.API.STREAM.INFO.KV_"+proto.BucketSites,
			"$JS.API.STREAM.INFO.KV_"+proto.BucketHosts,
			"$JS.API.STREAM.INFO.KV_"+proto.BucketImages,
			"$JS.API.DIRECT.GET.KV_"+proto.BucketSites+".$KV."+proto.BucketSites+"."+s,
			"$JS.API.DIRECT.GET.KV_"+proto.BucketHosts+".$KV."+proto.BucketHosts+"."+s+".>",
			"$JS.API.DIRECT.GET.KV_"+proto.BucketImages+".$KV."+proto.BucketImages+".>",
			"$JS.API.CONSUMER.CREATE.KV_"+proto.BucketSites+".*.$KV."+proto.BucketSites+"."+s,
			"$JS.API.CONSUMER.CREATE.KV_"+proto.BucketHosts+".*.$KV."+proto.BucketHosts+"."+s+".>",
			"$JS.API.CONSUMER.CREATE.KV_"+proto.BucketImages+".*.$KV."+proto.BucketImages+".>",
			// Unsubscribing a watch deletes its ephemeral consumer; names are
			// random and not listable, so this reaches only the edge's own.
			"$JS.API.CONSUMER.DELETE.KV_"+proto.BucketSites+".*",
			"$JS.API.CONSUMER.DELETE.KV_"+proto.BucketHosts+".*",
			"$JS.API.CONSUMER.DELETE.KV_"+proto.BucketImages+".*",
			// Flow control replies: without them a large watch stalls.
			"$JS.FC.KV_"+proto.BucketSites+".>",
			"$JS.FC.KV_"+proto.BucketHosts+".>",
			"$JS.FC.KV_"+proto.BucketImages+".>",
			proto.StatusSubject(s, n),
			proto.SubjectEventsPrefix+"."+s+"."+n+".>",
			proto.APISubject(proto.APIHostDone),
			proto.APISubject(proto.APIHostFacts),
			proto.APISubject(proto.APIStoreInfo),
		)
		p.Sub.Allow.Add(EdgeInboxPrefix(n) + ".>")
	case RoleAdmin, RoleViewer:
		// People read JetStream and call the API; changes go only through
		// the API, where the coordinator checks the role and audits.
		p.Pub.Allow.Add(
			proto.APIPrefix+".>",
			"$JS.API.INFO",
			"$JS.API.STREAM.INFO.*",
			"$JS.API.STREAM.NAMES",
			"$JS.API.STREAM.LIST",
			"$JS.API.STREAM.MSG.GET.*",
			"$JS.API.DIRECT.GET.>",
			"$JS.API.CONSUMER.CREATE.>",
			"$JS.API.CONSUMER.INFO.>",
			"$JS.API.CONSUMER.MSG.NEXT.>",
			"$JS.FC.>",
			"$JS.ACK.>",
		)
		// A private inbox: with the shared _INBOX.> one viewer could read
		// another's API replies (and an admin's enrolment answers).
		p.Sub.Allow.Add(UserInboxPrefix(id.PublicKey)+".>", proto.SubjectEventsPrefix+".>", proto.SubjectStatusPrefix+".>")
	default:
		return p, fmt.Errorf("%w: unknown role %q: want admin or viewer", errInvalid, id.Role)
	}
	if id.Role != RoleEdge {
		// People read JetStream broadly; the identity registry is the
		// coordinators' alone (edges' allow-lists never name it).
		p.Pub.Deny.Add(registryDeny()...)
	}
	return p, nil
}

// registryDeny is every JetStream subject that reads the identities bucket.
func registryDeny() []string {
	st := "KV_" + proto.BucketIdentities
	return []string{
		"$JS.API.STREAM.INFO." + st, "$JS.API.STREAM.MSG.GET." + st,
		"$JS.API.DIRECT.GET." + st, "$JS.API.DIRECT.GET." + st + ".>",
		"$JS.API.CONSUMER.CREATE." + st, "$JS.API.CONSUMER.CREATE." + st + ".>",
		"$JS.API.CONSUMER.INFO." + st + ".>", "$JS.API.CONSUMER.MSG.NEXT." + st + ".>",
	}
}

// ValidEdge checks an edge's site and name. An edge name becomes a subject
// token, so unlike other names it may not hold '.': edge "a" would otherwise
// be allowed to publish the events of edge "a.b".
func ValidEdge(site, name string) error {
	if err := proto.ValidSiteName(site); err != nil {
		return err
	}
	return proto.ValidEdgeName(name)
}

// IsRead tells whether an API endpoint (relative to proto.APIPrefix) only
// reads. Anything else is a change: a new endpoint is admin-only until it is
// known to be harmless, never the other way round.
func IsRead(endpoint string) bool {
	last := endpoint
	if i := strings.LastIndexByte(endpoint, '.'); i >= 0 {
		last = endpoint[i+1:]
	}
	switch last {
	case "list", "get", "show", "info", "timeline", "explain", "ls", "status":
		return true
	}
	return false
}
