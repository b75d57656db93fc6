package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/coordinator/api"
	"github.com/fleetboot/fleetboot/coordinator/audit"
	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/sealbox"
	"github.com/fleetboot/fleetboot/test/natstest"
)

// outcome is what became of one attempt.
type outcome string

// The outcomes a cell of the role table can expect.
const (
	// allow: the server and the coordinator let it through (an API call
	// answered without error; a JetStream request answered by JetStream).
	allow outcome = "allowed"
	// perm: the server refused it by the caller's NATS permissions: the
	// connection got a "permissions violation" error naming the subject.
	perm outcome = "refused by NATS permissions"
	// guard: the coordinator's guard refused it (code 403) and the AUDIT
	// stream holds a refusal record naming the caller and the endpoint.
	guard outcome = "refused by the guard, audited"
	// count: the guard refused an installer callback relayed by an edge
	// (code 403): counted in fleetboot_callback_refusals_total, no record,
	// since anyone on a boot network can make an edge send these.
	count outcome = "refused by the guard, counted"
)

// The columns of the role table: one identity each.
const (
	colAdmin = iota
	colSiteAdmin
	colViewer
	colEdge
	nCols
)

// want lists a row's expected outcomes in column order: admin, site-admin
// (of site lab), viewer, edge (of site lab).
type want [nCols]outcome

// roleRow is one attempt every identity makes.
type roleRow struct {
	name string
	try  attempt
	want want
}

// attempt makes one request as c and says what became of it. It may first
// prepare what it needs as the admin (a fresh site to remove), so no cell
// depends on another.
type attempt func(t *testing.T, f *roleFixture, c *caller) outcome

// The sites the seed makes: the edge and the site admin belong to site
// lab, and "other" is someone else's.
const (
	ownSite    = "lab"
	otherSite  = "other"
	seedImage  = "img"
	seedLoader = "ldr"
)

