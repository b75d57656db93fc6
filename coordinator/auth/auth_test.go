package auth_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetboot/fleetboot/coordinator"
	"github.com/fleetboot/fleetboot/coordinator/audit"
	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/coordinator/eventlog"
	"github.com/fleetboot/fleetboot/edge"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/pki"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// syncBuf collects log output written from many goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is a coordinator run exactly as `fleetboot coordinator --auth
// --tls-cert … --tls-key … --tls-ca …` runs it, with the embedded server.
type env struct {
	url, data, ca, pkiDir string
	logs                  *syncBuf
	auditMax              int64                // AUDIT byte limit; 0: the contract's
	metrics               *prometheus.Registry // nil: the coordinator's own
	registry              *prometheus.Registry // the running coordinator's metrics
	cluster               *natsCluster         // nil: the embedded server
}

func start(t *testing.T) *env {
	t.Helper()
	e := &env{data: t.TempDir(), pkiDir: t.TempDir()}
	if _, err := pki.Init(e.pkiDir, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	e.run(t)
	return e
}

// run starts the coordinator on e's data and certificates; it stops when
// the returned function is called or the test ends.
func (e *env) run(t *testing.T) (stop func()) {
	t.Helper()
	e.logs = &syncBuf{}
	e.ca = filepath.Join(e.pkiDir, pki.CAFile)
	e.registry = e.metrics
	if e.registry == nil {
		e.registry = prometheus.NewRegistry() // each run its own: a restart registers again
	}
	cfg := e.coordinatorConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	cfg.Ready = func(u string) { ready <- u }
	go func() { done <- coordinator.Run(ctx, cfg) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("coordinator: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case e.url = <-ready:
	case err := <-done:
		done <- nil // for stop, which waits for Run to return
		t.Fatalf("coordinator did not start: %v\nits log:\n%s", err, e.logs.String())
	case <-time.After(90 * time.Second): // a 3-node JetStream cluster on a loaded 2-core machine
		t.Fatalf("coordinator not ready after 90s; its log:\n%s", e.logs.String())
	}
	if e.cluster != nil {
		e.url = e.cluster.clientURL()
	}
	return stop
}

// coordinatorConfig is the coordinator's configuration on e's backend.
func (e *env) coordinatorConfig(t *testing.T) coordinator.Config {
	t.Helper()
	cfg := coordinator.Config{
		DataDir: e.data, Auth: true, Version: "test",
		AuditMaxBytes: e.auditMax, Metrics: e.registry,
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if e.cluster != nil {
		e.cluster.configure(&cfg, e.ca)
		return cfg
	}
	tlsCfg, err := pki.ServerTLS(filepath.Join(e.pkiDir, pki.CertFile), filepath.Join(e.pkiDir, pki.KeyFile), e.ca)
	if err != nil {
		t.Fatal(err)
	}
	cfg.NATSListen, cfg.TLS = "127.0.0.1:0", tlsCfg
	return cfg
}

// asyncErrs records a connection's asynchronous errors (permission
// violations arrive that way).
type asyncErrs struct {
	mu   sync.Mutex
	errs []string
	ch   chan struct{}
}

func (a *asyncErrs) add(err error) {
	a.mu.Lock()
	a.errs = append(a.errs, err.Error())
	a.mu.Unlock()
	select {
	case a.ch <- struct{}{}:
	default:
	}
}

func (a *asyncErrs) all() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.errs...)
}

// wait returns once an error containing every part arrived.
func (a *asyncErrs) wait(t *testing.T, parts ...string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		for _, e := range a.all() {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(strings.ToLower(e), strings.ToLower(p))
			}
			if ok {
				return
			}
		}
		select {
		case <-a.ch:
		case <-deadline:
			t.Fatalf("no asynchronous error with %q; got %q", parts, a.all())
		}
	}
}

func (e *env) options(creds string) ([]nats.Option, *asyncErrs) {
	ae := &asyncErrs{ch: make(chan struct{}, 1)}
	opts := []nats.Option{
		nats.RootCAs(e.ca), nats.Timeout(5 * time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { ae.add(err) }),
	}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
		if p, err := auth.InboxPrefix(creds); err == nil && p != "" {
			opts = append(opts, nats.CustomInboxPrefix(p))
		}
	}
	return opts, ae
}

func (e *env) connect(t *testing.T, creds string, extra ...nats.Option) (*nats.Conn, *asyncErrs) {
	t.Helper()
	opts, ae := e.options(creds)
	nc, err := nats.Connect(e.url, append(opts, extra...)...)
	if err != nil {
		t.Fatalf("connect with %s: %v", filepath.Base(creds), err)
	}
	t.Cleanup(nc.Close)
	return nc, ae
}

// call makes an API request and returns the reply envelope.
func call(t *testing.T, nc *nats.Conn, endpoint string, req any, hdr nats.Header) proto.Reply {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg, err := nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: proto.APISubject(endpoint), Data: body, Header: hdr})
	if err != nil {
		t.Fatalf("%s: %v", endpoint, err)
	}
	var rep proto.Reply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		t.Fatalf("%s: reply %q: %v", endpoint, msg.Data, err)
	}
	return rep
}

func mustOK(t *testing.T, rep proto.Reply) {
	t.Helper()
	if rep.Error != "" {
		t.Fatalf("refused: %s", rep.Error)
	}
}

// enrol makes a key pair here, has the coordinator sign it and writes the
// creds file, as `fleetboot edge add` / `user add` do.
func enrol(t *testing.T, admin *nats.Conn, endpoint string, req auth.EnrolRequest) string {
	t.Helper()
	pub, seed, err := auth.NewUserKey()
	if err != nil {
		t.Fatal(err)
	}
	req.V, req.PublicKey = proto.Version, pub
	rep := call(t, admin, endpoint, req, nil)
	mustOK(t, rep)
	var er auth.EnrolReply
	if err := json.Unmarshal(rep.Data, &er); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), req.Name+".creds")
	if err := auth.WriteCreds(path, er.JWT, seed); err != nil {
		t.Fatal(err)
	}
	return path
}

