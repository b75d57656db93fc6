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
		"USITE":  {Name: "sam", Role: RoleSiteAdmin, Site: "lab", PublicKey: "USITE"},
	}
	g := &Guard{Account: "AFLEET", Directory: dir, HostSite: func(_ context.Context, mac string) (string, error) {
		switch mac {
		case "52:54:00:00:00:01":
			return "lab", nil
		case "52:54:00:00:00:02":
			return "other", nil
		case "52:54:00:00:00:0e":
			return "", errors.New("KV unreachable")
		}
		return "", fmt.Errorf("host %s: %w", mac, errNotFound)
	}}
	info := func(acc, user string) string { return fmt.Sprintf(`{"acc":%q,"user":%q}`, acc, user) }
	type guardCase struct {
		name, info, endpoint, body string
		who                        string // identity name, "" when unknown
		err                        string // "" when allowed
	}
	cases := []guardCase{
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
	// A site admin of lab: host ...01 is at lab, ...02 at other.
	sa := func(name, endpoint, body, err string) guardCase {
		return guardCase{"site admin " + name, info("AFLEET", "USITE"), endpoint, body, "sam", err}
	}
	const (
		notOurHost = "permission denied: site-admin sam (site lab) may see and change only hosts of site lab; "
		notOurSite = "permission denied: site-admin sam (site lab) may see and change only site lab, not "
	)
	cases = append(cases,
		sa("sets own host", proto.APIHostSet, `{"mac":"52:54:00:00:00:01","hostname":"x"}`, ""),
		sa("sets own host by its site", proto.APIHostSet, `{"mac":"52:54:00:00:00:01","site":"lab"}`, ""),
		sa("creates a host at her site", proto.APIHostSet, `{"mac":"52:54:00:00:00:03","site":"lab"}`, ""),
		sa("creates a host with no site", proto.APIHostSet, `{"mac":"52:54:00:00:00:03"}`,
			"permission denied: site-admin sam (site lab) must give the site of a new host (--site lab)"),
		sa("creates a host elsewhere", proto.APIHostSet, `{"mac":"52:54:00:00:00:03","site":"other"}`, notOurSite+`"other"`),
		sa("moves own host away", proto.APIHostSet, `{"mac":"52:54:00:00:00:01","site":"other"}`, notOurSite+`"other"`),
		sa("moves a host in", proto.APIHostSet, `{"mac":"52:54:00:00:00:02","site":"lab"}`, notOurHost+"52:54:00:00:00:02 is not one"),
		sa("sets another site's host", proto.APIHostSet, `{"mac":"52:54:00:00:00:02","hostname":"x"}`, notOurHost+"52:54:00:00:00:02 is not one"),
		sa("host lookup fails", proto.APIHostSet, `{"mac":"52:54:00:00:00:0e","site":"lab"}`,
			"permission denied: site-admin sam (site lab): cannot tell the site of host 52:54:00:00:00:0e: KV unreachable"),
		sa("takes another site's MAC as an extra one", proto.APIHostSet, `{"mac":"52:54:00:00:00:01","extra_macs":["52:54:00:00:00:03","52:54:00:00:00:02"]}`,
			notOurHost+"52:54:00:00:00:02 is not one"),
		sa("adds a new extra MAC", proto.APIHostSet, `{"mac":"52:54:00:00:00:01","extra_macs":["52:54:00:00:00:03"]}`, ""),
		sa("bad MAC", proto.APIHostSet, `{"mac":"nope","site":"lab"}`, `invalid: invalid MAC address "nope": want aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff`),
		sa("malformed body", proto.APIHostSet, `{"mac":1}`,
			"invalid: malformed request: json: cannot unmarshal number into Go struct field HostSetRequest.mac of type string"),
		sa("removes own host", proto.APIHostRm, `{"mac":"52:54:00:00:00:01"}`, ""),
		sa("removes another site's host", proto.APIHostRm, `{"mac":"52:54:00:00:00:02"}`, notOurHost+"52:54:00:00:00:02 is not one"),
		sa("removes an unknown host", proto.APIHostRm, `{"mac":"52:54:00:00:00:09"}`, notOurHost+"52:54:00:00:00:09 is not one"),
		sa("gets own host", proto.APIHostGet, `{"mac":"52:54:00:00:00:01"}`, ""),
		sa("gets another site's host", proto.APIHostGet, `{"mac":"52:54:00:00:00:02"}`, notOurHost+"52:54:00:00:00:02 is not one"),
		sa("facts for own host", proto.APIHostFacts, `{"mac":"52:54:00:00:00:01","facts":{}}`, ""),
		sa("done for another site's host", proto.APIHostDone, `{"mac":"52:54:00:00:00:02"}`, notOurHost+"52:54:00:00:00:02 is not one"),
		sa("lists own site's hosts", proto.APIHostList, `{"site":"lab"}`, ""),
		sa("lists hosts without a site", proto.APIHostList, ``, ""),
		sa("lists another site's hosts", proto.APIHostList, `{"site":"other"}`, notOurSite+`"other"`),
		sa("adds her site", proto.APISiteAdd, `{"name":"lab","networks":[{"subnet":"10.0.0.0/24"}]}`, ""),
		sa("adds another site", proto.APISiteAdd, `{"name":"other"}`, notOurSite+`"other"`),
		sa("gets her site", proto.APISiteGet, `{"name":"lab"}`, ""),
		sa("gets another site", proto.APISiteGet, `{"name":"other"}`, notOurSite+`"other"`),
		sa("lists sites", proto.APISiteList, ``, ""),
		sa("lists edges", proto.APIEdgeList, ``, ""),
		sa("removes her site", proto.APISiteRm, `{"name":"lab"}`, "permission denied: site-admin sam (site lab) may not site.rm (ask an admin)"),
		sa("reads an image", proto.APIImageGet, `{"name":"x"}`, ""),
		sa("adds an image", proto.APIImageAdd, `{"name":"x"}`, "permission denied: site-admin sam (site lab) may not image.add (ask an admin)"),
		sa("enrols an edge of her site", APIEdgeAdd, `{"name":"e2","site":"lab"}`, "permission denied: site-admin sam (site lab) may not edge.add (ask an admin)"),
		sa("enrols a user", APIUserAdd, `{"name":"x","role":"admin"}`, "permission denied: site-admin sam (site lab) may not user.add (ask an admin)"),
		sa("calls a new endpoint", "host.reboot", `{"mac":"52:54:00:00:00:01"}`, "permission denied: site-admin sam (site lab) may not host.reboot (ask an admin)"),
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, err := g.Check(context.Background(), c.info, c.endpoint, []byte(c.body))
			got := ""
			if err != nil {
				got = err.Error()
				// Malformed input is refused as the handler would.
				if !errors.Is(err, ErrDenied) && !errors.Is(err, errInvalid) {
					t.Errorf("not ErrDenied nor invalid: %v", err)
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
