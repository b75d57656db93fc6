package rollout_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/coordinator"
	"github.com/fleetboot/fleetboot/coordinator/api"
	"github.com/fleetboot/fleetboot/coordinator/audit"
	"github.com/fleetboot/fleetboot/coordinator/rollout"
	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/natstest"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// clock is a fake clock the tests move: leases, boot timeouts and the
// timeline's settle time all read it, so no test waits for real time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fixture is a NATS server with JetStream, the real service and API (as
// a coordinator wires them), an edge's connection for events, and
// rollout engines the test ticks itself.
type fixture struct {
	t     *testing.T
	ns    *server.Server
	js    jetstream.JetStream
	svc   *service.Service
	api   micro.Service
	api2  *nats.Conn // the CLI's connection
	edge  *nats.Conn
	clock *clock
	n     int // event ids
	power chan proto.PowerRequest
}

const (
	tick   = 200 * time.Millisecond
	settle = 5 * time.Second
	// Image "web": revision 1 is what hosts run, 2 the target. Their
	// kernel and initrd differ by digest (and size).
	kernel1, initrd1 = "1111111111111111111111111111111111111111111111111111111111111111", "2222222222222222222222222222222222222222222222222222222222222222"
	kernel2, initrd2 = "3333333333333333333333333333333333333333333333333333333333333333", "4444444444444444444444444444444444444444444444444444444444444444"
)

func image(name, cmdline, kernel, initrd string, size int64) proto.Image {
	return proto.Image{V: proto.Version, Name: name, Cmdline: cmdline, Artifacts: []proto.Artifact{
		{Role: proto.RoleKernel, Name: "vmlinuz", Key: "sha256/" + kernel, Size: size, SHA256: kernel},
		{Role: proto.RoleInitrd, Name: "initrd.img", Key: "sha256/" + initrd, Size: size * 2, SHA256: initrd},
	}}
}