const (
	labMAC   = "52:54:00:00:00:01"
	otherMAC = "52:54:00:00:00:02"
)

// seed adds sites lab and other with one host each, as the admin.
func (e *env) seed(t *testing.T) *nats.Conn {
	t.Helper()
	admin, _ := e.connect(t, filepath.Join(e.data, "admin.creds"))
	for _, s := range []proto.Site{
		{V: proto.Version, Name: "lab", Networks: []proto.Network{{Subnet: "10.0.0.0/24"}}},
		{V: proto.Version, Name: "other", Networks: []proto.Network{{Subnet: "10.1.0.0/24"}}},
	} {
		mustOK(t, call(t, admin, proto.APISiteAdd, s, nil))
	}
	for mac, site := range map[string]string{labMAC: "lab", otherMAC: "other"} {
		mustOK(t, call(t, admin, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: mac, Site: &site}, nil))
	}
	return admin
}

func hostKey(t *testing.T, site, mac string) string {
	k, err := proto.HostKey(site, mac)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestEdgeConfinement runs a real edge agent with its credentials (it must
// sync its site, heartbeat and send events without a single permission
// error), then tries, with the same credentials, everything an edge must
// not do: each is refused by the server.
func TestEdgeConfinement(t *testing.T) { forEachBackend(t, testEdgeConfinement) }

func testEdgeConfinement(t *testing.T, start func(*testing.T) *env) {
	if testing.Short() {
		t.Skip("short: starts a coordinator and an edge")
	}
	e := start(t)
	admin := e.seed(t)
	creds := enrol(t, admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: "e1", Site: "lab"})
	if fi, err := os.Stat(creds); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("creds file mode: %v %v", fi.Mode(), err)
	}

	// The real edge, confined.
	opts, edgeErrs := e.options(creds)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	edgeLogs := &syncBuf{}
	go func() {
		done <- edge.Run(ctx, edge.Config{
			Name: "e1", Site: "lab", NATSURL: e.url, NATSOptions: opts,
			StateDir: t.TempDir(), CacheDir: t.TempDir(), CacheSize: 1 << 20,
			HTTPListen: "127.0.0.1:0", BootDir: t.TempDir(), EFIBootFile: "ipxe.efi",
			Heartbeat: 100 * time.Millisecond, Version: "test",
			Logger: slog.New(slog.NewTextHandler(edgeLogs, nil)), Ready: func(a edge.Addrs) { ready <- a.HTTP },
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge: %v", err)
		}
	}()
	var httpAddr string
	select {
	case httpAddr = <-ready:
	case err := <-done:
		t.Fatalf("edge did not start: %v", err)
	}
	// The coordinator sees its heartbeat with a synced revision.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var edges []proto.EdgeView
		rep := call(t, admin, proto.APIEdgeList, proto.ListRequest{V: proto.Version}, nil)
		mustOK(t, rep)
		_ = json.Unmarshal(rep.Data, &edges)
		if len(edges) == 1 && edges[0].Name == "e1" && edges[0].Revision > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no synced heartbeat from e1: %+v\nedge log:\n%s", edges, edgeLogs.String())
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not a readiness wait
	}
	// A script request makes the edge publish events into the EVENTS stream.
	resp, err := http.Get("http://" + httpAddr + "/boot.ipxe?mac=" + labMAC)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	for {
		st, err := js.Stream(context.Background(), proto.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(proto.SubjectEventsPrefix+".lab.e1.>"))
		if err != nil {
			t.Fatal(err)
		}
		if len(info.State.Subjects) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no events from e1 in the stream\nedge log:\n%s", edgeLogs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if errs := edgeErrs.all(); len(errs) > 0 {
		t.Fatalf("the edge hit permission errors doing its job: %q", errs)
	}

	// Now the same credentials, misused.
	nc, ae := e.connect(t, creds)
	ejs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := ejs.KeyValue(context.Background(), proto.BucketHosts)
	if err != nil {
		t.Fatalf("open hosts bucket: %v", err)
	}
	short := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), time.Second)
	}
	// Its own site's key is readable.
	{
		ctx, cancel := short()
		if _, err := kv.Get(ctx, hostKey(t, "lab", labMAC)); err != nil {
			t.Fatalf("own host: %v", err)
		}
		cancel()
	}
	imgs, err := ejs.KeyValue(context.Background(), proto.BucketImages)
	if err != nil {
		t.Fatalf("open images bucket: %v", err)
	}
	sites, err := ejs.KeyValue(context.Background(), proto.BucketSites)
	if err != nil {
		t.Fatalf("open sites bucket: %v", err)
	}
	otherKey := hostKey(t, "other", otherMAC)
	cases := []struct {
		name    string
		do      func() error // the attempt; must fail
		subject string       // the server's permission error names it
	}{
		{"get other site's host", func() error {
			ctx, cancel := short()
			defer cancel()
			_, err := kv.Get(ctx, otherKey)
			return err
		}, "$JS.API.DIRECT.GET.KV_hosts.$KV.hosts." + otherKey},
		{"watch other site's hosts", func() error {
			ctx, cancel := short()
			defer cancel()
			w, err := kv.Watch(ctx, "other.>")
			if err == nil {
				w.Stop()
			}
			return err
		}, "$JS.API.CONSUMER.CREATE.KV_hosts."},
		{"watch all hosts", func() error {
			ctx, cancel := short()
			defer cancel()
			w, err := kv.WatchAll(ctx)
			if err == nil {
				w.Stop()
			}
			return err
		}, "$JS.API.CONSUMER.CREATE.KV_hosts."},
		{"get other site's config", func() error {
			ctx, cancel := short()
			defer cancel()
			_, err := sites.Get(ctx, "other")
			return err
		}, "$JS.API.DIRECT.GET.KV_sites.$KV.sites.other"},
		{"put own site's host", func() error {
			ctx, cancel := short()
			defer cancel()
			_, err := kv.Put(ctx, hostKey(t, "lab", labMAC), []byte(`{}`))
			return err
		}, "$KV.hosts." + hostKey(t, "lab", labMAC)},
		{"put an image", func() error {
			ctx, cancel := short()
			defer cancel()
			_, err := imgs.Put(ctx, "evil", []byte(`{}`))
			return err
		}, "$KV.images.evil"},
		{"delete own site's host", func() error {
			ctx, cancel := short()
			defer cancel()
			return kv.Delete(ctx, hostKey(t, "lab", labMAC))
		}, "$KV.hosts." + hostKey(t, "lab", labMAC)},
		{"message get by sequence", func() error {
			ctx, cancel := short()
			defer cancel()
			_, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_hosts", []byte(`{"seq":1}`))
			return err
		}, "$JS.API.STREAM.MSG.GET.KV_hosts"},
		{"delete the hosts stream", func() error {
			ctx, cancel := short()
			defer cancel()
			return ejs.DeleteStream(ctx, "KV_hosts")
		}, "$JS.API.STREAM.DELETE.KV_hosts"},
		{"host.set through the API", func() error {
			ctx, cancel := short()
			defer cancel()
			_, err := nc.RequestWithContext(ctx, proto.APISubject(proto.APIHostSet), []byte(`{"v":1,"mac":"`+labMAC+`"}`))
			return err
		}, proto.APISubject(proto.APIHostSet)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.do(); err == nil {
				t.Fatal("allowed")
			}
			ae.wait(t, "permissions violation", c.subject)
		})
	}

	// Publishing as another edge, or subscribing to the shared inboxes
	// (where other edges' KV replies go), is refused too.
	pubCases := []struct{ name, subject string }{
		{"heartbeat of another edge", proto.StatusSubject("lab", "e2")},
		{"heartbeat at another site", proto.StatusSubject("other", "e1")},
		{"event of another edge", proto.EventSubject("lab", "e2", labMAC)},
		{"event at another site", proto.EventSubject("other", "e1", otherMAC)},
		{"audit record", audit.SubjectPrefix + ".host.set"},
	}
	for _, c := range pubCases {
		t.Run(c.name, func(t *testing.T) {
			if err := nc.Publish(c.subject, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			ae.wait(t, "permissions violation for publish", c.subject)
		})
	}
	t.Run("subscribe to shared inboxes", func(t *testing.T) {
		if _, err := nc.Subscribe("_INBOX.>", func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		ae.wait(t, "permissions violation for subscription", "_INBOX.>")
	})

	// Hostile JetStream requests on allowed subjects: the body tries to
	// reach another site; the server refuses.
	t.Run("direct get with a sequence in the body", func(t *testing.T) {
		ctx, cancel := short()
		defer cancel()
		msg, err := nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_hosts.$KV.hosts."+hostKey(t, "lab", labMAC), []byte(`{"seq":1}`))
		if err != nil {
			t.Fatal(err)
		}
		if msg.Header.Get("Status") != "408" || strings.Contains(string(msg.Data), "other") {
			t.Fatalf("server answered %q %q", msg.Header, msg.Data)
		}
	})
	t.Run("consumer create with another filter in the body", func(t *testing.T) {
		ctx, cancel := short()
		defer cancel()
		body := `{"stream_name":"KV_hosts","config":{"name":"x1","filter_subject":"$KV.hosts.other.>","deliver_subject":"` + auth.EdgeInboxPrefix("e1") + `.x","ack_policy":"none"}}`
		msg, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.CREATE.KV_hosts.x1.$KV.hosts.lab.>", []byte(body))
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
}

// TestRolesAndAudit: a viewer's change is refused with a clear line and
// writes nothing, an admin's is accepted, a forged identity header does not
// help, and the audit stream records all of it with the identity.
func TestRolesAndAudit(t *testing.T) { forEachBackend(t, testRolesAndAudit) }

func testRolesAndAudit(t *testing.T, start func(*testing.T) *env) {
	if testing.Short() {
		t.Skip("short: starts a coordinator")
	}
	e := start(t)
	admin := e.seed(t)
	viewerCreds := enrol(t, admin, auth.APIUserAdd, auth.EnrolRequest{Name: "bob", Role: auth.RoleViewer})
	viewer, vErrs := e.connect(t, viewerCreds)
	edgeCreds := enrol(t, admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: "e1", Site: "lab"})
	edgeNC, _ := e.connect(t, edgeCreds)

	img := "x"
	refused := []struct {
		name     string
		nc       *nats.Conn
		endpoint string
		req      any
		hdr      nats.Header
		want     string
	}{
		{"viewer host set", viewer, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: labMAC, Hostname: &img}, nil,
			"permission denied: viewer bob is read-only and may not host.set (ask an admin)"},
		{"viewer forging the identity header", viewer, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: labMAC, Hostname: &img},
			nats.Header{auth.HeaderRequestInfo: []string{`{"acc":"x","user":"y","name_tag":"admin","tags":["role:admin"]}`}},
			"permission denied: viewer bob is read-only and may not host.set (ask an admin)"},
		{"viewer user add", viewer, auth.APIUserAdd, auth.EnrolRequest{V: proto.Version, Name: "eve", Role: auth.RoleAdmin, PublicKey: "U"}, nil,
			"permission denied: viewer bob is read-only and may not user.add (ask an admin)"},
		{"edge reports for another site's host", edgeNC, proto.APIHostDone, proto.MACRequest{V: proto.Version, MAC: otherMAC}, nil,
			"permission denied: edge e1 (site lab) may report only for machines of its own site"},
		// A person's credential is no relay for a boot network: its
		// refused callbacks are audited like any refused change.
		{"viewer reports an install done", viewer, proto.APIHostDone, proto.MACRequest{V: proto.Version, MAC: labMAC}, nil,
			"permission denied: viewer bob is read-only and may not host.done (ask an admin)"},
		{"viewer reports facts", viewer, proto.APIHostFacts, proto.FactsRequest{V: proto.Version, MAC: labMAC, Facts: json.RawMessage(`{}`)}, nil,
			"permission denied: viewer bob is read-only and may not host.facts (ask an admin)"},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			rep := call(t, c.nc, c.endpoint, c.req, c.hdr)
			if diff := cmp.Diff(c.want, rep.Error); diff != "" {
				t.Fatalf("refusal (-want +got):\n%s", diff)
			}
		})
	}
	// Nothing was written.
	var h proto.Host
	rep := call(t, viewer, proto.APIHostGet, proto.MACRequest{V: proto.Version, MAC: labMAC}, nil)
	mustOK(t, rep)
	if err := json.Unmarshal(rep.Data, &h); err != nil || h.Hostname != "" {
		t.Fatalf("viewer's change was written: %+v %v", h, err)
	}
	// A viewer may not write KV directly either.
	vjs, _ := jetstream.New(viewer)
	vkv, err := vjs.KeyValue(context.Background(), proto.BucketHosts)
	if err != nil {
		t.Fatalf("viewer opens hosts: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err = vkv.Put(ctx, hostKey(t, "lab", labMAC), []byte(`{}`))
	cancel()
	if err == nil {
		t.Fatal("viewer wrote KV")
	}
	vErrs.wait(t, "permissions violation for publish", "$KV.hosts.")

	// The admin's change is accepted.
	name := "web1"
	mustOK(t, call(t, admin, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: labMAC, Hostname: &name}, nil))

	js, _ := jetstream.New(viewer) // viewers may read the audit log
	recs, err := audit.Read(context.Background(), js, time.Now().Add(-time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ Who, Role, Action, Outcome string }
	var got []row
	for _, r := range recs {
		if r.Action == proto.APIHostSet || r.Action == auth.APIUserAdd || r.Action == proto.APIHostDone || r.Action == proto.APIHostFacts {
			got = append(got, row{r.Who, r.Role, r.Action, r.Outcome})
		}
		if r.Time.IsZero() || (r.Outcome == audit.Refused && r.Error == "") {
			t.Errorf("incomplete record %+v", r)
		}
	}
	want := []row{
		{"admin", "admin", proto.APIHostSet, audit.Accepted}, // seed
		{"admin", "admin", proto.APIHostSet, audit.Accepted}, // seed
		{"admin", "admin", auth.APIUserAdd, audit.Accepted},
		{"bob", "viewer", proto.APIHostSet, audit.Refused},
		{"bob", "viewer", proto.APIHostSet, audit.Refused},
		{"bob", "viewer", auth.APIUserAdd, audit.Refused},
		// The edge's refused callback is counted, not stored (see
		// TestAuditFullAndCallbackRefusals); the viewer's are stored.
		{"bob", "viewer", proto.APIHostDone, audit.Refused},
		{"bob", "viewer", proto.APIHostFacts, audit.Refused},
		{"admin", "admin", proto.APIHostSet, audit.Accepted},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("audit (-want +got):\n%s", diff)
	}
	last := recs[len(recs)-1]
	if !strings.Contains(string(last.Request), `"hostname":"web1"`) {
		t.Errorf("audit record lacks the request: %s", last.Request)
	}
}

// TestRevokedEdge: revoking an edge disconnects it and refuses it from then on.
func TestRevokedEdge(t *testing.T) { forEachBackend(t, testRevokedEdge) }

func testRevokedEdge(t *testing.T, start func(*testing.T) *env) {
	if testing.Short() {
		t.Skip("short: starts a coordinator")
	}
	e := start(t)
	admin := e.seed(t)
	creds := enrol(t, admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: "e1", Site: "lab"})
	closed := make(chan struct{})
	nc, _ := e.connect(t, creds, nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err := nc.Publish(proto.StatusSubject("lab", "e1"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	mustOK(t, call(t, admin, auth.APIEdgeRevoke, proto.NameRequest{V: proto.Version, Name: "e1"}, nil))
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("revoked edge still connected")
	}
	opts, _ := e.options(creds)
	if nc2, err := nats.Connect(e.url, opts...); err == nil {
		nc2.Close()
		t.Fatal("revoked edge reconnected")
	} else if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("reconnect error: %v", err)
	}
	// Revoking twice says so.
	rep := call(t, admin, auth.APIEdgeRevoke, proto.NameRequest{V: proto.Version, Name: "e1"}, nil)
	if rep.Error != `edge "e1": not found (never enrolled, or revoked already)` {
		t.Fatalf("second revoke: %q", rep.Error)
	}
	// The same name can be enrolled again with a new key.
	creds2 := enrol(t, admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: "e1", Site: "lab"})
	e.connect(t, creds2)
}

