package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/coordinator/audit"
	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/coordinator/eventlog"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

const (
	aMAC    = "52:54:00:00:0a:01" // a host of site a
	aNewMAC = "52:54:00:00:0a:02" // made and removed by the site admin
	bMAC    = "52:54:00:00:0b:01" // a host of site b
)

// seedAB adds sites a and b with one host each, as the admin, and enrols
// sam, site admin of a.
func (e *env) seedAB(t *testing.T) (admin *nats.Conn, samCreds string) {
	t.Helper()
	admin, _ = e.connect(t, filepath.Join(e.data, "admin.creds"))
	for _, s := range []proto.Site{
		{V: proto.Version, Name: "a", Networks: []proto.Network{{Subnet: "10.0.0.0/24"}}},
		{V: proto.Version, Name: "b", Networks: []proto.Network{{Subnet: "10.1.0.0/24"}}},
	} {
		mustOK(t, call(t, admin, proto.APISiteAdd, s, nil))
	}
	for _, h := range []struct{ mac, site string }{{aMAC, "a"}, {bMAC, "b"}} {
		mustOK(t, call(t, admin, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: h.mac, Site: &h.site}, nil))
	}
	return admin, enrol(t, admin, auth.APIUserAdd, auth.EnrolRequest{Name: "sam", Role: auth.RoleSiteAdmin, Site: "a"})
}

