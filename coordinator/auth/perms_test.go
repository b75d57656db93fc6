package auth

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

func TestIsRead(t *testing.T) {
	cases := []struct {
		endpoint string
		want     bool
	}{
		{"site.list", true}, {"host.get", true}, {"store.info", true}, {"host.timeline", true}, {"explain", true},
		{"host.set", false}, {"host.rm", false}, {"host.done", false}, {"host.facts", false},
		{"edge.add", false}, {"user.revoke", false}, {"something.new", false},
	}
	for _, c := range cases {
		t.Run(c.endpoint, func(t *testing.T) {
			if got := IsRead(c.endpoint); got != c.want {
				t.Fatalf("IsRead(%q) = %v", c.endpoint, got)
			}
		})
	}
}

// TestEdgePermissions: the allow-lists never hold what DESIGN §6 forbids.
func TestEdgePermissions(t *testing.T) {
	p, err := Permissions(Identity{Name: "e1", Role: RoleEdge, Site: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{">", "$KV.>", "$JS.API.>", "$JS.API.STREAM.MSG.GET.KV_hosts", "$JS.API.DIRECT.GET.KV_hosts",
		"$JS.API.DIRECT.GET.KV_hosts.>", "$JS.API.CONSUMER.CREATE.KV_hosts", "$JS.API.CONSUMER.CREATE.KV_hosts.>",
		"$JS.API.CONSUMER.DURABLE.CREATE.KV_hosts.>", "$JS.API.CONSUMER.DURABLE.CREATE.>", "fleetboot.status.>", "fleetboot.events.>", "fleetboot.api.v1.>", "_INBOX.>"} {
		if slices.Contains(p.Pub.Allow, bad) || slices.Contains(p.Sub.Allow, bad) {
			t.Errorf("edge may use %s", bad)
		}
	}
	if len(p.Pub.Deny) > 0 || len(p.Sub.Deny) > 0 {
		t.Errorf("allow-lists only: %v %v", p.Pub.Deny, p.Sub.Deny)
	}
	for _, c := range []struct{ name, site, edge string }{{"dotted edge", "lab", "e1.x"}, {"wildcard site", "*", "e1"}, {"empty", "lab", ""}} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Permissions(Identity{Name: c.edge, Role: RoleEdge, Site: c.site}); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := Permissions(Identity{Name: "x", Role: "root"}); err == nil {
		t.Fatal("unknown role accepted")
	}
}

func TestInboxPrefix(t *testing.T) {
	acct, _ := nkeys.CreateAccount()
	cases := []struct {
		name string
		id   Identity
		want string
	}{
		{"edge", Identity{Name: "e1", Role: RoleEdge, Site: "lab"}, "_INBOX_edge_e1"},
		{"viewer", Identity{Name: "bob", Role: RoleViewer}, "_INBOX_user_"}, // + the public key
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pub, seed, err := NewUserKey()
			if err != nil {
				t.Fatal(err)
			}
			c.id.PublicKey = pub
			if c.id.Role != RoleEdge {
				c.want += pub
			}
			uc := jwt.NewUserClaims(pub)
			if uc.Permissions, err = Permissions(c.id); err != nil {
				t.Fatal(err)
			}
			tok, err := uc.Encode(acct)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "x.creds")
			if err := WriteCreds(path, tok, seed); err != nil {
				t.Fatal(err)
			}
			if err := WriteCreds(path, tok, seed); err == nil {
				t.Fatal("creds overwritten")
			}
			got, err := InboxPrefix(path)
			if err != nil || got != c.want {
				t.Fatalf("InboxPrefix = %q, %v; want %q", got, err, c.want)
			}
		})
	}
	if _, err := InboxPrefix(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}

// TestFleetAccountLimits: the FLEET account the server runs has connection
// and consumer limits.
func TestFleetAccountLimits(t *testing.T) {
	a, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var o server.Options
	if err := a.Configure(&o); err != nil {
		t.Fatal(err)
	}
	tok, err := a.resolver.Fetch(a.FleetAccount())
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	if ac.Limits.Conn != MaxConnections || ac.Limits.JetStreamLimits.Consumer != MaxConsumers {
		t.Fatalf("FLEET limits: %d connections, %d consumers; want %d and %d", ac.Limits.Conn, ac.Limits.JetStreamLimits.Consumer, MaxConnections, MaxConsumers)
	}
}