// apiRows: every endpoint of the coordinator's API, with the site a request
// is about where the answer depends on it. TestRoleTableListsEveryEndpoint
// fails when the API has an endpoint this table does not try.
//
// A site admin may change her site's config and hosts and nothing else,
// and sees only her site (listings are narrowed to it; images are global).
// An edge may only report for its site's machines and ask for the store.
func apiRows() []roleRow {
	lab, other := ownSite, otherSite
	return []roleRow{
		//                                                                 admin  site-admin viewer edge
		{"site.list", apiCall(proto.APISiteList, listReq("")), want{allow, allow, allow, perm}},
		{"site.get lab", apiCall(proto.APISiteGet, nameReq(lab)), want{allow, allow, allow, perm}},
		{"site.get other", apiCall(proto.APISiteGet, nameReq(other)), want{allow, guard, allow, perm}},
		{"site.add lab (update)", apiCall(proto.APISiteAdd, siteUpdate(lab)), want{allow, allow, guard, perm}},
		{"site.add other (update)", apiCall(proto.APISiteAdd, siteUpdate(other)), want{allow, guard, guard, perm}},
		{"site.add new", apiCall(proto.APISiteAdd, newSite), want{allow, guard, guard, perm}},
		{"site.rm (empty site)", apiCall(proto.APISiteRm, siteToRemove), want{allow, guard, guard, perm}},
		{"image.list", apiCall(proto.APIImageList, listReq("")), want{allow, allow, allow, perm}},
		{"image.get", apiCall(proto.APIImageGet, nameReq(seedImage)), want{allow, allow, allow, perm}},
		{"image.add new", apiCall(proto.APIImageAdd, newImage), want{allow, guard, guard, perm}},
		{"image.rm (unused image)", apiCall(proto.APIImageRm, imageToRemove), want{allow, guard, guard, perm}},
		{"image.history.list", apiCall(proto.APIImageHistory, nameReq(seedImage)), want{allow, allow, allow, perm}},
		{"image.rollback", apiCall(proto.APIImageRollback, imageToRollBack), want{allow, guard, guard, perm}},
		{"loader.list", apiCall(proto.APILoaderList, listReq("")), want{allow, allow, allow, perm}},
		{"loader.get", apiCall(proto.APILoaderGet, nameReq(seedLoader)), want{allow, allow, allow, perm}},
		{"loader.add new", apiCall(proto.APILoaderAdd, newLoader), want{allow, guard, guard, perm}},
		{"loader.rm (unused loader)", apiCall(proto.APILoaderRm, loaderToRemove), want{allow, guard, guard, perm}},
		{"host.list all", apiCall(proto.APIHostList, listReq("")), want{allow, allow, allow, perm}},
		{"host.list lab", apiCall(proto.APIHostList, listReq(lab)), want{allow, allow, allow, perm}},
		{"host.list other", apiCall(proto.APIHostList, listReq(other)), want{allow, guard, allow, perm}},
		{"host.get lab", apiCall(proto.APIHostGet, macReq(labMAC)), want{allow, allow, allow, perm}},
		{"host.get other", apiCall(proto.APIHostGet, macReq(otherMAC)), want{allow, guard, allow, perm}},
		{"host.set new at lab", apiCall(proto.APIHostSet, newHost(lab)), want{allow, allow, guard, perm}},
		{"host.set new at other", apiCall(proto.APIHostSet, newHost(other)), want{allow, guard, guard, perm}},
		{"host.set lab host's name", apiCall(proto.APIHostSet, renameHost(lab)), want{allow, allow, guard, perm}},
		{"host.set other host's name", apiCall(proto.APIHostSet, renameHost(other)), want{allow, guard, guard, perm}},
		{"host.set lab host to other", apiCall(proto.APIHostSet, moveHost(lab, other)), want{allow, guard, guard, perm}},
		{"host.set other host to lab", apiCall(proto.APIHostSet, moveHost(other, lab)), want{allow, guard, guard, perm}},
		{"host.rm lab host", apiCall(proto.APIHostRm, hostToRemove(lab)), want{allow, allow, guard, perm}},
		{"host.rm other host", apiCall(proto.APIHostRm, hostToRemove(other)), want{allow, guard, guard, perm}},
		{"host.done lab host", apiCall(proto.APIHostDone, macReq(labMAC)), want{allow, allow, guard, allow}},
		{"host.done other host", apiCall(proto.APIHostDone, macReq(otherMAC)), want{allow, guard, guard, count}},
		{"host.facts lab host", apiCall(proto.APIHostFacts, factsReq(labMAC)), want{allow, allow, guard, allow}},
		{"host.facts other host", apiCall(proto.APIHostFacts, factsReq(otherMAC)), want{allow, guard, guard, count}},
		{"host.import at lab", apiCall(proto.APIHostImport, importAt(lab)), want{allow, allow, guard, perm}},
		{"host.import at other", apiCall(proto.APIHostImport, importAt(other)), want{allow, guard, guard, perm}},
		{"host.bulkset lab", apiCall(proto.APIHostBulkSet, bulkSetAt(lab)), want{allow, allow, guard, perm}},
		{"host.bulkset other", apiCall(proto.APIHostBulkSet, bulkSetAt(other)), want{allow, guard, guard, perm}},
		{"host.facts unknown MAC at lab (discovery)", apiCall(proto.APIHostFacts, discoveryReport), want{allow, guard, guard, allow}},
		{"discovered.list all", apiCall(proto.APIDiscoveredList, listReq("")), want{allow, allow, allow, perm}},
		{"discovered.list other", apiCall(proto.APIDiscoveredList, listReq(other)), want{allow, guard, allow, perm}},
		{"facts.get lab host", apiCall(proto.APIFactsGet, macReq(labMAC)), want{allow, allow, allow, perm}},
		{"facts.get other host", apiCall(proto.APIFactsGet, macReq(otherMAC)), want{allow, guard, allow, perm}},
		{"policy.explain lab host", apiCall(proto.APIPolicyExplain, macReq(labMAC)), want{allow, allow, allow, perm}},
		{"policy.explain other host", apiCall(proto.APIPolicyExplain, macReq(otherMAC)), want{allow, guard, allow, perm}},
		{"policy.add new", apiCall(proto.APIPolicyAdd, newPolicy), want{allow, guard, guard, perm}},
		{"policy.list", apiCall(proto.APIPolicyList, listReq("")), want{allow, allow, allow, perm}},
		{"policy.get", apiCall(proto.APIPolicyGet, existingPolicy), want{allow, allow, allow, perm}},
		{"policy.enable", apiCall(proto.APIPolicyEnable, policyToDisable), want{allow, guard, guard, perm}},
		{"policy.rm", apiCall(proto.APIPolicyRm, existingPolicy), want{allow, guard, guard, perm}},
		{"template.add new", apiCall(proto.APITemplateAdd, newTemplate), want{allow, guard, guard, perm}},
		{"template.list", apiCall(proto.APITemplateList, listReq("")), want{allow, allow, allow, perm}},
		{"template.get", apiCall(proto.APITemplateGet, existingTemplate), want{allow, allow, allow, perm}},
		{"template.rm (unused template)", apiCall(proto.APITemplateRm, existingTemplate), want{allow, guard, guard, perm}},
		{"host.bmckeys.get lab host", apiCall(proto.APIHostBMCKeys, macReq(labMAC)), want{allow, allow, allow, perm}},
		{"host.bmc lab host", apiCall(proto.APIHostBMC, bmcReq(lab)), want{allow, allow, guard, perm}},
		{"host.power lab host", apiCall(proto.APIHostPower, powerReq(lab)), want{allow, allow, guard, perm}},
		{"rollout.start lab", apiCall(proto.APIRolloutStart, newRollout(lab)), want{allow, allow, guard, perm}},
		{"rollout.start other", apiCall(proto.APIRolloutStart, newRollout(other)), want{allow, guard, guard, perm}},
		{"rollout.list", apiCall(proto.APIRolloutList, listReq("")), want{allow, allow, allow, perm}},
		{"rollout.get lab", apiCall(proto.APIRolloutGet, existingRollout(lab, "")), want{allow, allow, allow, perm}},
		{"rollout.get other", apiCall(proto.APIRolloutGet, existingRollout(other, "")), want{allow, guard, allow, perm}},
		{"rollout.pause lab", apiCall(proto.APIRolloutPause, existingRollout(lab, "")), want{allow, allow, guard, perm}},
		{"rollout.pause other", apiCall(proto.APIRolloutPause, existingRollout(other, "")), want{allow, guard, guard, perm}},
		{"rollout.resume lab", apiCall(proto.APIRolloutResume, existingRollout(lab, proto.APIRolloutPause)), want{allow, allow, guard, perm}},
		{"rollout.abort lab", apiCall(proto.APIRolloutAbort, existingRollout(lab, "")), want{allow, allow, guard, perm}},
		{"rollout.abort other", apiCall(proto.APIRolloutAbort, existingRollout(other, "")), want{allow, guard, guard, perm}},
		{"rollout.rollback lab", apiCall(proto.APIRolloutRollback, existingRollout(lab, proto.APIRolloutAbort)), want{allow, allow, guard, perm}},
		{"rollout.rollback other", apiCall(proto.APIRolloutRollback, existingRollout(other, proto.APIRolloutAbort)), want{allow, guard, guard, perm}},
		{"edge.list", apiCall(proto.APIEdgeList, listReq("")), want{allow, allow, allow, perm}},
		{"store.info", apiCall(proto.APIStoreInfo, listReq("")), want{allow, allow, allow, allow}},
		{"edge.add at lab", apiCall(auth.APIEdgeAdd, newEdge(lab)), want{allow, guard, guard, perm}},
		{"edge.revoke lab edge", apiCall(auth.APIEdgeRevoke, edgeToRevoke(lab)), want{allow, guard, guard, perm}},
		{"user.add viewer", apiCall(auth.APIUserAdd, newUser(auth.RoleViewer)), want{allow, guard, guard, perm}},
		{"user.add site-admin of lab", apiCall(auth.APIUserAdd, newSiteAdmin(lab)), want{allow, guard, guard, perm}},
		{"user.add admin", apiCall(auth.APIUserAdd, newUser(auth.RoleAdmin)), want{allow, guard, guard, perm}},
		{"user.revoke viewer", apiCall(auth.APIUserRevoke, userToRevoke), want{allow, guard, guard, perm}},
	}
}

// bucket is a KV bucket as the table tries it: own is a key of site lab
// (or a key no site owns), other one of site other ("" where keys have no
// site); watchOwn and watchOther are the matching watch filters.
type bucket struct {
	name, own, other     string
	watchOwn, watchOther string
	clusterOnly          bool // exists only with --auth --nats-url
}