// TestRestartKeepsIdentities: after a restart on the same data, the admin's
// and a viewer's credentials still work, a revoked edge stays refused, and
// admin.creds is not rewritten.
func TestRestartKeepsIdentities(t *testing.T) {
	if testing.Short() {
		t.Skip("short: starts a coordinator twice")
	}
	e := &env{data: t.TempDir(), pkiDir: t.TempDir()}
	if _, err := pki.Init(e.pkiDir, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	stop := e.run(t)
	admin := e.seed(t)
	viewerCreds := enrol(t, admin, auth.APIUserAdd, auth.EnrolRequest{Name: "bob", Role: auth.RoleViewer})
	edgeCreds := enrol(t, admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: "e1", Site: "lab"})
	mustOK(t, call(t, admin, auth.APIEdgeRevoke, proto.NameRequest{V: proto.Version, Name: "e1"}, nil))
	adminCreds := filepath.Join(e.data, "admin.creds")
	before, err := os.ReadFile(adminCreds)
	if err != nil {
		t.Fatal(err)
	}
	admin.Close()
	stop()

	e.run(t)
	after, err := os.ReadFile(adminCreds)
	if err != nil || !bytes.Equal(before, after) {
		t.Fatalf("admin.creds rewritten on restart (%v)", err)
	}
	admin2, _ := e.connect(t, adminCreds)
	mustOK(t, call(t, admin2, proto.APISiteList, proto.ListRequest{V: proto.Version}, nil))
	viewer, _ := e.connect(t, viewerCreds)
	if rep := call(t, viewer, proto.APISiteRm, proto.NameRequest{V: proto.Version, Name: "lab"}, nil); !strings.HasPrefix(rep.Error, "permission denied: viewer bob") {
		t.Fatalf("viewer after restart: %q", rep.Error)
	}
	opts, _ := e.options(edgeCreds)
	if nc, err := nats.Connect(e.url, opts...); err == nil {
		nc.Close()
		t.Fatal("revoked edge connected after a restart")
	}
}

