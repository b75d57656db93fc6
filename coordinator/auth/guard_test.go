package auth

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

type fakeDir map[string]Identity

func (d fakeDir) Lookup(pub string) (Identity, bool) {
	id, ok := d[pub]
	return id, ok
}

func TestGuardCheck(t *testing.T) {
	dir := fakeDir{
		"UADMIN": {Name: "alice", Role: RoleAdmin, PublicKey: "UADMIN"},
		"UVIEW":  {Name: "bob", Role: RoleViewer, PublicKey: "UVIEW"},
		"UEDGE":  {Name: "e1", Role: RoleEdge, Site: "lab", PublicKey: "UEDGE"},
	}
	g := &Guard{Account: "AFLEET", Directory: dir, HostSite: func(_ context.Context, mac string) (string, error) {
		switch mac {
		case "52:54:00:00:00:01":
			return "lab", nil
		case "52:54:00:00:00:02":
			return "other", nil
		}
		return "", errors.New("not found")
	}}
	info := func(acc, user string) string { return fmt.Sprintf(`{"acc":%q,"user":%q}`, acc, user) }
	cases := []struct {
		name, info, endpoint, body string
		who                        string // identity name, "" when unknown
		err                        string // "" when allowed
	}{
		{"no identity", "", proto.APIHostSet, "", "", "permission denied: the request carries no caller identity (connect with a credentials file)"},
		{"garbage identity", "{", proto.APIHostSet, "", "", "permission denied: unreadable caller identity"},
		{"foreign account", info("AOTHER", "UADMIN"), proto.APIHostSet, "", "", "permission denied: request from a foreign account"},
		{"unknown key", info("AFLEET", "UNOBODY"), proto.APISiteList, "", "UNOBODY", "permission denied: credential UNOBODY is not enrolled or was revoked"},
		{"admin changes", info("AFLEET", "UADMIN"), proto.APIHostRm, "", "alice", ""},
		{"admin enrols", info("AFLEET", "UADMIN"), APIEdgeAdd, "", "alice", ""},
		{"viewer reads", info("AFLEET", "UVIEW"), proto.APIHostList, "", "bob", ""},
		{"viewer changes", info("AFLEET", "UVIEW"), proto.APISiteAdd, "", "bob", "permission denied: viewer bob is read-only and may not site.add (ask an admin)"},
		{"viewer revokes", info("AFLEET", "UVIEW"), APIEdgeRevoke, "", "bob", "permission denied: viewer bob is read-only and may not edge.revoke (ask an admin)"},
		{"edge store info", info("AFLEET", "UEDGE"), proto.APIStoreInfo, "", "e1", ""},
		{"edge done own site", info("AFLEET", "UEDGE"), proto.APIHostDone, `{"mac":"52:54:00:00:00:01"}`, "e1", ""},
		{"edge facts other site", info("AFLEET", "UEDGE"), proto.APIHostFacts, `{"mac":"52:54:00:00:00:02"}`, "e1", "permission denied: edge e1 (site lab) may report only for machines of its own site"},
		{"edge done unknown host", info("AFLEET", "UEDGE"), proto.APIHostDone, `{"mac":"52:54:00:00:00:09"}`, "e1", "permission denied: edge e1 (site lab) may report only for machines of its own site"},
		{"edge lists hosts", info("AFLEET", "UEDGE"), proto.APIHostList, "", "e1", "permission denied: edge e1 (site lab) may not call host.list"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, err := g.Check(context.Background(), c.info, c.endpoint, []byte(c.body))
			got := ""
			if err != nil {
				got = err.Error()
				if !errors.Is(err, ErrDenied) {
					t.Errorf("not ErrDenied: %v", err)
				}
			}
			if diff := cmp.Diff(c.err, got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if id.Name != c.who {
				t.Errorf("who = %q, want %q", id.Name, c.who)
			}
		})
	}
}