// buckets: every KV bucket. TestRoleTable fails when the server holds a
// stream this table does not try.
func buckets(t *testing.T) []bucket {
	labKey, otherKey := hostKey(t, ownSite, labMAC), hostKey(t, otherSite, otherMAC)
	macKey, err := proto.MACKey(labMAC)
	if err != nil {
		t.Fatal(err)
	}
	return []bucket{
		{name: proto.BucketSites, own: ownSite, other: otherSite, watchOwn: ownSite, watchOther: otherSite},
		{name: proto.BucketHosts, own: labKey, other: otherKey, watchOwn: ownSite + ".>", watchOther: otherSite + ".>"},
		{name: proto.BucketImages, own: seedImage},
		{name: proto.BucketLoaders, own: seedLoader},
		{name: proto.BucketMACs, own: macKey},
		{name: "ips", own: ownSite + ".10.0.0.5"},
		{name: "facts", own: macKey},
		{name: "discovered", own: labKey, other: otherKey, watchOwn: ownSite + ".>", watchOther: otherSite + ".>"},
		{name: "policies", own: "rtpol"},
		{name: "policyclaims", own: "rtpol"},
		{name: proto.BucketTemplates, own: "rttpl"},
		{name: "templatelocks", own: "rttpl"},
		{name: "imagelocks", own: seedImage},
		{name: "loaderlocks", own: seedLoader},
		{name: proto.BucketEdges, own: "rte-probe"},
		{name: proto.BucketRollouts, own: "rtroll"},
		{name: "rolloutholds", own: "host." + macKey},
		// The coordinators' registry of credentials on a cluster: not even
		// an admin reads it past the API.
		{name: proto.BucketIdentities, own: "rt-admin", clusterOnly: true},
	}
}

// kvRows: what every identity tries on bucket b directly, past the API.
// Only the coordinator writes the buckets. Edges and site admins read their
// own site's keys (by key or watch, never by sequence), the images and loaders;
// admins and viewers read everything.
func kvRows(b bucket) []roleRow {
	none := want{perm, perm, perm, perm}
	people := want{allow, perm, allow, perm}
	readOwn, readOther, readAll := people, people, people
	switch b.name {
	case proto.BucketSites, proto.BucketHosts:
		readOwn = want{allow, allow, allow, allow}
	case proto.BucketImages, proto.BucketLoaders, proto.BucketTemplates:
		readOwn, readAll = want{allow, allow, allow, allow}, want{allow, allow, allow, allow}
	case proto.BucketIdentities:
		people, readOwn, readOther, readAll = none, none, none, none
	}
	rows := []roleRow{
		{"put own key", kvPut(b.name, b.own, ""), none},
		{"purge own key", kvPut(b.name, b.own, "PURGE"), none},
		{"delete own key", kvPut(b.name, b.own, "DEL"), none},
		{"direct get own key", directGet(b.name, b.own), readOwn},
		{"message get own key", msgGet("KV_"+b.name, "$KV."+b.name+"."+b.own), people},
		{"watch all", watch("KV_"+b.name, "$KV."+b.name+".>"), readAll},
		{"purge stream (one fresh key)", purgeStream("KV_"+b.name, "$KV."+b.name+"."), none},
		{"delete message", deleteMsg("KV_" + b.name), none},
	}
	if b.other != "" {
		rows = append(rows,
			roleRow{"direct get other site's key", directGet(b.name, b.other), readOther},
			roleRow{"watch own site", watch("KV_"+b.name, "$KV."+b.name+"."+b.watchOwn), readOwn},
			roleRow{"watch other site", watch("KV_"+b.name, "$KV."+b.name+"."+b.watchOther), readOther},
		)
	}
	return rows
}

// streamRows: what every identity tries on the EVENTS and AUDIT streams.
// Edges publish their own site's events and read none; site admins read
// their site's events and no audit; admins and viewers read both; nobody
// but the coordinator writes the audit log, and nobody may remove
// anything.
func streamRows() map[string][]roleRow {
	none := want{perm, perm, perm, perm}
	people := want{allow, perm, allow, perm}
	return map[string][]roleRow{
		proto.StreamEvents: {
			//                                                              admin  site-admin viewer edge
			{"publish own site's event", publishEvent(ownSite), want{perm, perm, perm, allow}},
			{"publish other site's event", publishEvent(otherSite), none},
			{"message get", msgGet(proto.StreamEvents, ""), people},
			{"watch own site", watch(proto.StreamEvents, proto.SubjectEventsPrefix+"."+ownSite+".>"), want{allow, allow, allow, perm}},
			{"watch other site", watch(proto.StreamEvents, proto.SubjectEventsPrefix+"."+otherSite+".>"), people},
			{"watch all", watch(proto.StreamEvents, proto.SubjectEventsPrefix+".>"), people},
			{"purge stream (one fresh subject)", purgeStream(proto.StreamEvents, proto.SubjectEventsPrefix+".none.none."), none},
			{"delete message", deleteMsg(proto.StreamEvents), none},
		},
		proto.StreamAudit: {
			{"publish a record", publishRaw(proto.SubjectAuditPrefix + "." + proto.APIHostSet), none},
			{"message get", msgGet(proto.StreamAudit, ""), people},
			{"watch all", watch(proto.StreamAudit, proto.SubjectAuditPrefix+".>"), people},
			{"purge stream (one fresh subject)", purgeStream(proto.StreamAudit, proto.SubjectAuditPrefix+".none."), none},
			{"delete message", deleteMsg(proto.StreamAudit), none},
		},
	}
}

// TestRoleTable: an admin, a site admin of site lab, a viewer and an edge
// of site lab each try every API endpoint and, past the API, every read and
// write of every KV bucket and stream, on a connection of their own per
// attempt; each outcome must be the table's. It runs on the embedded
// server and on a three-node cluster in operator mode.
func TestRoleTable(t *testing.T) { forEachBackend(t, testRoleTable) }