// TestTLSRequired: with TLS on, plaintext clients and clients trusting
// another CA are refused; nothing secret reaches the logs.
func TestTLSRequired(t *testing.T) {
	if testing.Short() {
		t.Skip("short: starts a coordinator")
	}
	e := start(t)
	adminCreds := filepath.Join(e.data, "admin.creds")
	// A plaintext client (nats.go would upgrade by itself, so speak the
	// protocol by hand) is told TLS is required and dropped.
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(e.url, "tls://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	rd := bufio.NewReader(conn)
	info, err := rd.ReadString('\n')
	if err != nil || !strings.Contains(info, `"tls_required":true`) {
		t.Fatalf("INFO %q %v", info, err)
	}
	if _, err := conn.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	// The server takes the plaintext for a failed TLS handshake and closes.
	rest, err := io.ReadAll(rd)
	if err != nil || len(rest) > 0 {
		t.Fatalf("plaintext client got %q, %v; want the connection closed", rest, err)
	}
	// A client without the CA cannot verify the server.
	if nc, err := nats.Connect(e.url, nats.UserCredentials(adminCreds), nats.Timeout(3*time.Second)); err == nil {
		nc.Close()
		t.Fatal("client without the CA connected")
	}
	otherCA, err := pki.Init(t.TempDir(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(e.url, nats.RootCAs(otherCA.CA), nats.UserCredentials(adminCreds), nats.Timeout(3*time.Second)); err == nil {
		nc.Close()
		t.Fatal("client trusting another CA connected")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("other-CA refusal: %v", err)
	}
	// No credentials at all.
	if nc, err := nats.Connect(e.url, nats.RootCAs(e.ca), nats.Timeout(3*time.Second)); err == nil {
		nc.Close()
		t.Fatal("anonymous client connected")
	}
	admin, _ := e.connect(t, adminCreds)
	mustOK(t, call(t, admin, proto.APISiteList, proto.ListRequest{V: proto.Version}, nil))

	// Files holding secrets are 0600.
	for _, f := range []string{adminCreds, filepath.Join(e.pkiDir, pki.KeyFile),
		filepath.Join(e.data, "auth", "operator.nk"), filepath.Join(e.data, "auth", "fleet.nk"),
		filepath.Join(e.data, "auth", "api.nk"), filepath.Join(e.data, "auth", "sys.nk")} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	// No seed, nor the server key, appears in the coordinator's log.
	secrets := secretsIn(t, append([]string{adminCreds, filepath.Join(e.pkiDir, pki.KeyFile)}, globNK(t, e.data)...)...)
	logs := e.logs.String()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a secret appears in the coordinator's log")
		}
	}
	if !strings.Contains(logs, "admin.creds") {
		t.Errorf("the log does not say where the admin credentials are:\n%s", logs)
	}
}

func globNK(t *testing.T, data string) []string {
	m, err := filepath.Glob(filepath.Join(data, "auth", "*.nk"))
	if err != nil || len(m) != 4 {
		t.Fatalf("nk files: %v %v", m, err)
	}
	return m
}

// secretsIn returns the secret strings of creds, seed and key files: nkey
// seeds (S…) and PEM key bodies.
func secretsIn(t *testing.T, files ...string) []string {
	t.Helper()
	var out []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "S") && len(line) > 50 || (len(line) > 40 && !strings.HasPrefix(line, "-----") && strings.HasSuffix(f, ".pem")) {
				out = append(out, line)
			}
		}
	}
	if len(out) < 5 {
		t.Fatalf("found only %d secrets in %q", len(out), files)
	}
	return out
}

