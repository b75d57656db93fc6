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
	RoleAdmin     = proto.RoleAdmin
	RoleSiteAdmin = proto.RoleSiteAdmin
	RoleViewer    = proto.RoleViewer
	RoleEdge      = proto.RoleEdge
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
			"$JS.API.STREAM.INFO.KV_"+proto.BucketLoaders,
			"$JS.API.STREAM.INFO.KV_"+proto.BucketTemplates,
			"$JS.API.DIRECT.GET.KV_"+proto.BucketSites+".$KV."+proto.BucketSites+"."+s,
			"$JS.API.DIRECT.GET.KV_"+proto.BucketHosts+".$KV."+proto.BucketHosts+"."+s+".>",
			"$JS.API.DIRECT.GET.KV_"+proto.BucketImages+".$KV."+proto.BucketImages+".>",
			"$JS.API.DIRECT.GET.KV_"+proto.BucketLoaders+".$KV."+proto.BucketLoaders+".>",
			"$JS.API.DIRECT.GET.KV_"+proto.BucketTemplates+".$KV."+proto.BucketTemplates+".>",
			"$JS.API.CONSUMER.CREATE.KV_"+proto.BucketSites+".*.$KV."+proto.BucketSites+"."+s,
			"$JS.API.CONSUMER.CREATE.KV_"+proto.BucketHosts+".*.$KV."+proto.BucketHosts+"."+s+".>",
			"$JS.API.CONSUMER.CREATE.KV_"+proto.BucketImages+".*.$KV."+proto.BucketImages+".>",
			"$JS.API.CONSUMER.CREATE.KV_"+proto.BucketLoaders+".*.$KV."+proto.BucketLoaders+".>",
			"$JS.API.CONSUMER.CREATE.KV_"+proto.BucketTemplates+".*.$KV."+proto.BucketTemplates+".>",
			// Unsubscribing a watch deletes its ephemeral consumer; names are
			// random and not listable, so this reaches only the edge's own.
			"$JS.API.CONSUMER.DELETE.KV_"+proto.BucketSites+".*",
			"$JS.API.CONSUMER.DELETE.KV_"+proto.BucketHosts+".*",
			"$JS.API.CONSUMER.DELETE.KV_"+proto.BucketImages+".*",
			"$JS.API.CONSUMER.DELETE.KV_"+proto.BucketLoaders+".*",
			"$JS.API.CONSUMER.DELETE.KV_"+proto.BucketTemplates+".*",
			// Flow control replies: without them a large watch stalls.
			"$JS.FC.KV_"+proto.BucketSites+".>",
			"$JS.FC.KV_"+proto.BucketHosts+".>",
			"$JS.FC.KV_"+proto.BucketImages+".>",
			"$JS.FC.KV_"+proto.BucketLoaders+".>",
			"$JS.FC.KV_"+proto.BucketTemplates+".>",
			proto.StatusSubject(s, n),
			proto.SubjectEventsPrefix+"."+s+"."+n+".>",
			proto.APISubject(proto.APIHostDone),
			proto.APISubject(proto.APIHostFacts),
			proto.APISubject(proto.APIStoreInfo),
		)
		p.Sub.Allow.Add(EdgeInboxPrefix(n) + ".>")
	case RoleSiteAdmin:
		if err := ValidSiteAdmin(id.Site, id.Name); err != nil {
			return p, fmt.Errorf("%w: %v", errInvalid, err)
		}
		p = siteAdminPermissions(id.Site, id.PublicKey)
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
		return p, fmt.Errorf("%w: unknown role %q: want admin, viewer or site-admin", errInvalid, id.Role)
	}
	if id.Role == RoleAdmin || id.Role == RoleViewer {
		// They read JetStream broadly; the identity registry is the
		// coordinators' alone (the allow-lists of edges and site admins
		// never name it).
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

// siteAdminPermissions confine a site admin of site s to what carries s in
// its subject (DESIGN §6 has the facts these rules rest on): her site's
// config and hosts in KV, the images and loaders, her site's events and heartbeats. The
// API subjects are all open: they do not carry the site, so the
// coordinator's guard decides there, and audits every refusal. No AUDIT, no
// macs or edges bucket, no stream listing, no message get by sequence.
func siteAdminPermissions(s, publicKey string) jwt.Permissions {
	var p jwt.Permissions
	kv := func(bucket string) string { return "KV_" + bucket }
	sites := "$KV." + proto.BucketSites + "." + s
	hosts := "$KV." + proto.BucketHosts + "." + s + ".>"
	images := "$KV." + proto.BucketImages + ".>"
	loaders := "$KV." + proto.BucketLoaders + ".>"
	templates := "$KV." + proto.BucketTemplates + ".>"
	events := proto.SubjectEventsPrefix + "." + s + ".>"
	p.Pub.Allow.Add(
		proto.APIPrefix+".>",
		"$JS.API.STREAM.INFO."+kv(proto.BucketSites),
		"$JS.API.STREAM.INFO."+kv(proto.BucketHosts),
		"$JS.API.STREAM.INFO."+kv(proto.BucketImages),
		"$JS.API.STREAM.INFO."+kv(proto.BucketLoaders),
		"$JS.API.STREAM.INFO."+kv(proto.BucketTemplates),
		"$JS.API.STREAM.INFO."+proto.StreamEvents,
		// Reads by key: the key is in the subject.
		"$JS.API.DIRECT.GET."+kv(proto.BucketSites)+"."+sites,
		"$JS.API.DIRECT.GET."+kv(proto.BucketHosts)+"."+hosts,
		"$JS.API.DIRECT.GET."+kv(proto.BucketImages)+"."+images,
		"$JS.API.DIRECT.GET."+kv(proto.BucketLoaders)+"."+loaders,
		"$JS.API.DIRECT.GET."+kv(proto.BucketTemplates)+"."+templates,
		// Watches and event reads: a consumer whose single filter subject
		// is in the create subject (the server checks it against the body).
		// A consumer with several filters has none in its subject: refused.
		"$JS.API.CONSUMER.CREATE."+kv(proto.BucketSites)+".*."+sites,
		"$JS.API.CONSUMER.CREATE."+kv(proto.BucketHosts)+".*."+hosts,
		"$JS.API.CONSUMER.CREATE."+kv(proto.BucketImages)+".*."+images,
		"$JS.API.CONSUMER.CREATE."+kv(proto.BucketLoaders)+".*."+loaders,
		"$JS.API.CONSUMER.CREATE."+kv(proto.BucketTemplates)+".*."+templates,
		"$JS.API.CONSUMER.CREATE."+proto.StreamEvents+".*."+events,
		// The consumers above, by their random, unlistable names: the
		// events reader pulls (MSG.NEXT) and asks how much is pending.
		"$JS.API.CONSUMER.DELETE."+kv(proto.BucketSites)+".*",
		"$JS.API.CONSUMER.DELETE."+kv(proto.BucketHosts)+".*",
		"$JS.API.CONSUMER.DELETE."+kv(proto.BucketImages)+".*",
		"$JS.API.CONSUMER.DELETE."+kv(proto.BucketLoaders)+".*",
		"$JS.API.CONSUMER.DELETE."+kv(proto.BucketTemplates)+".*",
		"$JS.API.CONSUMER.DELETE."+proto.StreamEvents+".*",
		"$JS.API.CONSUMER.INFO."+proto.StreamEvents+".*",
		"$JS.API.CONSUMER.MSG.NEXT."+proto.StreamEvents+".*",
		"$JS.FC."+kv(proto.BucketSites)+".>",
		"$JS.FC."+kv(proto.BucketHosts)+".>",
		"$JS.FC."+kv(proto.BucketImages)+".>",
		"$JS.FC."+kv(proto.BucketLoaders)+".>",
		"$JS.FC."+kv(proto.BucketTemplates)+".>",
	)
	p.Sub.Allow.Add(
		UserInboxPrefix(publicKey)+".>",
		events,
		proto.SubjectStatusPrefix+"."+s+".>",
	)
	return p
}

// ValidSiteAdmin checks a site admin's site and name. The site must be a
// valid site name (it becomes a subject token of her permissions) but need
// not exist yet: the authority does not read the desired state, and a site
// admin may create her own site, so an admin can enrol a branch office's
// admin before its configuration is written.
func ValidSiteAdmin(site, name string) error {
	if site == "" {
		return fmt.Errorf("a site-admin needs a site (--site NAME)")
	}
	if err := proto.ValidSiteName(site); err != nil {
		return err
	}
	return proto.ValidName("user", name)
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