func testRoleTable(t *testing.T, start func(*testing.T) *env) {
	f := newRoleFixture(t, start(t))
	cols := [nCols]string{colAdmin: "admin", colSiteAdmin: "site-admin", colViewer: "viewer", colEdge: "edge"}
	run := func(t *testing.T, rows []roleRow) {
		for _, r := range rows {
			for col, w := range r.want {
				t.Run(r.name+"/"+cols[col], func(t *testing.T) {
					c := f.caller(t, col)
					if got := r.try(t, f, c); got != w {
						t.Errorf("%s: %s, want %s", c.id, got, w)
					}
				})
			}
		}
	}
	t.Run("api", func(t *testing.T) { run(t, apiRows()) })
	present := f.streams(t)
	streams := streamRows()
	tried := []string{}
	for _, b := range buckets(t) {
		if b.clusterOnly && !slices.Contains(present, "KV_"+b.name) {
			continue
		}
		tried = append(tried, "KV_"+b.name)
		t.Run("kv "+b.name, func(t *testing.T) { run(t, kvRows(b)) })
	}
	for _, s := range []string{proto.StreamEvents, proto.StreamAudit} {
		tried = append(tried, s)
		t.Run("stream "+s, func(t *testing.T) { run(t, streams[s]) })
	}
	// Last, as it would take a stream away from the rows above if allowed.
	for _, s := range tried {
		t.Run("delete stream "+s, func(t *testing.T) { run(t, []roleRow{{"delete", deleteStream(s), want{perm, perm, perm, perm}}}) })
	}
	t.Run("every stream is in the table", func(t *testing.T) {
		var unlisted []string
		for _, n := range present {
			if !slices.Contains(tried, n) {
				unlisted = append(unlisted, n)
			}
		}
		if len(unlisted) > 0 {
			t.Errorf("streams no row of the role table tries: %q", unlisted)
		}
	})
}