// TestRevokeSaveFails: when the registry cannot be saved, Revoke fails and
// revokes nothing anywhere: the credential still connects now and after a
// restart. A revocation that succeeds holds across a restart. (Pushed before
// the save, the server refused the credential now and a restart let it in.)
func TestRevokeSaveFails(t *testing.T) {
	if testing.Short() {
		t.Skip("short: starts a coordinator twice")
	}
	e := &env{data: t.TempDir(), pkiDir: t.TempDir()}
	if _, err := pki.Init(e.pkiDir, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	stop := e.run(t)
	admin := e.seed(t)
	edgeCreds := enrol(t, admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: "e1", Site: "lab"})

	// A non-empty directory where the registry is: the save's rename fails
	// (even for root, which ignores read-only modes).
	reg := filepath.Join(e.data, "auth", "identities.json")
	aside := reg + ".aside"
	if err := os.Rename(reg, aside); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(reg, "block"), 0o700); err != nil {
		t.Fatal(err)
	}
	rep := call(t, admin, auth.APIEdgeRevoke, proto.NameRequest{V: proto.Version, Name: "e1"}, nil)
	if !strings.Contains(rep.Error, "nothing revoked") {
		t.Fatalf("revoke with a failing save: error %q, want one saying nothing was revoked", rep.Error)
	}
	connects := func(when string) {
		t.Helper()
		opts, _ := e.options(edgeCreds)
		nc, err := nats.Connect(e.url, opts...)
		if err != nil {
			t.Fatalf("%s: the edge whose revocation failed cannot connect: %v", when, err)
		}
		nc.Close()
	}
	connects("right after the failed revoke")

	if err := os.RemoveAll(reg); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(aside, reg); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	stop()
	stop = e.run(t)
	connects("after a restart")

	// Now a revocation that works holds now and after a restart.
	admin, _ = e.connect(t, filepath.Join(e.data, "admin.creds"))
	mustOK(t, call(t, admin, auth.APIEdgeRevoke, proto.NameRequest{V: proto.Version, Name: "e1"}, nil))
	refused := func(when string) {
		t.Helper()
		opts, _ := e.options(edgeCreds)
		if nc, err := nats.Connect(e.url, opts...); err == nil {
			nc.Close()
			t.Fatalf("%s: the revoked edge connected", when)
		}
	}
	refused("after the revoke")
	admin.Close()
	stop()
	e.run(t)
	refused("after a restart")
}