// TestSiteAdminPermissions: a site admin of lab gets exactly what carries
// lab in its subject (and the API, which the guard confines), nothing that
// reads another site, the audit log or the index buckets.
func TestSiteAdminPermissions(t *testing.T) {
	p, err := Permissions(Identity{Name: "sam", Role: RoleSiteAdmin, Site: "lab", PublicKey: "USAM"})
	if err != nil {
		t.Fatal(err)
	}
	wantPub := []string{
		"fleetboot.api.v1.>",
		"$JS.API.STREAM.INFO.KV_sites",
		"$JS.API.STREAM.INFO.KV_hosts",
		"$JS.API.STREAM.INFO.KV_images",
		"$JS.API.STREAM.INFO.KV_loaders",
		"$JS.API.STREAM.INFO.KV_templates",
		"$JS.API.STREAM.INFO.EVENTS",
		"$JS.API.DIRECT.GET.KV_sites.$KV.sites.lab",
		"$JS.API.DIRECT.GET.KV_hosts.$KV.hosts.lab.>",
		"$JS.API.DIRECT.GET.KV_images.$KV.images.>",
		"$JS.API.DIRECT.GET.KV_loaders.$KV.loaders.>",
		"$JS.API.DIRECT.GET.KV_templates.$KV.templates.>",
		"$JS.API.CONSUMER.CREATE.KV_sites.*.$KV.sites.lab",
		"$JS.API.CONSUMER.CREATE.KV_hosts.*.$KV.hosts.lab.>",
		"$JS.API.CONSUMER.CREATE.KV_images.*.$KV.images.>",
		"$JS.API.CONSUMER.CREATE.KV_loaders.*.$KV.loaders.>",
		"$JS.API.CONSUMER.CREATE.KV_templates.*.$KV.templates.>",
		"$JS.API.CONSUMER.CREATE.EVENTS.*.fleetboot.events.lab.>",
		"$JS.API.CONSUMER.DELETE.KV_sites.*",
		"$JS.API.CONSUMER.DELETE.KV_hosts.*",
		"$JS.API.CONSUMER.DELETE.KV_images.*",
		"$JS.API.CONSUMER.DELETE.KV_loaders.*",
		"$JS.API.CONSUMER.DELETE.KV_templates.*",
		"$JS.API.CONSUMER.DELETE.EVENTS.*",
		"$JS.API.CONSUMER.INFO.EVENTS.*",
		"$JS.API.CONSUMER.MSG.NEXT.EVENTS.*",
		"$JS.FC.KV_sites.>",
		"$JS.FC.KV_hosts.>",
		"$JS.FC.KV_images.>",
		"$JS.FC.KV_loaders.>",
		"$JS.FC.KV_templates.>",
	}
	wantSub := []string{"_INBOX_user_USAM.>", "fleetboot.events.lab.>", "fleetboot.status.lab.>"}
	if diff := cmp.Diff(wantPub, []string(p.Pub.Allow)); diff != "" {
		t.Errorf("publish allow-list (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantSub, []string(p.Sub.Allow)); diff != "" {
		t.Errorf("subscribe allow-list (-want +got):\n%s", diff)
	}
	if len(p.Pub.Deny) > 0 || len(p.Sub.Deny) > 0 {
		t.Errorf("allow-lists only: %v %v", p.Pub.Deny, p.Sub.Deny)
	}
	for _, c := range []struct{ name, site, user string }{
		{"no site", "", "sam"}, {"wildcard site", "*", "sam"}, {"dotted site", "lab.x", "sam"}, {"bad name", "lab", "Sam!"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Permissions(Identity{Name: c.user, Role: RoleSiteAdmin, Site: c.site, PublicKey: "USAM"}); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestEnrolRoles: which role takes a site, and what the signed JWT says.
func TestEnrolRoles(t *testing.T) {
	a, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		role       Role
		site       string
		err        string // "" when enrolled
		tags, subs []string
	}{
		{"site admin", RoleSiteAdmin, "branch1", "", []string{"role:site-admin", "site:branch1"},
			[]string{"fleetboot.events.branch1.>", "fleetboot.status.branch1.>"}},
		{"site admin of a site not yet made", RoleSiteAdmin, "branch9", "", []string{"role:site-admin", "site:branch9"}, nil},
		{"site admin without a site", RoleSiteAdmin, "", "invalid: a site-admin needs a site (--site NAME)", nil, nil},
		{"site admin of a dotted site", RoleSiteAdmin, "a.b",
			`invalid: invalid site name "a.b": use lower-case letters, digits, '_' or '-', starting with a letter or digit (at most 64, no '.')`, nil, nil},
		{"admin with a site", RoleAdmin, "branch1", "invalid: role admin has no site (only a site-admin has one)", nil, nil},
		{"viewer with a site", RoleViewer, "branch1", "invalid: role viewer has no site (only a site-admin has one)", nil, nil},
		{"viewer", RoleViewer, "", "", []string{"role:viewer"}, []string{"fleetboot.events.>", "fleetboot.status.>"}},
		{"unknown role", "root", "", `invalid: invalid role "root": want admin, viewer or site-admin`, nil, nil},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pub, _, err := NewUserKey()
			if err != nil {
				t.Fatal(err)
			}
			rep, err := a.Enrol(context.Background(), EnrolRequest{V: 1, Name: fmt.Sprintf("u%d", i), Role: c.role, Site: c.site, PublicKey: pub})
			got := ""
			if err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(c.err, got); diff != "" {
				t.Fatalf("error (-want +got):\n%s", diff)
			}
			if err != nil {
				return
			}
			uc, err := jwt.DecodeUserClaims(rep.JWT)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.tags, []string(uc.Tags)); diff != "" {
				t.Errorf("tags (-want +got):\n%s", diff)
			}
			for _, s := range c.subs {
				if !slices.Contains(uc.Sub.Allow, s) {
					t.Errorf("may not subscribe to %s: %v", s, uc.Sub.Allow)
				}
			}
			if rep.Identity.Site != c.site || rep.InboxPrefix != UserInboxPrefix(pub) {
				t.Errorf("identity %+v, inbox %q", rep.Identity, rep.InboxPrefix)
			}
		})
	}
}