// streams lists the server's streams, as the admin sees them.
func (f *roleFixture) streams(t *testing.T) []string {
	t.Helper()
	names := f.adminJS.StreamNames(context.Background())
	var out []string
	for n := range names.Name() {
		out = append(out, n)
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRoleTableListsEveryEndpoint: the API's micro service (as api.Start
// registers it) has no endpoint the role table does not try.
func TestRoleTableListsEveryEndpoint(t *testing.T) {
	ns := natstest.Start(t)
	nc, _ := natstest.Connect(t, ns.ClientURL())
	svc, err := api.Start(nc, api.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	tried := map[string]bool{}
	for _, r := range apiRows() {
		tried[strings.Fields(r.name)[0]] = true
	}
	var missing []string
	for _, ep := range svc.Info().Endpoints {
		if !tried[strings.TrimPrefix(ep.Subject, proto.APIPrefix+".")] {
			missing = append(missing, ep.Subject)
		}
	}
	if len(missing) > 0 {
		t.Errorf("endpoints no row of the role table tries: %q", missing)
	}
}

// roleFixture is a seeded coordinator and one enrolled identity per column.
type roleFixture struct {
	e       *env
	admin   *nats.Conn
	adminJS jetstream.JetStream
	creds   [nCols][2]string
	ids     [nCols][2]auth.Identity
	turn    [nCols]int // which of the column's two identities is next

	xkey string // the fixture edge's public curve key

	mu sync.Mutex
	n  int // fresh names, MACs and subnets
}

func newRoleFixture(t *testing.T, e *env) *roleFixture {
	t.Helper()
	f := &roleFixture{e: e, admin: e.seed(t)}
	js, err := jetstream.New(f.admin)
	if err != nil {
		t.Fatal(err)
	}
	f.adminJS = js
	mustOK(t, call(t, f.admin, proto.APIImageAdd, tableImage(seedImage), nil))
	mustOK(t, call(t, f.admin, proto.APILoaderAdd, tableLoader(seedLoader), nil))
	// Two identities per column, taken in turn: the audit log stores at
	// most audit.RefusalsPerMinute refusals per caller and minute, and the
	// table refuses a viewer more often than that.
	for i, suffix := range []string{"", "-b"} {
		f.creds[colAdmin][i] = enrol(t, f.admin, auth.APIUserAdd, auth.EnrolRequest{Name: "rt-admin" + suffix, Role: auth.RoleAdmin})
		f.creds[colSiteAdmin][i] = enrol(t, f.admin, auth.APIUserAdd, auth.EnrolRequest{Name: "rt-siteadmin" + suffix, Role: auth.RoleSiteAdmin, Site: ownSite})
		f.creds[colViewer][i] = enrol(t, f.admin, auth.APIUserAdd, auth.EnrolRequest{Name: "rt-viewer" + suffix, Role: auth.RoleViewer})
		f.creds[colEdge][i] = enrol(t, f.admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: "rte1" + strings.TrimPrefix(suffix, "-"), Site: ownSite})
		f.ids[colAdmin][i] = auth.Identity{Name: "rt-admin" + suffix, Role: auth.RoleAdmin}
		f.ids[colSiteAdmin][i] = auth.Identity{Name: "rt-siteadmin" + suffix, Role: auth.RoleSiteAdmin, Site: ownSite}
		f.ids[colViewer][i] = auth.Identity{Name: "rt-viewer" + suffix, Role: auth.RoleViewer}
		f.ids[colEdge][i] = auth.Identity{Name: "rte1" + strings.TrimPrefix(suffix, "-"), Role: auth.RoleEdge, Site: ownSite}
	}
	f.startPowerEdge(t)
	return f
}

// startPowerEdge plays the site's edge for power control with the edge's
// own credential: it publishes a curve key in its heartbeat and answers
// power requests on its own subject (which its permissions let it take and
// answer), so BMC requests can succeed.
func (f *roleFixture) startPowerEdge(t *testing.T) {
	t.Helper()
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	f.xkey, _ = kp.PublicKey()
	c := f.caller(t, colEdge) // the first call: identity 0, whose name the table's power rows use
	nc, edge := c.nc, c.id.Name
	_, err = nc.Subscribe(proto.PowerSubject(ownSite, edge), func(m *nats.Msg) {
		var req proto.PowerRequest
		_ = json.Unmarshal(m.Data, &req)
		data, _ := json.Marshal(proto.PowerReply{V: proto.Version, MAC: req.MAC, Edge: edge, Action: req.Action, Power: "on"})
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := json.Marshal(proto.EdgeStatus{V: proto.Version, Name: edge, Site: ownSite, XKey: f.xkey, Time: time.Now().UTC()})
	for i := 0; ; i++ {
		if err := nc.Publish(proto.StatusSubject(ownSite, edge), hb); err != nil {
			t.Fatal(err)
		}
		if rep := call(t, f.admin, proto.APIHostBMCKeys, proto.MACRequest{V: proto.Version, MAC: f.existingHost(t, ownSite)}, nil); rep.Error == "" {
			return
		} else if i == 100 {
			t.Fatalf("the edge's curve key never reached the coordinator: %s", rep.Error)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bmcReq sets the BMC of a fresh host of site, its password sealed to the
// fixture edge's key.
func bmcReq(site string) func(*testing.T, *roleFixture) any {
	return func(t *testing.T, f *roleFixture) any {
		mac := f.existingHost(t, site)
		box, err := sealbox.Seal([]byte("pw"), mac, f.xkey)
		if err != nil {
			t.Fatal(err)
		}
		return proto.HostBMCRequest{V: proto.Version, MAC: mac, Address: "192.0.2.1", User: "admin",
			Sealed: map[string]proto.SealedSecret{f.ids[colEdge][0].Name: box}}
	}
}

// powerReq asks for the power state of a host of site whose BMC is set.
func powerReq(site string) func(*testing.T, *roleFixture) any {
	return func(t *testing.T, f *roleFixture) any {
		req := bmcReq(site)(t, f).(proto.HostBMCRequest)
		mustOK(t, call(t, f.admin, proto.APIHostBMC, req, nil))
		return proto.PowerRequest{V: proto.Version, MAC: req.MAC, Action: proto.PowerStatus}
	}
}

func (f *roleFixture) fresh() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	return f.n
}

func (f *roleFixture) freshName(prefix string) string { return fmt.Sprintf("%s%d", prefix, f.fresh()) }

func (f *roleFixture) freshMAC() string {
	n := f.fresh()
	return fmt.Sprintf("52:54:00:ee:%02x:%02x", byte(n>>8), byte(n))
}

// caller is one identity on a connection of its own for one cell, so a
// permission error can only be this cell's.
type caller struct {
	id   auth.Identity
	nc   *nats.Conn
	errs *violations
}

func (f *roleFixture) caller(t *testing.T, col int) *caller {
	t.Helper()
	v := &violations{}
	f.mu.Lock()
	i := f.turn[col] % 2
	f.turn[col]++
	f.mu.Unlock()
	opts, _ := f.e.options(f.creds[col][i])
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { v.add(err) }))
	nc, err := nats.Connect(f.e.url, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", f.ids[col][i], err)
	}
	t.Cleanup(nc.Close)
	return &caller{id: f.ids[col][i], nc: nc, errs: v}
}

// violations collects a connection's permission errors and tells waiters
// when one names their subject.
type violations struct {
	mu      sync.Mutex
	seen    []string
	waiters []violationWaiter
}

type violationWaiter struct {
	subject string
	ch      chan struct{}
}

func (v *violations) add(err error) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	msg := strings.ToLower(err.Error())
	v.mu.Lock()
	defer v.mu.Unlock()
	v.seen = append(v.seen, msg)
	kept := v.waiters[:0]
	for _, w := range v.waiters {
		if strings.Contains(msg, strings.ToLower(w.subject)) {
			close(w.ch)
			continue
		}
		kept = append(kept, w)
	}
	v.waiters = kept
}

// naming returns a channel closed once a permission error naming subject
// (or a subject starting with it) arrived.
func (v *violations) naming(subject string) <-chan struct{} {
	ch := make(chan struct{})
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, m := range v.seen {
		if strings.Contains(m, strings.ToLower(subject)) {
			close(ch)
			return ch
		}
	}
	v.waiters = append(v.waiters, violationWaiter{subject, ch})
	return ch
}

func (v *violations) all() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.seen)
}

// attemptLimit bounds one attempt. A refused publish is answered at once
// with an error naming it; an allowed one with a reply. Reaching the limit
// means neither came: the cell reports it as a failure of its own.
const attemptLimit = 20 * time.Second

// try runs do as c until it returns or the server reports a permission
// violation naming subject; refused tells which. A violation that arrives
// with a reply (a request allowed, its reply refused) counts too: after do
// returns, a flush makes sure every error the server sent before has been
// read.
func (c *caller) try(subject string, do func(ctx context.Context) error) (refused bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), attemptLimit)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- do(ctx) }()
	violation := c.errs.naming(subject)
	select {
	case err = <-done:
		_ = c.nc.Flush()
		select {
		case <-violation:
			return true, err
		default:
			return false, err
		}
	case <-violation:
		cancel()
		<-done
		return true, nil
	}
}

// failed describes an attempt that neither went through nor was refused as
// the table knows refusals. "No responders" (nothing subscribes: no
// coordinator, a stream without direct get) and reaching attemptLimit
// (neither a reply nor a permission error) land here: they are never
// taken for a permission refusal, which only the server's error naming
// the subject proves.
func failed(c *caller, err error) outcome {
	if errs := c.errs.all(); len(errs) > 0 {
		return outcome(fmt.Sprintf("failed: %v (permission errors on other subjects: %q)", err, errs))
	}
	return outcome(fmt.Sprintf("failed: %v", err))
}

// apiCall makes an API request built by req (which may prepare what it is
// about as the admin).
func apiCall(endpoint string, req func(t *testing.T, f *roleFixture) any) attempt {
	return func(t *testing.T, f *roleFixture, c *caller) outcome {
		body, err := json.Marshal(req(t, f))
		if err != nil {
			t.Fatal(err)
		}
		before := f.auditLastSeq(t)
		callbacksBefore := counter(t, f.e.registry, "fleetboot_callback_refusals_total")
		subject := proto.APISubject(endpoint)
		var msg *nats.Msg
		refused, err := c.try(subject, func(ctx context.Context) error {
			var err error
			msg, err = c.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Data: body})
			return err
		})
		switch {
		case refused:
			return perm
		case err != nil:
			return failed(c, err)
		}
		var rep proto.Reply
		if err := json.Unmarshal(msg.Data, &rep); err != nil {
			return outcome(fmt.Sprintf("failed: reply %q: %v", msg.Data, err))
		}
		if rep.Error == "" {
			if c.id.Site != "" && strings.Contains(string(rep.Data), strconv.Quote(otherSite)) {
				// A caller confined to a site reads nothing of another.
				return outcome(fmt.Sprintf("allowed, but the reply shows site %s: %s", otherSite, rep.Data))
			}
			return allow
		}
		if code := msg.Header.Get(micro.ErrorCodeHeader); code != "403" {
			return outcome(fmt.Sprintf("failed: code %s: %s", code, rep.Error))
		}
		// The coordinator stores the record before it answers.
		recs := f.auditSince(t, before)
		for _, r := range recs {
			if r.Who == c.id.Name && r.Role == string(c.id.Role) && r.Action == endpoint && r.Outcome == audit.Refused {
				return guard
			}
		}
		if len(recs) == 0 && counter(t, f.e.registry, "fleetboot_callback_refusals_total") == callbacksBefore+1 {
			return count
		}
		return outcome(fmt.Sprintf("refused (%s) without a record naming %s and %s: records %+v", rep.Error, c.id, endpoint, recs))
	}
}