// TestSiteAdminAPI: a site admin of a changes a's hosts and config, and
// every other change or read of another site is refused by the guard with
// a clear line and an audit record, exactly as a viewer's refusal is.
func TestSiteAdminAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("short: starts a coordinator")
	}
	e := start(t)
	admin, samCreds := e.seedAB(t)
	sam, samErrs := e.connect(t, samCreds)
	str := func(s string) *string { return &s }
	const (
		notHost = "permission denied: site-admin sam (site a) may see and change only hosts of site a; "
		notSite = "permission denied: site-admin sam (site a) may see and change only site a, not "
		notMay  = "permission denied: site-admin sam (site a) may not "
	)
	cases := []struct {
		name     string
		endpoint string
		req      any
		refused  string // "" when allowed
	}{
		{"own host set", proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: aMAC, Hostname: str("web1")}, ""},
		{"own host get", proto.APIHostGet, proto.MACRequest{V: proto.Version, MAC: aMAC}, ""},
		{"new host at her site", proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: aNewMAC, Site: str("a")}, ""},
		{"own host rm", proto.APIHostRm, proto.MACRequest{V: proto.Version, MAC: aNewMAC}, ""},
		{"other site's host set", proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: bMAC, Hostname: str("evil")}, notHost + bMAC + " is not one"},
		{"other site's host get", proto.APIHostGet, proto.MACRequest{V: proto.Version, MAC: bMAC}, notHost + bMAC + " is not one"},
		{"other site's host rm", proto.APIHostRm, proto.MACRequest{V: proto.Version, MAC: bMAC}, notHost + bMAC + " is not one"},
		{"move a host from b to a", proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: bMAC, Site: str("a")}, notHost + bMAC + " is not one"},
		{"take b's host's MAC as an extra one", proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: aMAC, ExtraMACs: &[]string{bMAC}}, notHost + bMAC + " is not one"},
		{"move own host to b", proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: aMAC, Site: str("b")}, notSite + `"b"`},
		{"site.add a", proto.APISiteAdd, proto.Site{V: proto.Version, Name: "a", Networks: []proto.Network{{Subnet: "10.0.0.0/23"}}}, ""},
		{"site.add b", proto.APISiteAdd, proto.Site{V: proto.Version, Name: "b", Networks: []proto.Network{{Subnet: "10.9.0.0/24"}}}, notSite + `"b"`},
		{"site.get b", proto.APISiteGet, proto.NameRequest{V: proto.Version, Name: "b"}, notSite + `"b"`},
		{"site.rm a", proto.APISiteRm, proto.NameRequest{V: proto.Version, Name: "a"}, notMay + "site.rm (ask an admin)"},
		{"image.add", proto.APIImageAdd, proto.Image{V: proto.Version, Name: "evil"}, notMay + "image.add (ask an admin)"},
		{"image.list", proto.APIImageList, proto.ListRequest{V: proto.Version}, ""},
		{"edge.add at her site", auth.APIEdgeAdd, auth.EnrolRequest{V: proto.Version, Name: "e9", Site: "a", PublicKey: "U"}, notMay + "edge.add (ask an admin)"},
		{"user.add", auth.APIUserAdd, auth.EnrolRequest{V: proto.Version, Name: "eve", Role: auth.RoleAdmin, PublicKey: "U"}, notMay + "user.add (ask an admin)"},
		{"user.revoke", auth.APIUserRevoke, proto.NameRequest{V: proto.Version, Name: "admin"}, notMay + "user.revoke (ask an admin)"},
		{"host.list b", proto.APIHostList, proto.ListRequest{V: proto.Version, Site: "b"}, notSite + `"b"`},
		{"forged identity header", proto.APISiteRm, proto.NameRequest{V: proto.Version, Name: "b"}, notMay + "site.rm (ask an admin)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var hdr nats.Header
			if c.name == "forged identity header" {
				hdr = nats.Header{auth.HeaderRequestInfo: []string{`{"acc":"x","user":"y","tags":["role:admin"]}`}}
			}
			rep := call(t, sam, c.endpoint, c.req, hdr)
			if diff := cmp.Diff(c.refused, rep.Error); diff != "" {
				t.Fatalf("answer (-want +got):\n%s", diff)
			}
		})
	}
	if errs := samErrs.all(); len(errs) > 0 {
		t.Fatalf("API calls hit NATS permission errors: %q", errs)
	}

	// Listings show her site only; the admin's show both.
	t.Run("listings", func(t *testing.T) {
		for _, c := range []struct {
			nc        *nats.Conn
			endpoint  string
			sites     func(json.RawMessage) []string
			want      []string
			wantAdmin bool
		}{
			{sam, proto.APIHostList, hostSites, []string{"a"}, false},
			{admin, proto.APIHostList, hostSites, []string{"a", "b"}, true},
			{sam, proto.APISiteList, siteNames, []string{"a"}, false},
			{admin, proto.APISiteList, siteNames, []string{"a", "b"}, true},
		} {
			rep := call(t, c.nc, c.endpoint, proto.ListRequest{V: proto.Version}, nil)
			mustOK(t, rep)
			if diff := cmp.Diff(c.want, c.sites(rep.Data)); diff != "" {
				t.Errorf("%s as admin=%v: sites (-want +got):\n%s", c.endpoint, c.wantAdmin, diff)
			}
		}
	})
	t.Run("edge listing", func(t *testing.T) {
		// One heartbeat from an edge of each site.
		for _, ed := range []struct{ name, site string }{{"ea", "a"}, {"eb", "b"}} {
			creds := enrol(t, admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: ed.name, Site: ed.site})
			nc, _ := e.connect(t, creds)
			if err := nc.Publish(proto.StatusSubject(ed.site, ed.name), []byte(`{"v":1}`)); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		edgeSites := func(nc *nats.Conn) []string {
			rep := call(t, nc, proto.APIEdgeList, proto.ListRequest{V: proto.Version}, nil)
			mustOK(t, rep)
			var edges []proto.EdgeView
			if err := json.Unmarshal(rep.Data, &edges); err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, ed := range edges {
				out = append(out, ed.Site)
			}
			slices.Sort(out)
			return out
		}
		waitfor.True(t, "both heartbeats recorded", func() bool { return slices.Equal(edgeSites(admin), []string{"a", "b"}) })
		if diff := cmp.Diff([]string{"a"}, edgeSites(sam)); diff != "" {
			t.Errorf("sam's edge list (-want +got):\n%s", diff)
		}
	})

	// Nothing refused was written.
	var h proto.Host
	rep := call(t, admin, proto.APIHostGet, proto.MACRequest{V: proto.Version, MAC: bMAC}, nil)
	mustOK(t, rep)
	if err := json.Unmarshal(rep.Data, &h); err != nil || h.Site != "b" || h.Hostname != "" {
		t.Fatalf("b's host after the refusals: %+v %v", h, err)
	}
	var b proto.Site
	rep = call(t, admin, proto.APISiteGet, proto.NameRequest{V: proto.Version, Name: "b"}, nil)
	mustOK(t, rep)
	if err := json.Unmarshal(rep.Data, &b); err != nil || b.Networks[0].Subnet != "10.1.0.0/24" {
		t.Fatalf("site b after the refusals: %+v %v", b, err)
	}

	// The audit log has every change she made and every refusal, reads
	// included, with her role and site; her allowed reads are not in it.
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := audit.Read(context.Background(), js, time.Now().Add(-time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ Who, Role, Site, Action, Outcome string }
	var got []row
	for _, r := range recs {
		if r.Who != "sam" {
			continue
		}
		got = append(got, row{r.Who, r.Role, r.Site, r.Action, r.Outcome})
		if r.Time.IsZero() || (r.Outcome == audit.Refused && r.Error == "") || r.Key == "" {
			t.Errorf("incomplete record %+v", r)
		}
	}
	var want []row
	for _, c := range cases {
		outcome := audit.Accepted
		if c.refused != "" {
			outcome = audit.Refused
		} else if auth.IsRead(c.endpoint) {
			continue
		}
		want = append(want, row{"sam", "site-admin", "a", c.endpoint, outcome})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("audit (-want +got):\n%s", diff)
	}
}