// newFixture: sites lab and dc, image web (revisions 1 and 2: 2 is
// current, and calls back when cmdline says so), hosts as given (site ->
// count), labelled role=web, on web@1.
func newFixture(t *testing.T, cmdline2 string, hosts map[string]int) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{t: t, ns: natstest.Start(t), clock: &clock{now: time.Now()}, power: make(chan proto.PowerRequest, 64)}
	nc, js := natstest.Connect(t, f.ns.ClientURL())
	f.js = js
	if err := coordinator.EnsureStreams(ctx, js, 1, 0); err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(ctx, service.Config{JS: js})
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	for i, s := range []string{"lab", "dc"} {
		if _, err := svc.AddSite(ctx, proto.Site{V: proto.Version, Name: s, Networks: []proto.Network{{Subnet: fmt.Sprintf("10.%d.0.0/16", i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.AddImage(ctx, image("web", "console=ttyS0", kernel1, initrd1, 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AddImage(ctx, image("web", cmdline2, kernel2, initrd2, 200)); err != nil {
		t.Fatal(err)
	}
	for _, site := range []string{"lab", "dc"} {
		for i := range hosts[site] {
			mac := macOf(site, i)
			if _, err := svc.SetHost(ctx, proto.HostSetRequest{V: proto.Version, MAC: mac, Site: &site, Image: ptr("web@1"),
				Labels: map[string]string{"role": "web"}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.api, err = api.Start(nc, api.Config{Service: svc, Rollouts: f.engine("api"), Audit: audit.NewLog(js, nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.api.Stop() })
	f.api2, _ = natstest.Connect(t, f.ns.ClientURL())
	f.edge, _ = natstest.Connect(t, f.ns.ClientURL())
	return f
}

func ptr[T any](v T) *T { return &v }

func macOf(site string, i int) string {
	b := byte(1)
	if site == "dc" {
		b = 2
	}
	return fmt.Sprintf("52:54:00:%02x:00:%02x", b, i+1)
}

// engine is one coordinator's rollout engine on a connection of its own
// (closing it is that coordinator dying).
func (f *fixture) engine(id string) *rollout.Engine {
	f.t.Helper()
	_, js := natstest.Connect(f.t, f.ns.ClientURL())
	e, err := rollout.New(context.Background(), rollout.Config{JS: js, Hosts: f.svc, Audit: audit.NewLog(js, nil), ID: id,
		Tick: tick, Settle: settle, PowerDelay: time.Second, Now: f.clock.Now})
	if err != nil {
		f.t.Fatal(err)
	}
	return e
}

// call makes an API request as the CLI does.
func (f *fixture) call(endpoint string, req, resp any) error {
	f.t.Helper()
	data, _ := json.Marshal(req)
	m, err := f.api2.Request(proto.APISubject(endpoint), data, 10*time.Second)
	if err != nil {
		f.t.Fatal(err)
	}
	var rep proto.Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		f.t.Fatal(err)
	}
	if rep.Error != "" {
		return fmt.Errorf("%s", rep.Error)
	}
	if resp != nil {
		return json.Unmarshal(rep.Data, resp)
	}
	return nil
}

func (f *fixture) mustCall(endpoint string, req, resp any) {
	f.t.Helper()
	if err := f.call(endpoint, req, resp); err != nil {
		f.t.Fatalf("%s: %v", endpoint, err)
	}
}

func (f *fixture) start(spec proto.RolloutSpec) proto.Rollout {
	f.t.Helper()
	var r proto.Rollout
	f.mustCall(proto.APIRolloutStart, spec, &r)
	return r
}

func (f *fixture) get(name string) proto.Rollout {
	f.t.Helper()
	var r proto.Rollout
	f.mustCall(proto.APIRolloutGet, proto.NameRequest{V: proto.Version, Name: name}, &r)
	return r
}

func (f *fixture) host(mac string) proto.Host {
	f.t.Helper()
	h, err := f.svc.GetHost(context.Background(), mac)
	if err != nil {
		f.t.Fatal(err)
	}
	return h
}

// hostEntry is the host's raw KV entry revision: untouched hosts keep it.
func (f *fixture) hostEntry(mac string) uint64 {
	f.t.Helper()
	kv, err := f.js.KeyValue(context.Background(), proto.BucketHosts)
	if err != nil {
		f.t.Fatal(err)
	}
	h := f.host(mac)
	key, _ := proto.HostKey(h.Site, h.MAC)
	e, err := kv.Get(context.Background(), key)
	if err != nil {
		f.t.Fatal(err)
	}
	return e.Revision()
}

// publish sends events about mac as edge e1 of its site does, into the
// EVENTS stream, timed by the fake clock.
func (f *fixture) publish(mac string, evs ...proto.Event) {
	f.t.Helper()
	site := f.host(mac).Site
	js, err := jetstream.New(f.edge)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, ev := range evs {
		f.n++
		ev.V, ev.ID, ev.Site, ev.Edge, ev.MAC = proto.Version, "rt-"+strconv.Itoa(f.n), site, "e1", mac
		if ev.Time.IsZero() {
			ev.Time = f.clock.Now()
		}
		data, _ := json.Marshal(ev)
		if _, err := js.Publish(context.Background(), proto.EventSubject(site, "e1", mac), data); err != nil {
			f.t.Fatal(err)
		}
	}
}

// boot publishes a whole boot of the given kernel and initrd by digest.
func (f *fixture) boot(mac, kernel, initrd string, size int64) {
	f.publish(mac,
		proto.Event{Kind: proto.EventDHCPDiscover, Detail: map[string]string{"xid": "1", "arch": "7"}},
		proto.Event{Kind: proto.EventDHCPAck, Detail: map[string]string{"xid": "1", "ip": "10.0.0.9"}},
		proto.Event{Kind: proto.EventScript, Detail: map[string]string{"decision": "boot", "image": "web@2"}},
		proto.Event{Kind: proto.EventArtifactStart, Detail: map[string]string{"file": "vmlinuz", "sha256": kernel}},
		proto.Event{Kind: proto.EventArtifactEnd, Detail: map[string]string{"file": "vmlinuz", "sha256": kernel, "status": "complete", "bytes": strconv.FormatInt(size, 10), "http_status": "200"}},
		proto.Event{Kind: proto.EventArtifactStart, Detail: map[string]string{"file": "initrd.img", "sha256": initrd}},
		proto.Event{Kind: proto.EventArtifactEnd, Detail: map[string]string{"file": "initrd.img", "sha256": initrd, "status": "complete", "bytes": strconv.FormatInt(size*2, 10), "http_status": "200"}},
	)
}

// done makes the host's done callback through the API, as its edge relays it.
func (f *fixture) done(mac string) {
	f.t.Helper()
	f.mustCall(proto.APIHostDone, proto.MACRequest{V: proto.Version, MAC: mac}, nil)
}

// until ticks the engines until cond holds.
func (f *fixture) until(what string, cond func(r proto.Rollout) bool, name string, engines ...*rollout.Engine) proto.Rollout {
	f.t.Helper()
	var r proto.Rollout
	waitfor.True(f.t, what, func() bool {
		for _, e := range engines {
			e.Tick(context.Background())
		}
		r = f.get(name)
		return cond(r)
	})
	return r
}

func stateOf(r proto.Rollout, mac string) proto.RolloutHost {
	for _, h := range r.Hosts {
		if h.MAC == mac {
			return h
		}
	}
	return proto.RolloutHost{}
}

func hostsIn(r proto.Rollout, state string) int {
	n := 0
	for _, h := range r.Hosts {
		if h.State == state {
			n++
		}
	}
	return n
}

// hostSets counts the audit's accepted host.set records per MAC made by
// rollouts.
func (f *fixture) hostSets() map[string]int {
	f.t.Helper()
	recs, err := audit.Read(context.Background(), f.js, time.Time{}, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]int{}
	for _, r := range recs {
		if r.Action != proto.APIHostSet || !strings.HasPrefix(r.Who, "rollout/") || r.Outcome != audit.Accepted {
			continue
		}
		var req proto.HostSetRequest
		if err := json.Unmarshal(r.Request, &req); err != nil {
			f.t.Fatal(err)
		}
		out[req.MAC]++
	}
	return out
}

// givePower gives lab hosts a BMC sealed to lab's edge e1, and
// plays that edge for power requests: each is answered ok and sent to
// f.power.
func (f *fixture) givePower(macs ...string) {
	f.t.Helper()
	ctx := context.Background()
	kp, _ := nkeys.CreateCurveKeys()
	xkey, _ := kp.PublicKey()
	sender, _ := nkeys.CreateCurveKeys()
	spub, _ := sender.PublicKey()
	for _, site := range []string{"lab"} { // the power tests' hosts are at lab
		if err := f.svc.RecordStatus(ctx, proto.EdgeStatus{V: proto.Version, Name: "e1", Site: site, XKey: xkey, Time: time.Now()}); err != nil {
			f.t.Fatal(err)
		}
		sub, err := f.edge.Subscribe(proto.PowerSubject(site, "e1"), func(m *nats.Msg) {
			var req proto.PowerRequest
			_ = json.Unmarshal(m.Data, &req)
			f.power <- req
			data, _ := json.Marshal(proto.PowerReply{V: proto.Version, MAC: req.MAC, Edge: "e1", Action: req.Action, PXE: req.PXE, Power: "on"})
			_ = m.Respond(data)
		})
		if err != nil {
			f.t.Fatal(err)
		}
		f.t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	for _, mac := range macs {
		_, err := f.svc.SetHostBMC(ctx, proto.HostBMCRequest{V: proto.Version, MAC: mac, Address: "127.0.0.1:9623", User: "admin",
			Sealed: map[string]proto.SealedSecret{"e1": {XKey: xkey, Sender: spub, Box: []byte("sealed")}}})
		if err != nil {
			f.t.Fatal(err)
		}
	}
}

// realEngine is an engine on the real clock, for Run.
func (f *fixture) realEngine(id string) *rollout.Engine {
	f.t.Helper()
	_, js := natstest.Connect(f.t, f.ns.ClientURL())
	e, err := rollout.New(context.Background(), rollout.Config{JS: js, Hosts: f.svc, Audit: audit.NewLog(js, nil), ID: id, Tick: tick, Settle: settle})
	if err != nil {
		f.t.Fatal(err)
	}
	return e
}

// timelineKinds lists the events of mac that edge published, as
// "kind:action", in order.
func (f *fixture) timelineKinds(mac, edge string) string {
	f.t.Helper()
	ctx := context.Background()
	st, err := f.js.Stream(ctx, proto.StreamEvents)
	if err != nil {
		f.t.Fatal(err)
	}
	site := f.host(mac).Site
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{proto.EventSubject(site, edge, mac)}})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for {
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			f.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var ev proto.Event
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				f.t.Fatal(err)
			}
			out = append(out, ev.Kind+":"+ev.Detail["action"])
		}
		if n == 0 {
			return strings.Join(out, " ")
		}
	}
}