// auditLastSeq is the AUDIT stream's last sequence.
func (f *roleFixture) auditLastSeq(t *testing.T) uint64 {
	t.Helper()
	st, err := f.adminJS.Stream(context.Background(), proto.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.LastSeq
}

// auditSince returns the records stored after sequence seq.
func (f *roleFixture) auditSince(t *testing.T, seq uint64) []audit.Record {
	t.Helper()
	ctx := context.Background()
	st, err := f.adminJS.Stream(ctx, proto.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Record
	for s := seq + 1; s <= st.CachedInfo().State.LastSeq; s++ {
		m, err := st.GetMsg(ctx, s)
		if err != nil {
			t.Fatalf("audit record %d: %v", s, err)
		}
		var r audit.Record
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("audit record %d: %v", s, err)
		}
		out = append(out, r)
	}
	return out
}

// jsRequest sends a JetStream API request as c. Any answer from JetStream,
// an error included ("no message found"), means the server's permissions
// let the request through: allow.
func jsRequest(subject string, body any) attempt {
	return func(t *testing.T, _ *roleFixture, c *caller) outcome {
		var data []byte
		if body != nil {
			var err error
			if data, err = json.Marshal(body); err != nil {
				t.Fatal(err)
			}
		}
		return jsTry(c, subject, data)
	}
}

func jsTry(c *caller, subject string, data []byte) outcome {
	refused, err := c.try(subject, func(ctx context.Context) error {
		_, err := c.nc.RequestWithContext(ctx, subject, data)
		return err
	})
	switch {
	case refused:
		return perm
	case err != nil:
		return failed(c, err)
	}
	return allow
}

// kvPut writes key as a client library does: a put, or with op the purge
// or delete marker. The value is the key's current one, so a put that goes
// through (a hole) changes nothing.
func kvPut(b, key, op string) attempt {
	return func(t *testing.T, f *roleFixture, c *caller) outcome {
		subject := "$KV." + b + "." + key
		m := &nats.Msg{Subject: subject, Data: f.current(t, b, key), Header: nats.Header{}}
		if op != "" {
			m.Data = nil
			m.Header.Set("KV-Operation", op)
			if op == "PURGE" {
				m.Header.Set("Nats-Rollup", "sub")
			}
		}
		js, err := jetstream.New(c.nc)
		if err != nil {
			t.Fatal(err)
		}
		refused, err := c.try(subject, func(ctx context.Context) error {
			_, err := js.PublishMsg(ctx, m)
			return err
		})
		switch {
		case refused:
			return perm
		case err != nil:
			return failed(c, err)
		}
		return allow
	}
}

// current is key's value in bucket b as the admin reads it, or {}.
func (f *roleFixture) current(t *testing.T, b, key string) []byte {
	t.Helper()
	if b == proto.BucketIdentities {
		return []byte(`{}`) // not even the admin reads it past the API
	}
	kv, err := f.adminJS.KeyValue(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return []byte(`{}`)
	}
	if err != nil {
		t.Fatal(err)
	}
	return e.Value()
}

// directGet reads a key as a client library does with the bucket's direct
// get: the key in the subject.
func directGet(b, key string) attempt {
	return jsRequest("$JS.API.DIRECT.GET.KV_"+b+".$KV."+b+"."+key, nil)
}

// msgGet reads a stream's message by subject (the last one), or its first
// message when subject is "".
func msgGet(stream, subject string) attempt {
	var body any = map[string]any{"seq": 1}
	if subject != "" {
		body = map[string]any{"last_by_subj": subject}
	}
	return jsRequest("$JS.API.STREAM.MSG.GET."+stream, body)
}

// watch creates the ephemeral consumer an ordered consumer (a KV watch)
// creates, filtered on filter, delivering to c's inbox.
func watch(stream, filter string) attempt {
	return func(t *testing.T, f *roleFixture, c *caller) outcome {
		name := f.freshName("rtwatch")
		policy := "all"
		if strings.HasPrefix(stream, "KV_") {
			policy = "last_per_subject"
		}
		body, err := json.Marshal(map[string]any{"stream_name": stream, "config": map[string]any{
			"name": name, "deliver_subject": c.nc.NewRespInbox(), "filter_subject": filter,
			"deliver_policy": policy, "ack_policy": "none", "max_deliver": 1,
			"mem_storage": true, "num_replicas": 1,
		}})
		if err != nil {
			t.Fatal(err)
		}
		return jsTry(c, "$JS.API.CONSUMER.CREATE."+stream+"."+name+"."+filter, body)
	}
}

// purgeStream purges one fresh subject of a stream: harmless if it goes
// through.
func purgeStream(stream, prefix string) attempt {
	return func(t *testing.T, f *roleFixture, c *caller) outcome {
		body, _ := json.Marshal(map[string]any{"filter": prefix + f.freshName("rtpurge")})
		return jsTry(c, "$JS.API.STREAM.PURGE."+stream, body)
	}
}

// deleteMsg deletes a message that does not exist: harmless if it goes
// through.
func deleteMsg(stream string) attempt {
	return jsRequest("$JS.API.STREAM.MSG.DELETE."+stream, map[string]any{"seq": uint64(1) << 40, "no_erase": true})
}

func deleteStream(stream string) attempt {
	return jsRequest("$JS.API.STREAM.DELETE."+stream, nil)
}

// publishEvent publishes an honest event of the caller's edge name at site
// into the EVENTS stream, as an edge does.
func publishEvent(site string) attempt {
	return func(t *testing.T, f *roleFixture, c *caller) outcome {
		edgeName := c.id.Name
		id := f.freshName("rtevent")
		b, _ := json.Marshal(proto.Event{V: proto.Version, ID: id, Time: time.Now(), Site: site, Edge: edgeName, MAC: labMAC, Kind: proto.EventScript})
		return jsPublish(t, c, proto.EventSubject(site, edgeName, labMAC), b)
	}
}

func publishRaw(subject string) attempt {
	return func(t *testing.T, _ *roleFixture, c *caller) outcome {
		return jsPublish(t, c, subject, []byte(`{}`))
	}
}

// jsPublish publishes into a stream and waits for its acknowledgement.
func jsPublish(t *testing.T, c *caller, subject string, data []byte) outcome {
	js, err := jetstream.New(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	refused, err := c.try(subject, func(ctx context.Context) error {
		_, err := js.Publish(ctx, subject, data)
		return err
	})
	switch {
	case refused:
		return perm
	case err != nil:
		return failed(c, err)
	}
	return allow
}

// Requests. Each cell gets fresh ones; what a change is about (a site to
// remove, a host to move) is made first, by the admin.

func listReq(site string) func(*testing.T, *roleFixture) any {
	return func(*testing.T, *roleFixture) any { return proto.ListRequest{V: proto.Version, Site: site} }
}

func nameReq(name string) func(*testing.T, *roleFixture) any {
	return func(*testing.T, *roleFixture) any { return proto.NameRequest{V: proto.Version, Name: name} }
}

func macReq(mac string) func(*testing.T, *roleFixture) any {
	return func(*testing.T, *roleFixture) any { return proto.MACRequest{V: proto.Version, MAC: mac} }
}

func factsReq(mac string) func(*testing.T, *roleFixture) any {
	return func(*testing.T, *roleFixture) any {
		return proto.FactsRequest{V: proto.Version, MAC: mac, Facts: json.RawMessage(`{"probe":true}`)}
	}
}

// siteUpdate is the site as it is: an update that changes nothing.
func siteUpdate(name string) func(*testing.T, *roleFixture) any {
	return func(t *testing.T, f *roleFixture) any {
		var s proto.Site
		rep := call(t, f.admin, proto.APISiteGet, proto.NameRequest{V: proto.Version, Name: name}, nil)
		mustOK(t, rep)
		if err := json.Unmarshal(rep.Data, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func (f *roleFixture) site() proto.Site {
	n := f.fresh()
	return proto.Site{V: proto.Version, Name: fmt.Sprintf("rtsite%d", n),
		Networks: []proto.Network{{Subnet: fmt.Sprintf("10.%d.%d.0/24", 100+n/256, n%256)}}}
}

func newSite(_ *testing.T, f *roleFixture) any { return f.site() }

func siteToRemove(t *testing.T, f *roleFixture) any {
	s := f.site()
	mustOK(t, call(t, f.admin, proto.APISiteAdd, s, nil))
	return proto.NameRequest{V: proto.Version, Name: s.Name}
}

func tableImage(name string) proto.Image {
	sha := func(c byte) string { return strings.Repeat(string(c), 64) }
	return proto.Image{V: proto.Version, Name: name, Artifacts: []proto.Artifact{
		{Role: proto.RoleKernel, Name: "vmlinuz", Key: "sha256/" + sha('a'), Size: 10, SHA256: sha('a')},
		{Role: proto.RoleInitrd, Name: "initrd.img", Key: "sha256/" + sha('b'), Size: 20, SHA256: sha('b')},
	}}
}

func newImage(_ *testing.T, f *roleFixture) any { return tableImage(f.freshName("rtimg")) }

func imageToRemove(t *testing.T, f *roleFixture) any {
	im := tableImage(f.freshName("rtimg"))
	mustOK(t, call(t, f.admin, proto.APIImageAdd, im, nil))
	return proto.NameRequest{V: proto.Version, Name: im.Name}
}

func tableLoader(name string) proto.Loader {
	sha := func(c byte) string { return strings.Repeat(string(c), 64) }
	return proto.Loader{V: proto.Version, Name: name, Kind: proto.LoaderIPXE, Files: []proto.LoaderFile{
		{Firmware: proto.FirmwareBIOS, Artifact: proto.Artifact{Role: proto.RoleIPXE, Name: "undionly.kpxe", Key: "sha256/" + sha('c'), Size: 10, SHA256: sha('c')}},
	}}
}

func newLoader(_ *testing.T, f *roleFixture) any { return tableLoader(f.freshName("rtldr")) }

// imageToRollBack is a fresh image with two revisions.
func imageToRollBack(t *testing.T, f *roleFixture) any {
	im := tableImage(f.freshName("rtimg"))
	mustOK(t, call(t, f.admin, proto.APIImageAdd, im, nil))
	im.Cmdline = "console=ttyS0"
	mustOK(t, call(t, f.admin, proto.APIImageAdd, im, nil))
	return proto.NameRequest{V: proto.Version, Name: im.Name}
}

func loaderToRemove(t *testing.T, f *roleFixture) any {
	l := tableLoader(f.freshName("rtldr"))
	mustOK(t, call(t, f.admin, proto.APILoaderAdd, l, nil))
	return proto.NameRequest{V: proto.Version, Name: l.Name}
}

func newHost(site string) func(*testing.T, *roleFixture) any {
	return func(_ *testing.T, f *roleFixture) any {
		return proto.HostSetRequest{V: proto.Version, MAC: f.freshMAC(), Site: &site}
	}
}

// existingHost makes a fresh host at site, as the admin.
func (f *roleFixture) existingHost(t *testing.T, site string) string {
	t.Helper()
	mac := f.freshMAC()
	mustOK(t, call(t, f.admin, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: mac, Site: &site}, nil))
	return mac
}

func renameHost(site string) func(*testing.T, *roleFixture) any {
	return func(t *testing.T, f *roleFixture) any {
		name := f.freshName("rthost")
		return proto.HostSetRequest{V: proto.Version, MAC: f.existingHost(t, site), Hostname: &name}
	}
}

func moveHost(from, to string) func(*testing.T, *roleFixture) any {
	return func(t *testing.T, f *roleFixture) any {
		return proto.HostSetRequest{V: proto.Version, MAC: f.existingHost(t, from), Site: &to}
	}
}

func hostToRemove(site string) func(*testing.T, *roleFixture) any {
	return func(t *testing.T, f *roleFixture) any {
		return proto.MACRequest{V: proto.Version, MAC: f.existingHost(t, site)}
	}
}

// discoveryReport is the discovery system's report of a machine nobody
// knows, at site lab, which discovers (made so first, by the admin).
func discoveryReport(t *testing.T, f *roleFixture) any {
	lab := proto.Site{V: proto.Version, Name: ownSite, Networks: []proto.Network{{Subnet: "10.0.0.0/24"}},
		Unknown: proto.UnknownDiscover, DiscoveryImage: seedImage}
	mustOK(t, call(t, f.admin, proto.APISiteAdd, lab, nil))
	return proto.FactsRequest{V: proto.Version, MAC: f.freshMAC(), Site: ownSite, Facts: json.RawMessage(`{"v":1,"cpus":2}`)}
}

// importAt is an import of one new host at site.
func importAt(site string) func(*testing.T, *roleFixture) any {
	return func(_ *testing.T, f *roleFixture) any {
		return proto.HostImportRequest{V: proto.Version, Rows: []proto.ImportRow{{Line: 2, MAC: f.freshMAC(), Site: site}}}
	}
}

// bulkSetAt gives every host of site with a label nobody has the seed image.
func bulkSetAt(site string) func(*testing.T, *roleFixture) any {
	return func(*testing.T, *roleFixture) any {
		return proto.HostBulkSetRequest{V: proto.Version, Selector: "labels.rack=rt-none", Site: site, Image: seedImage}
	}
}

// newRollout is a rollout of a fresh host of site (made first, by the
// admin), picked by its fresh host name.
func newRollout(site string) func(*testing.T, *roleFixture) any {
	return func(t *testing.T, f *roleFixture) any {
		name := f.freshName("rthost")
		mustOK(t, call(t, f.admin, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: f.freshMAC(), Site: &site, Hostname: &name}, nil))
		return proto.RolloutSpec{V: proto.Version, Name: f.freshName("rtroll"), Selector: "hostname=" + name, Image: seedImage,
			Batch: "1", BootTimeout: 600}
	}
}

// existingRollout starts a rollout at site as the admin (then, if then is
// an endpoint, calls it on the rollout as the admin) and names it.
func existingRollout(site, then string) func(*testing.T, *roleFixture) any {
	return func(t *testing.T, f *roleFixture) any {
		spec := newRollout(site)(t, f).(proto.RolloutSpec)
		mustOK(t, call(t, f.admin, proto.APIRolloutStart, spec, nil))
		req := proto.NameRequest{V: proto.Version, Name: spec.Name}
		if then != "" {
			mustOK(t, call(t, f.admin, then, req, nil))
		}
		return req
	}
}

func tablePolicy(name string) proto.Policy {
	return proto.Policy{V: proto.Version, Name: name, Match: "labels.rack=rt-none", Image: seedImage}
}

func newPolicy(_ *testing.T, f *roleFixture) any { return tablePolicy(f.freshName("rtpol")) }

// existingPolicy makes a fresh policy, as the admin, and names it.
func existingPolicy(t *testing.T, f *roleFixture) any {
	p := tablePolicy(f.freshName("rtpol"))
	mustOK(t, call(t, f.admin, proto.APIPolicyAdd, p, nil))
	return proto.NameRequest{V: proto.Version, Name: p.Name}
}

func policyToDisable(t *testing.T, f *roleFixture) any {
	n := existingPolicy(t, f).(proto.NameRequest)
	return proto.PolicyEnableRequest{V: proto.Version, Name: n.Name, Disabled: true}
}

func tableTemplate(name string) proto.Template {
	return proto.Template{V: proto.Version, Name: name, Kind: "script", Text: "#!/bin/sh\necho {{.MAC}}\n"}
}

func newTemplate(_ *testing.T, f *roleFixture) any { return tableTemplate(f.freshName("rttpl")) }

func existingTemplate(t *testing.T, f *roleFixture) any {
	tp := tableTemplate(f.freshName("rttpl"))
	mustOK(t, call(t, f.admin, proto.APITemplateAdd, tp, nil))
	return proto.NameRequest{V: proto.Version, Name: tp.Name}
}

func newEdge(site string) func(*testing.T, *roleFixture) any {
	return func(t *testing.T, f *roleFixture) any {
		pub, _, err := auth.NewUserKey()
		if err != nil {
			t.Fatal(err)
		}
		return auth.EnrolRequest{V: proto.Version, Name: f.freshName("rtedge"), Site: site, Role: auth.RoleEdge, PublicKey: pub}
	}
}

func edgeToRevoke(site string) func(*testing.T, *roleFixture) any {
	return func(t *testing.T, f *roleFixture) any {
		name := f.freshName("rtedge")
		enrol(t, f.admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: name, Site: site})
		return proto.NameRequest{V: proto.Version, Name: name}
	}
}

func newUser(role auth.Role) func(*testing.T, *roleFixture) any {
	return func(t *testing.T, f *roleFixture) any {
		pub, _, err := auth.NewUserKey()
		if err != nil {
			t.Fatal(err)
		}
		return auth.EnrolRequest{V: proto.Version, Name: f.freshName("rtuser"), Role: role, PublicKey: pub}
	}
}

func newSiteAdmin(site string) func(*testing.T, *roleFixture) any {
	return func(t *testing.T, f *roleFixture) any {
		pub, _, err := auth.NewUserKey()
		if err != nil {
			t.Fatal(err)
		}
		return auth.EnrolRequest{V: proto.Version, Name: f.freshName("rtsa"), Role: auth.RoleSiteAdmin, Site: site, PublicKey: pub}
	}
}

func userToRevoke(t *testing.T, f *roleFixture) any {
	name := f.freshName("rtuser")
	enrol(t, f.admin, auth.APIUserAdd, auth.EnrolRequest{Name: name, Role: auth.RoleViewer})
	return proto.NameRequest{V: proto.Version, Name: name}
}