func hostSites(data json.RawMessage) []string {
	var hosts []proto.Host
	_ = json.Unmarshal(data, &hosts)
	var out []string
	for _, h := range hosts {
		if !slices.Contains(out, h.Site) {
			out = append(out, h.Site)
		}
	}
	slices.Sort(out)
	return out
}

func siteNames(data json.RawMessage) []string {
	var sites []proto.Site
	_ = json.Unmarshal(data, &sites)
	var out []string
	for _, s := range sites {
		out = append(out, s.Name)
	}
	slices.Sort(out)
	return out
}

// TestSiteAdminNATS: the server itself confines a site admin of a to what
// carries a in its subject: her site's config and hosts in KV, its events
// and heartbeats. Reading b's keys or events is a permission violation.
func TestSiteAdminNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("short: starts a coordinator")
	}
	e := start(t)
	admin, samCreds := e.seedAB(t)
	sam, ae := e.connect(t, samCreds)
	js, err := jetstream.New(sam)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, time.Second) }
	bucket := func(name string) jetstream.KeyValue {
		kv, err := js.KeyValue(ctx, name)
		if err != nil {
			t.Fatalf("open %s: %v", name, err)
		}
		return kv
	}
	hosts, sites, images := bucket(proto.BucketHosts), bucket(proto.BucketSites), bucket(proto.BucketImages)

	// Edges of a and b each send one event; sam subscribes to both sites.
	live := make(chan *nats.Msg, 4)
	if _, err := sam.ChanSubscribe(proto.SubjectEventsPrefix+".a.>", live); err != nil {
		t.Fatal(err)
	}
	if _, err := sam.Subscribe(proto.SubjectEventsPrefix+".b.>", func(*nats.Msg) { t.Error("received an event of site b") }); err != nil {
		t.Fatal(err)
	}
	ae.wait(t, "permissions violation for subscription", proto.SubjectEventsPrefix+".b.>")
	if err := sam.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, ed := range []struct{ name, site, mac string }{{"ea", "a", aMAC}, {"eb", "b", bMAC}} {
		creds := enrol(t, admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: ed.name, Site: ed.site})
		nc, _ := e.connect(t, creds)
		ev, _ := json.Marshal(proto.Event{V: proto.Version, Site: ed.site, Edge: ed.name, MAC: ed.mac, Kind: proto.EventDHCPDiscover, Time: time.Now()})
		if err := nc.Publish(proto.EventSubject(ed.site, ed.name, ed.mac), ev); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	allowed := []struct {
		name string
		do   func(t *testing.T, ctx context.Context) error
	}{
		{"get a's host", func(t *testing.T, ctx context.Context) error {
			_, err := hosts.Get(ctx, hostKey(t, "a", aMAC))
			return err
		}},
		{"get a's config", func(t *testing.T, ctx context.Context) error { _, err := sites.Get(ctx, "a"); return err }},
		{"get an image (none there)", func(t *testing.T, ctx context.Context) error {
			if _, err := images.Get(ctx, "x"); !errors.Is(err, jetstream.ErrKeyNotFound) {
				return err
			}
			return nil
		}},
		{"watch a's hosts", func(t *testing.T, ctx context.Context) error {
			w, err := hosts.Watch(ctx, "a.>")
			if err != nil {
				return err
			}
			defer w.Stop()
			if u := <-w.Updates(); u == nil || u.Key() != hostKey(t, "a", aMAC) {
				return errors.New("no entry of a's host")
			}
			return nil
		}},
		{"live event of a", func(t *testing.T, ctx context.Context) error {
			select {
			case m := <-live:
				if site, _, _, _ := proto.ParseEventSubject(m.Subject); site != "a" {
					return errors.New("event of " + m.Subject)
				}
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}},
		{"stored events of a", func(t *testing.T, ctx context.Context) error {
			st, err := js.Stream(ctx, proto.StreamEvents)
			if err != nil {
				return err
			}
			subjects, err := eventlog.Subjects("a", "", nil)
			if err != nil {
				return err
			}
			var got []string
			waitfor.OK(t, "a's event stored and read", func() error {
				got = nil
				if err := eventlog.Read(ctx, st, eventlog.Query{Subjects: subjects}, nil, func(ev proto.Event) error {
					got = append(got, ev.Site+"/"+ev.Edge)
					return nil
				}); err != nil {
					return err
				}
				if len(got) == 0 {
					return errors.New("no event yet")
				}
				return nil
			})
			if !slices.Equal(got, []string{"a/ea"}) {
				return fmt.Errorf("read events %q, want only a/ea", got)
			}
			return nil
		}},
	}
	for _, c := range allowed {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := c.do(t, ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
	if errs := ae.all(); len(errs) != 1 {
		t.Fatalf("allowed reads hit permission errors: %q", errs)
	}

	bKey := hostKey(t, "b", bMAC)
	refused := []struct {
		name    string
		do      func(ctx context.Context) error // the attempt; must fail
		subject string                          // the server's permission error names it
	}{
		{"get b's host", func(ctx context.Context) error { _, err := hosts.Get(ctx, bKey); return err },
			"$JS.API.DIRECT.GET.KV_hosts.$KV.hosts." + bKey},
		{"get b's config", func(ctx context.Context) error { _, err := sites.Get(ctx, "b"); return err },
			"$JS.API.DIRECT.GET.KV_sites.$KV.sites.b"},
		{"watch b's hosts", func(ctx context.Context) error {
			w, err := hosts.Watch(ctx, "b.>")
			if err == nil {
				w.Stop()
			}
			return err
		}, "$JS.API.CONSUMER.CREATE.KV_hosts."},
		{"put a's host", func(ctx context.Context) error {
			_, err := hosts.Put(ctx, hostKey(t, "a", aMAC), []byte(`{}`))
			return err
		}, "$KV.hosts." + hostKey(t, "a", aMAC)},
		{"read b's events", func(ctx context.Context) error {
			st, err := js.Stream(ctx, proto.StreamEvents)
			if err != nil {
				return err
			}
			subjects, _ := eventlog.Subjects("b", "", nil)
			return eventlog.Read(ctx, st, eventlog.Query{Subjects: subjects}, nil, func(proto.Event) error { return nil })
		}, "$JS.API.CONSUMER.CREATE.EVENTS."},
		{"read the audit log", func(ctx context.Context) error {
			_, err := audit.Read(ctx, js, time.Now().Add(-time.Hour), 0)
			return err
		}, "$JS.API.STREAM.INFO." + proto.StreamAudit},
		{"open the MAC index", func(ctx context.Context) error {
			_, err := js.KeyValue(ctx, proto.BucketMACs)
			return err
		}, "$JS.API.STREAM.INFO.KV_" + proto.BucketMACs},
		{"message get by sequence", func(ctx context.Context) error {
			_, err := sam.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_hosts", []byte(`{"seq":1}`))
			return err
		}, "$JS.API.STREAM.MSG.GET.KV_hosts"},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := short()
			defer cancel()
			if err := c.do(ctx); err == nil {
				t.Fatal("allowed")
			}
			ae.wait(t, "permissions violation", c.subject)
		})
	}
	t.Run("events consumer with b's filter in the body", func(t *testing.T) {
		ctx, cancel := short()
		defer cancel()
		inbox := sam.NewInbox()
		body := `{"stream_name":"EVENTS","config":{"name":"x1","filter_subject":"fleetboot.events.b.>","deliver_subject":"` + inbox + `","ack_policy":"none"}}`
		msg, err := sam.RequestWithContext(ctx, "$JS.API.CONSUMER.CREATE.EVENTS.x1.fleetboot.events.a.>", []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		var rep struct {
			Error *struct{ Description string } `json:"error"`
		}
		if err := json.Unmarshal(msg.Data, &rep); err != nil || rep.Error == nil {
			t.Fatalf("consumer created: %s", msg.Data)
		}
	})
	t.Run("subscribe to b's heartbeats", func(t *testing.T) {
		if _, err := sam.Subscribe(proto.StatusSubject("b", "eb"), func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		ae.wait(t, "permissions violation for subscription", proto.StatusSubject("b", "eb"))
	})
	t.Run("subscribe to the shared inboxes", func(t *testing.T) {
		if _, err := sam.Subscribe("_INBOX.>", func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		ae.wait(t, "permissions violation for subscription", "_INBOX.>")
	})
}