// TestSpoofedHeartbeatsAndEvents: an edge credential of site lab publishes,
// on its own (permitted) subjects, a heartbeat whose body says it is edge e2
// of site other, and an event whose body names another site, edge and MAC.
// The coordinator does not record the heartbeat as e2, and the event readers
// drop the event; honest ones go through.
func TestSpoofedHeartbeatsAndEvents(t *testing.T) { forEachBackend(t, testSpoofedHeartbeatsAndEvents) }

func testSpoofedHeartbeatsAndEvents(t *testing.T, start func(*testing.T) *env) {
	if testing.Short() {
		t.Skip("short: starts a coordinator")
	}
	e := start(t)
	admin := e.seed(t)
	creds := enrol(t, admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: "e1", Site: "lab"})
	nc, ae := e.connect(t, creds)

	heartbeat := func(name, site, version string) {
		t.Helper()
		b, _ := json.Marshal(proto.EdgeStatus{V: proto.Version, Name: name, Site: site, Version: version, Time: time.Now(), IntervalSecs: 60})
		if err := nc.Publish(proto.StatusSubject("lab", "e1"), b); err != nil {
			t.Fatal(err)
		}
	}
	heartbeat("e2", "other", "forged")
	heartbeat("e1", "other", "forged-site")
	heartbeat("e1", "lab", "honest") // after the forged ones, on the same connection
	var edges []proto.EdgeView
	waitfor.Within(t, 20*time.Second, "the honest heartbeat", func() error {
		edges = nil
		rep := call(t, admin, proto.APIEdgeList, proto.ListRequest{V: proto.Version}, nil)
		mustOK(t, rep)
		_ = json.Unmarshal(rep.Data, &edges)
		for _, ed := range edges {
			if ed.Name == "e1" && ed.Version == "honest" {
				return nil
			}
		}
		return fmt.Errorf("edges: %+v", edges)
	})
	type row struct{ Name, Site, Version string }
	var got []row
	for _, ed := range edges {
		got = append(got, row{ed.Name, ed.Site, ed.Version})
	}
	if diff := cmp.Diff([]row{{"e1", "lab", "honest"}}, got); diff != "" {
		t.Fatalf("edges recorded (-want +got):\n%s", diff)
	}
	if !strings.Contains(e.logs.String(), "heartbeat whose body names another edge or site than its subject dropped") {
		t.Errorf("the dropped heartbeat was not logged:\n%s", e.logs.String())
	}

	// Events: published into the stream on e1's own subject, with bodies
	// that lie, and one honest event.
	ejs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(id, site, edgeName, mac string) {
		t.Helper()
		b, _ := json.Marshal(proto.Event{V: proto.Version, ID: id, Time: time.Now(), Site: site, Edge: edgeName, MAC: mac, Kind: proto.EventScript})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := ejs.Publish(ctx, proto.EventSubject("lab", "e1", labMAC), b, jetstream.WithMsgID(id)); err != nil {
			t.Fatalf("publish %s: %v (%q)", id, err, ae.all())
		}
	}
	publish("other-mac", "lab", "e1", otherMAC)
	publish("other-site", "other", "e1", labMAC)
	publish("other-edge", "lab", "e2", labMAC)
	publish("honest", "lab", "e1", labMAC)
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(context.Background(), proto.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	for _, macs := range [][]string{nil, {labMAC}, {otherMAC}} {
		subjects, err := eventlog.Subjects("", "", macs)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		var warn bytes.Buffer
		if err := eventlog.Read(context.Background(), st, eventlog.Query{Subjects: subjects}, &warn, func(ev proto.Event) error {
			ids = append(ids, ev.ID)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		want := []string{"honest"}
		if len(macs) == 1 && macs[0] == otherMAC {
			want = nil
		}
		if diff := cmp.Diff(want, ids); diff != "" {
			t.Errorf("events read for %v (-want +got):\n%s", macs, diff)
		}
		if want != nil && (!strings.Contains(warn.String(), "disagrees with its subject") || strings.Count(warn.String(), "\n") > 2) {
			t.Errorf("warnings for %v: %q; want one warning and one count", macs, warn.String())
		}
	}
}

// TestNoDurablesNoSharedInboxes: neither an edge nor a viewer can keep a
// durable consumer (the legacy DURABLE.CREATE subject is refused by the
// server's permissions; a durable name in the body of the named
// CONSUMER.CREATE form gets the streams' inactivity limit, and a longer one
// is refused), no viewer may subscribe to the shared _INBOX.> or to another
// viewer's inbox, and the account limits consumers.
func TestNoDurablesNoSharedInboxes(t *testing.T) { forEachBackend(t, testNoDurablesNoSharedInboxes) }

func testNoDurablesNoSharedInboxes(t *testing.T, start func(*testing.T) *env) {
	if testing.Short() {
		t.Skip("short: starts a coordinator")
	}
	e := start(t)
	admin := e.seed(t)
	edgeCreds := enrol(t, admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: "e1", Site: "lab"})
	bobCreds := enrol(t, admin, auth.APIUserAdd, auth.EnrolRequest{Name: "bob", Role: auth.RoleViewer})
	carolCreds := enrol(t, admin, auth.APIUserAdd, auth.EnrolRequest{Name: "carol", Role: auth.RoleViewer})
	edgeNC, edgeErrs := e.connect(t, edgeCreds)
	bob, bobErrs := e.connect(t, bobCreds)
	carol, carolErrs := e.connect(t, carolCreds)
	bobInbox, err := auth.InboxPrefix(bobCreds)
	if err != nil || !strings.HasPrefix(bobInbox, "_INBOX_user_") {
		t.Fatalf("bob's inbox prefix %q, %v; want a private one", bobInbox, err)
	}
	// Bob's API calls work through his private inbox.
	mustOK(t, call(t, bob, proto.APISiteList, proto.ListRequest{V: proto.Version}, nil))

	// consumerCreate sends a raw CONSUMER.CREATE request and returns the
	// server's error description ("" when it created the consumer) and the
	// inactivity threshold the consumer got.
	consumerCreate := func(t *testing.T, nc *nats.Conn, subject, stream string, cfg map[string]any) (string, time.Duration) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"stream_name": stream, "config": cfg})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		msg, err := nc.RequestWithContext(ctx, subject, body)
		if err != nil {
			return err.Error(), 0
		}
		var rep struct {
			Error  *struct{ Description string } `json:"error"`
			Config struct {
				InactiveThreshold time.Duration `json:"inactive_threshold"`
			} `json:"config"`
		}
		if err := json.Unmarshal(msg.Data, &rep); err != nil {
			t.Fatalf("reply %q: %v", msg.Data, err)
		}
		if rep.Error != nil {
			return rep.Error.Description, 0
		}
		return "", rep.Config.InactiveThreshold
	}
	labFilter := "$KV.hosts.lab.>"
	for _, c := range []struct {
		name    string
		nc      *nats.Conn
		errs    *asyncErrs
		stream  string
		filter  string
		inbox   string
		durable string
	}{
		{"edge", edgeNC, edgeErrs, "KV_hosts", labFilter, auth.EdgeInboxPrefix("e1"), "edged"},
		{"viewer", bob, bobErrs, proto.StreamEvents, proto.SubjectEventsPrefix + ".>", bobInbox, "viewerd"},
	} {
		t.Run(c.name+" legacy durable create", func(t *testing.T) {
			subj := "$JS.API.CONSUMER.DURABLE.CREATE." + c.stream + "." + c.durable
			if desc, _ := consumerCreate(t, c.nc, subj, c.stream, map[string]any{"durable_name": c.durable, "filter_subject": c.filter, "ack_policy": "none", "deliver_subject": c.inbox + ".d"}); desc == "" {
				t.Fatal("durable consumer created")
			}
			c.errs.wait(t, "permissions violation for publish", subj)
		})
		named := func(name string) string { return "$JS.API.CONSUMER.CREATE." + c.stream + "." + name + "." + c.filter }
		t.Run(c.name+" durable in the body, no expiry", func(t *testing.T) {
			desc, inactive := consumerCreate(t, c.nc, named(c.durable), c.stream, map[string]any{"durable_name": c.durable, "filter_subject": c.filter, "ack_policy": "none", "deliver_subject": c.inbox + ".d"})
			if desc == "" && inactive != proto.ConsumerInactiveLimit {
				t.Fatalf("durable consumer created with inactivity threshold %s: it outlives its client for good", inactive)
			}
		})
		t.Run(c.name+" durable in the body, long expiry", func(t *testing.T) {
			desc, _ := consumerCreate(t, c.nc, named(c.durable+"2"), c.stream, map[string]any{"durable_name": c.durable + "2", "filter_subject": c.filter, "ack_policy": "none", "deliver_subject": c.inbox + ".d", "inactive_threshold": int64(24 * time.Hour)})
			if desc == "" {
				t.Fatal("a consumer living a day after its client went was created")
			}
			if !strings.Contains(desc, "inactive threshold") {
				t.Fatalf("refused for another reason than its inactivity threshold: %s", desc)
			}
		})
	}
	t.Run("viewer subscribes to the shared inboxes", func(t *testing.T) {
		if _, err := carol.Subscribe("_INBOX.>", func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		carolErrs.wait(t, "permissions violation for subscription", "_INBOX.>")
	})
	t.Run("viewer reads another viewer's API replies", func(t *testing.T) {
		got := make(chan *nats.Msg, 1)
		if _, err := carol.Subscribe(bobInbox+".>", func(m *nats.Msg) { got <- m }); err != nil {
			t.Fatal(err)
		}
		carolErrs.wait(t, "permissions violation for subscription", bobInbox+".>")
		mustOK(t, call(t, bob, proto.APIHostList, proto.ListRequest{V: proto.Version}, nil))
		if err := carol.Flush(); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			t.Fatalf("carol read bob's reply on %s", m.Subject)
		default:
		}
	})
	t.Run("account limits", func(t *testing.T) {
		js, err := jetstream.New(admin)
		if err != nil {
			t.Fatal(err)
		}
		info, err := js.AccountInfo(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.Limits.MaxConsumers != auth.MaxConsumers {
			t.Fatalf("account consumer limit %d, want %d", info.Limits.MaxConsumers, auth.MaxConsumers)
		}
	})
}

