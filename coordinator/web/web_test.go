package web_test

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"github.com/fleetboot/fleetboot/coordinator/api"
	"github.com/fleetboot/fleetboot/coordinator/audit"
	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/coordinator/web"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/natstest"
)

// password is every test person's web password.
const password = "correct horse battery"

// clock is a settable now, for session expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fakeEvents []proto.Event

func (f fakeEvents) Events(_ context.Context, macs []string, since time.Time) ([]proto.Event, error) {
	var out []proto.Event
	for _, e := range f {
		for _, m := range macs {
			if e.MAC == m && !e.Time.Before(since) {
				out = append(out, e)
			}
		}
	}
	return out, nil
}

// fleet is a panel over a real service, API guard, audit log and identity
// authority (in-process NATS with JetStream): alice (admin), vic (viewer),
// sam (site admin of lab), each with a web password.
type fleet struct {
	srv   *httptest.Server
	svc   *service.Service
	js    jetstream.JetStream
	clock *clock
	nc    *nats.Conn
	index *web.HostIndex
	h     *web.Handler
	t     testing.TB
}

func sha(c byte) string { return strings.Repeat(string(c), 64) }

func newFleet(t testing.TB, events fakeEvents, mod func(*web.Config)) *fleet {
	t.Helper()
	ctx := context.Background()
	ns := natstest.Start(t)
	nc, js := natstest.Connect(t, ns.ClientURL())
	svc, err := service.New(ctx, service.Config{JS: js})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"lab", "branch"} {
		n := map[string]string{"lab": "10.0.0", "branch": "10.1.0"}[s]
		if _, err := svc.AddSite(ctx, proto.Site{Name: s, DHCP: proto.DHCPFull, Networks: []proto.Network{{Subnet: n + ".0/24", RangeStart: n + ".100", RangeEnd: n + ".200"}}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"deb", "alma"} {
		if _, err := svc.AddImage(ctx, proto.Image{Name: name, Cmdline: "console=ttyS0", Artifacts: []proto.Artifact{
			{Role: proto.RoleKernel, Name: "vmlinuz", Key: "sha256/" + sha('a'), Size: 10, SHA256: sha('a')},
			{Role: proto.RoleInitrd, Name: "initrd.img", Key: "sha256/" + sha('b'), Size: 20, SHA256: sha('b')},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	for i, site := range []string{"lab", "lab", "branch"} {
		img, host := "deb", fmt.Sprintf("web%d", i+1)
		labels := map[string]string{"rack": []string{"r1", "r2", "r1"}[i]}
		if _, err := svc.SetHost(ctx, proto.HostSetRequest{MAC: fmt.Sprintf("52:54:00:00:00:%02x", i+1), Site: &site, Image: &img, Hostname: &host, Labels: labels}); err != nil {
			t.Fatal(err)
		}
	}
	authority, err := auth.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The lowest bcrypt cost: at the default a comparison takes seconds
	// under the race detector. Production refuses hashes below cost 10.
	authority.SetWebPasswordCost(bcrypt.MinCost)
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		name string
		role auth.Role
		site string
	}{{"alice", auth.RoleAdmin, ""}, {"vic", auth.RoleViewer, ""}, {"sam", auth.RoleSiteAdmin, "lab"}, {"nopw", auth.RoleAdmin, ""}} {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		req := auth.EnrolRequest{V: proto.Version, Name: p.name, Role: p.role, Site: p.site, PublicKey: pub, WebPassword: string(hash)}
		if p.name == "nopw" {
			req.WebPassword = ""
		}
		if _, err := authority.Enrol(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if err := audit.EnsureStream(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, proto.EventsStreamConfig(1)); err != nil {
		t.Fatal(err)
	}
	auditLog := audit.NewLog(js, nil)
	guard := &auth.Guard{Account: authority.FleetAccount(), Directory: authority, HostSite: func(ctx context.Context, mac string) (string, error) {
		h, err := svc.GetHost(ctx, mac)
		return h.Site, err
	}}
	index, err := web.WatchHosts(t.Context(), js, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now()}
	cfg := web.Config{
		API:    api.NewLocal(api.Config{Service: svc, Guard: guard, Audit: auditLog}),
		Login:  authority,
		Hosts:  index,
		Events: events,
		Live:   web.StreamEvents{JS: js},
		Now:    clk.now,
		Audit:  jsAudit{js},
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := web.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(h.CloseStreams) // before the server closes: it waits for open streams
	return &fleet{srv: srv, svc: svc, js: js, nc: nc, index: index, h: h, clock: clk, t: t}
}

// jsAudit reads the AUDIT stream, as the coordinator's panel does.
type jsAudit struct{ js jetstream.JetStream }

func (a jsAudit) Read(ctx context.Context, since time.Time, limit int) ([]audit.Record, error) {
	return audit.Read(ctx, a.js, since, limit)
}

// browser is one person's cookie jar on the panel.
type browser struct {
	f *fleet
	c *http.Client
}

func (f *fleet) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{f: f, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type page struct {
	code int
	body string
	loc  string
}

func (b *browser) do(method, path string, form url.Values, hdr ...string) page {
	b.f.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.f.srv.URL+path, body)
	if err != nil {
		b.f.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.f.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return page{code: resp.StatusCode, body: string(data), loc: resp.Header.Get("Location")}
}

func (b *browser) get(path string) page { return b.do("GET", path, nil) }

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t testing.TB, p page) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no CSRF token on the page (HTTP %d):\n%.2000s", p.code, p.body)
	}
	return m[1]
}

// login logs in as name and returns the session's CSRF token.
func (b *browser) login(name string) string {
	t := b.f.t
	t.Helper()
	lp := b.get("/login")
	p := b.do("POST", "/login", url.Values{"csrf": {csrfOf(t, lp)}, "name": {name}, "password": {password}, "next": {"/hosts"}})
	if p.code != http.StatusSeeOther || p.loc != "/hosts" {
		t.Fatalf("login %s: HTTP %d to %q, want 303 to /hosts:\n%.1000s", name, p.code, p.loc, p.body)
	}
	return csrfOf(t, b.get("/hosts"))
}

func mustContain(t *testing.T, p page, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(p.body, w) && !strings.Contains(p.body, html.EscapeString(w)) {
			t.Errorf("page (HTTP %d) lacks %q:\n%s", p.code, w, p.body)
		}
	}
}

func mustNotContain(t *testing.T, p page, not ...string) {
	t.Helper()
	for _, w := range not {
		if strings.Contains(p.body, w) {
			t.Errorf("page contains %q", w)
		}
	}
}

func (f *fleet) host(mac string) proto.Host {
	h, err := f.svc.GetHost(context.Background(), mac)
	if err != nil {
		f.t.Fatal(err)
	}
	return h
}

// auditOf lists the audit records (who, action, outcome).
func (f *fleet) auditOf() []string {
	recs, err := audit.Read(context.Background(), f.js, time.Time{}, 1000)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		out = append(out, r.Who+" "+r.Action+" "+r.Outcome)
	}
	return out
}
