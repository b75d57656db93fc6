package auth

import (
	"path/filepath"
	"slices"
	"testing"

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