// counter sums a counter's samples in a registry (all label values).
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestAuditFullAndCallbackRefusals: refused installer callbacks (which
// anyone on a boot network can make an edge relay) are counted, not
// stored; an AUDIT stream that fills keeps the admin's first records and
// refuses new ones, loudly, and the change it could not record is refused
// and not made; a revocation still goes through.
func TestAuditFullAndCallbackRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("short: starts a coordinator")
	}
	e := &env{data: t.TempDir(), pkiDir: t.TempDir(), auditMax: 64 << 10, metrics: prometheus.NewRegistry()}
	if _, err := pki.Init(e.pkiDir, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	e.run(t)
	admin := e.seed(t)
	edgeCreds := enrol(t, admin, auth.APIEdgeAdd, auth.EnrolRequest{Name: "e1", Site: "lab"})
	edgeNC, _ := e.connect(t, edgeCreds)
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	auditMsgs := func() uint64 {
		t.Helper()
		st, err := js.Stream(context.Background(), proto.StreamAudit)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().State.Msgs
	}
	before := auditMsgs()
	const callbacks = 300
	for i := range callbacks {
		mac := fmt.Sprintf("52:54:00:aa:%02x:%02x", byte(i>>8), byte(i))
		if rep := call(t, edgeNC, proto.APIHostDone, proto.MACRequest{V: proto.Version, MAC: mac}, nil); rep.Error == "" {
			t.Fatalf("callback for unknown %s accepted", mac)
		}
	}
	if after := auditMsgs(); after != before {
		t.Errorf("%d refused callbacks grew AUDIT from %d to %d records; want them counted, not stored", callbacks, before, after)
	}
	if got := counter(t, e.metrics, "fleetboot_callback_refusals_total"); got != callbacks {
		t.Errorf("fleetboot_callback_refusals_total = %v, want %d", got, callbacks)
	}

	// Fill the audit log with the admin's changes until one is refused.
	site := "lab"
	lastName, refusal := "", ""
	for i := range 2000 {
		name := fmt.Sprintf("web%d", i)
		rep := call(t, admin, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: labMAC, Site: &site, Hostname: &name,
			Vars: map[string]string{"pad": strings.Repeat("x", 400)}}, nil)
		if rep.Error != "" {
			refusal = rep.Error
			break
		}
		lastName = name
	}
	if !strings.HasPrefix(refusal, "the audit log is full: host.set refused") {
		t.Fatalf("filling the audit log: refusal %q", refusal)
	}
	// The refused change was not made.
	var h proto.Host
	rep := call(t, admin, proto.APIHostGet, proto.MACRequest{V: proto.Version, MAC: labMAC}, nil)
	mustOK(t, rep)
	if err := json.Unmarshal(rep.Data, &h); err != nil || h.Hostname != lastName {
		t.Fatalf("host after the refused change: %q (%v), want %q", h.Hostname, err, lastName)
	}
	// The admin's first records are still there.
	recs, err := audit.Read(context.Background(), js, time.Now().Add(-time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ Who, Action, Outcome string }
	var first []row
	for _, r := range recs[:min(len(recs), 5)] {
		first = append(first, row{r.Who, r.Action, r.Outcome})
	}
	want := []row{
		{"admin", proto.APISiteAdd, audit.Accepted}, {"admin", proto.APISiteAdd, audit.Accepted},
		{"admin", proto.APIHostSet, audit.Accepted}, {"admin", proto.APIHostSet, audit.Accepted},
		{"admin", proto.APIEdgeAdd, audit.Accepted},
	}
	if diff := cmp.Diff(want, first); diff != "" {
		t.Errorf("the audit log's first records (-want +got):\n%s", diff)
	}
	if recs[0].Seq != 1 {
		t.Errorf("the first record kept has sequence %d: older ones were dropped", recs[0].Seq)
	}
	// Loudly: a log line and a counter.
	if !strings.Contains(e.logs.String(), "level=ERROR msg=\"AUDIT STREAM FULL") {
		t.Errorf("no loud log line about the full audit log:\n%s", e.logs.String())
	}
	if got := counter(t, e.metrics, "fleetboot_audit_full_refused_changes_total"); got < 1 {
		t.Errorf("fleetboot_audit_full_refused_changes_total = %v", got)
	}
	// A revocation still goes through.
	mustOK(t, call(t, admin, auth.APIEdgeRevoke, proto.NameRequest{V: proto.Version, Name: "e1"}, nil))
}

// TestViewerCannotFillTheAuditLog: a viewer's refused requests are audited,
// but a flood of them is not stored one by one (the first ones are, then a
// record saying the rest are counted): with AUDIT refusing new records when
// full, a read-only credential could otherwise fill it and so block every
// admin's change.
func TestViewerCannotFillTheAuditLog(t *testing.T) {
	if testing.Short() {
		t.Skip("short: starts a coordinator")
	}
	e := &env{data: t.TempDir(), pkiDir: t.TempDir(), auditMax: 256 << 10, metrics: prometheus.NewRegistry()}
	if _, err := pki.Init(e.pkiDir, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	e.run(t)
	admin := e.seed(t)
	viewer, _ := e.connect(t, enrol(t, admin, auth.APIUserAdd, auth.EnrolRequest{Name: "bob", Role: auth.RoleViewer}))
	const flood = 1200 // × ~600 bytes: more than twice the 256 KiB stream
	name := "evil"
	pad := map[string]string{"pad": strings.Repeat("x", 300)}
	for range flood {
		rep := call(t, viewer, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: labMAC, Hostname: &name, Vars: pad}, nil)
		if !strings.HasPrefix(rep.Error, "permission denied") {
			t.Fatalf("viewer's host set: %q, want a permission refusal", rep.Error)
		}
	}
	// The admin can still change the fleet.
	good := "web1"
	accepted := counterWith(t, e.metrics, "fleetboot_api_requests_total", "endpoint", proto.APIHostSet, "code", "200")
	mustOK(t, call(t, admin, proto.APIHostSet, proto.HostSetRequest{V: proto.Version, MAC: labMAC, Hostname: &good}, nil))

	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := audit.Read(context.Background(), js, time.Now().Add(-time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	stored, noted := 0, false
	for _, r := range recs {
		if r.Who == "bob" && r.Action == proto.APIHostSet && r.Outcome == audit.Refused {
			stored++
			noted = noted || strings.Contains(r.Error, "counted, not stored")
		}
	}
	if stored == 0 || !noted {
		t.Errorf("bob's refusals: %d stored, a note about the rest: %v; want the first ones and the note", stored, noted)
	}
	if got := counter(t, e.metrics, "fleetboot_audit_refusals_counted_total"); int(got)+stored != flood {
		t.Errorf("%d refusals stored + %v counted, want %d in all", stored, got, flood)
	}
	if last := recs[len(recs)-1]; last.Who != "admin" || last.Outcome != audit.Accepted {
		t.Errorf("last record %+v, want the admin's accepted change", last)
	}
	// On /metrics: every refusal by endpoint and code, and the admin's change.
	for _, c := range []struct {
		code string
		want float64
	}{{"403", flood}, {"200", accepted + 1}} {
		if got := counterWith(t, e.metrics, "fleetboot_api_requests_total", "endpoint", proto.APIHostSet, "code", c.code); got != c.want {
			t.Errorf("fleetboot_api_requests_total{endpoint=%s,code=%s} = %v, want %v", proto.APIHostSet, c.code, got, c.want)
		}
	}
}

// counterWith reads the counter of name whose labels include the given
// name/value pairs.
func counterWith(t *testing.T, reg *prometheus.Registry, name string, kv ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(kv); i += 2 {
				if have[kv[i]] != kv[i+1] {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
