package web_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/coordinator/web"

	"github.com/fleetboot/fleetboot/proto"
)

const (
	mac1 = "52:54:00:00:00:01" // lab, web1
	mac2 = "52:54:00:00:00:02" // lab, web2
	mac3 = "52:54:00:00:00:03" // branch, web3
)

func TestLogin(t *testing.T) {
	f := newFleet(t, nil, nil)
	b := f.browser()
	if p := b.get("/hosts"); p.code != http.StatusSeeOther || p.loc != "/login?next=%2Fhosts" {
		t.Fatalf("not logged in: HTTP %d to %q, want 303 to the login page", p.code, p.loc)
	}
	lp := b.get("/login")
	mustContain(t, lp, `<label for="name">`, `<label for="password">`, `autocomplete="current-password"`)
	tok := csrfOf(t, lp)
	cases := []struct {
		name, who, pw, csrf string
		code                int
		want                string
	}{
		{"no token", "alice", password, "", 403, "token is missing or stale"},
		{"wrong token", "alice", password, "x" + tok, 403, "token is missing or stale"},
		{"wrong password", "alice", "not it at all", tok, 401, "Wrong name or password."},
		{"unknown name", "mallory", password, tok, 401, "Wrong name or password."},
		{"no web password", "nopw", "", tok, 401, "Wrong name or password."},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.csrf == tok {
				c.csrf = csrfOf(t, b.get("/login")) // each login page sets a new one
			}
			p := b.do("POST", "/login", url.Values{"csrf": {c.csrf}, "name": {c.who}, "password": {c.pw}})
			if p.code != c.code || !strings.Contains(p.body, c.want) {
				t.Fatalf("HTTP %d, want %d with %q:\n%.500s", p.code, c.code, c.want, p.body)
			}
		})
	}
	// A redirect after login stays on the panel.
	tok = csrfOf(t, b.get("/login"))
	p := b.do("POST", "/login", url.Values{"csrf": {tok}, "name": {"vic"}, "password": {password}, "next": {"//evil.example/x"}})
	if p.code != http.StatusSeeOther || p.loc != "/" {
		t.Fatalf("login with next=//evil.example: HTTP %d to %q, want 303 to /", p.code, p.loc)
	}
	mustContain(t, b.get("/"), "viewer vic", "lab", "branch")
	csrf := csrfOf(t, b.get("/"))
	if p := b.do("POST", "/logout", url.Values{"csrf": {csrf}}); p.code != http.StatusSeeOther {
		t.Fatalf("logout: HTTP %d", p.code)
	}
	if p := b.get("/"); p.code != http.StatusSeeOther {
		t.Fatalf("after logout: HTTP %d, want 303 to the login page", p.code)
	}
}

// TestLoginRateLimit: past the limit of failures for a name, even the
// right password is refused for that name (from any address); other names
// from another address still log in. Past the limit for an address, every
// name from it is refused.
func TestLoginRateLimit(t *testing.T) {
	f := newFleet(t, nil, func(c *web.Config) { c.LoginFailures = 3 })
	b := f.browser()
	try := func(name, pw string) int {
		tok := csrfOf(t, b.get("/login"))
		return b.do("POST", "/login", url.Values{"csrf": {tok}, "name": {name}, "password": {pw}}).code
	}
	for range 3 {
		if code := try("alice", "guess guess guess"); code != 401 {
			t.Fatalf("failed login: HTTP %d, want 401", code)
		}
	}
	if code := try("alice", password); code != http.StatusTooManyRequests {
		t.Fatalf("alice after 3 failures: HTTP %d, want 429", code)
	}
	// The address (loopback) has 3 failures too: vic is refused from it.
	if code := try("vic", password); code != http.StatusTooManyRequests {
		t.Fatalf("vic from the same address: HTTP %d, want 429", code)
	}
	f.clock.add(16 * time.Minute)
	if code := try("alice", password); code != http.StatusSeeOther {
		t.Fatalf("alice after the window: HTTP %d, want 303", code)
	}
}

func TestSessionExpiry(t *testing.T) {
	f := newFleet(t, nil, nil)
	b := f.browser()
	b.login("alice")
	f.clock.add(29 * time.Minute)
	if p := b.get("/hosts"); p.code != 200 {
		t.Fatalf("after 29 min idle: HTTP %d, want 200", p.code)
	}
	f.clock.add(31 * time.Minute)
	if p := b.get("/hosts"); p.code != http.StatusSeeOther {
		t.Fatalf("after 31 min idle: HTTP %d, want 303 to the login page", p.code)
	}
	// A form posted with an expired session is refused, not redirected.
	csrf := b.login("alice")
	for range 25 { // active, but past the 12 h a session lasts
		f.clock.add(29 * time.Minute)
		b.get("/")
	}
	p := b.do("POST", "/hosts/"+mac1, url.Values{"csrf": {csrf}, "image": {"alma"}, "state": {"boot"}})
	if p.code != http.StatusUnauthorized {
		t.Fatalf("POST after 12 h: HTTP %d, want 401", p.code)
	}
	if f.host(mac1).Image != "deb" {
		t.Fatal("a POST with an expired session changed the host")
	}
}

func TestPages(t *testing.T) {
	ev := func(sec float64, kind string, detail map[string]string) proto.Event {
		return proto.Event{V: 1, Time: time.Now().Add(-time.Hour + time.Duration(sec*float64(time.Second))), Site: "lab", Edge: "e1", MAC: mac1, Kind: kind, Detail: detail}
	}
	f := newFleet(t, fakeEvents{
		ev(0, proto.EventDHCPDiscover, map[string]string{"xid": "1"}), ev(0.01, proto.EventDHCPOffer, map[string]string{"xid": "1", "ip": "10.0.0.100"}),
		ev(0.02, proto.EventDHCPRequest, map[string]string{"xid": "1"}), ev(0.03, proto.EventDHCPAck, map[string]string{"xid": "1", "ip": "10.0.0.100"}),
		ev(0.5, proto.EventTFTPDone, map[string]string{"file": "undionly.kpxe", "bytes": "70000", "duration_ms": "400"}),
		ev(1.2, proto.EventScript, map[string]string{"image": "deb"}),
		ev(3.5, proto.EventArtifactEnd, map[string]string{"file": "deb/vmlinuz", "bytes": "14155776", "duration_ms": "2100", "status": "ok"}),
	}, nil)
	b := f.browser()
	b.login("alice")
	cases := []struct {
		name, path string
		code       int
		want, not  []string
	}{
		{"overview", "/", 200, []string{"lab", "10.0.0.0/24", "branch", "no edge has reported yet"}, nil},
		{"hosts", "/hosts", 200, []string{mac1, mac2, mac3, "web1", "3 host(s)", `action="/bulk"`}, nil},
		{"hosts of a site", "/hosts?site=branch", 200, []string{mac3, "1 host(s)"}, []string{mac1}},
		{"search by MAC, dashes", "/hosts?q=52-54-00-00-00-02", 200, []string{mac2, "1 host(s)"}, []string{mac1}},
		{"search by MAC, bare", "/hosts?q=000003", 200, []string{mac3}, []string{mac1}},
		{"search by hostname", "/hosts?q=WEB1", 200, []string{mac1}, []string{mac2}},
		{"search by label", "/hosts?labels=labels.rack%3Dr1", 200, []string{mac1, mac3, "2 host(s)", "rack=r1"}, []string{mac2}},
		{"bad selector", "/hosts?labels=rack%3D%3D%3D", 400, []string{"labels:"}, nil},
		{"sort by hostname, newest", "/hosts?sort=updated", 200, []string{`<option selected>updated</option>`}, nil},
		{"host with waterfall", "/hosts/52-54-00-00-00-01", 200, []string{"<svg", "undionly.kpxe", "13.5 MiB in 2.1 s, 6.4 MiB/s", "68.4 KiB in 400 ms, 171 KiB/s", `<select id="image" name="image"`, `<label for="ip">`}, nil},
		{"unknown host", "/hosts/52:54:00:00:00:99", 404, []string{"not found"}, nil},
		{"bad MAC", "/hosts/zz", 400, []string{`invalid MAC address "zz"`}, nil},
		{"bad site", "/hosts?site=a.b", 400, []string{"invalid site name"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := b.get(c.path)
			if p.code != c.code {
				t.Fatalf("HTTP %d, want %d:\n%.1000s", p.code, c.code, p.body)
			}
			mustContain(t, p, c.want...)
			mustNotContain(t, p, c.not...)
		})
	}
}

func TestHostForm(t *testing.T) {
	f := newFleet(t, nil, nil)
	b := f.browser()
	csrf := b.login("alice")
	form := func(kv ...string) url.Values {
		v := url.Values{"csrf": {csrf}, "image": {"deb"}, "state": {"boot"}}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	cases := []struct {
		name  string
		form  url.Values
		code  int
		field string // the id of the error shown next to its field
		want  string
	}{
		{"not an IP", form("ip", "10.0.0.999"), 422, "ip-err", `"10.0.0.999" is not an IP address`},
		{"IP outside the site", form("ip", "192.168.9.9"), 422, "ip-err", "192.168.9.9"},
		{"bad hostname", form("hostname", "-bad-"), 422, "hostname-err", "hostname"},
		{"bad state", form("state", "reboot"), 422, "state-err", "choose boot or local"},
		{"no such image", form("image", "nope"), 422, "image-err", "nope"},
		{"no token", form("csrf", ""), 403, "", "token is missing or stale"},
		{"another session's token", form("csrf", csrfOf(t, f.browser().get("/login"))), 403, "", "token is missing or stale"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := b.do("POST", "/hosts/"+mac1, c.form)
			if p.code != c.code {
				t.Fatalf("HTTP %d, want %d:\n%.1500s", p.code, c.code, p.body)
			}
			if c.field != "" {
				mustContain(t, p, `aria-describedby="`+c.field+`"`, `<span class="err" id="`+c.field+`">`)
			}
			mustContain(t, p, c.want)
			if h := f.host(mac1); h.Image != "deb" || h.IP != "" || h.Hostname != "web1" {
				t.Fatalf("a refused form changed the host: %+v", h)
			}
		})
	}
	p := b.do("POST", "/hosts/"+mac1, form("image", "alma", "ip", "10.0.0.7", "hostname", "db1", "once", "on"))
	if p.code != http.StatusSeeOther || p.loc != "/hosts/"+mac1+"?saved=1" {
		t.Fatalf("save: HTTP %d to %q:\n%.1500s", p.code, p.loc, p.body)
	}
	h := f.host(mac1)
	if h.Image != "alma" || h.IP != "10.0.0.7" || h.Hostname != "db1" || !h.Once || h.Site != "lab" {
		t.Fatalf("host after save: %+v", h)
	}
	mustContain(t, b.get(p.loc), "Saved.", `<option selected>alma</option>`)
	if !slices.Contains(f.auditOf(), "alice host.set accepted") {
		t.Fatalf("audit lacks alice's change: %q", f.auditOf())
	}
}

// TestViewer: a viewer sees no edit control, and a form she forges (an
// admin's form, with her own session's token) is refused by the API's
// guard and audited under her name.
func TestViewer(t *testing.T) {
	f := newFleet(t, nil, nil)
	vic := f.browser()
	csrf := vic.login("vic")
	for _, path := range []string{"/hosts", "/hosts/" + mac1} {
		p := vic.get(path)
		if p.code != 200 {
			t.Fatalf("%s: HTTP %d", path, p.code)
		}
		mustNotContain(t, p, `action="/bulk"`, `id="hostform"`, `type="checkbox" name="mac"`)
	}
	p := vic.do("POST", "/hosts/"+mac1, url.Values{"csrf": {csrf}, "image": {"alma"}, "state": {"boot"}})
	if p.code != http.StatusForbidden || !strings.Contains(p.body, "read-only") {
		t.Fatalf("viewer's POST: HTTP %d, want 403:\n%.500s", p.code, p.body)
	}
	p = vic.do("POST", "/bulk", url.Values{"csrf": {csrf}, "image": {"alma"}, "mac": {mac1}, "confirm": {"1"}})
	if p.code != http.StatusForbidden {
		t.Fatalf("viewer's bulk POST: HTTP %d, want 403:\n%.500s", p.code, p.body)
	}
	if f.host(mac1).Image != "deb" {
		t.Fatal("the viewer changed a host")
	}
	if !slices.Contains(f.auditOf(), "vic host.set refused") {
		t.Fatalf("audit lacks vic's refusal: %q", f.auditOf())
	}
}

// TestSiteAdmin: sam manages lab only: she sees lab's hosts, not branch's,
// and may change lab's.
func TestSiteAdmin(t *testing.T) {
	f := newFleet(t, nil, nil)
	sam := f.browser()
	csrf := sam.login("sam")
	p := sam.get("/hosts")
	mustContain(t, p, mac1, mac2, "2 host(s)", `action="/bulk"`)
	mustNotContain(t, p, mac3)
	if p := sam.get("/hosts/" + mac3); p.code != http.StatusForbidden {
		t.Fatalf("another site's host: HTTP %d, want 403", p.code)
	}
	if p := sam.do("POST", "/hosts/"+mac3, url.Values{"csrf": {csrf}, "image": {"alma"}, "state": {"boot"}}); p.code != http.StatusForbidden {
		t.Fatalf("change another site's host: HTTP %d, want 403", p.code)
	}
	if p := sam.do("POST", "/hosts/"+mac1, url.Values{"csrf": {csrf}, "image": {"alma"}, "state": {"boot"}}); p.code != http.StatusSeeOther {
		t.Fatalf("change her site's host: HTTP %d:\n%.800s", p.code, p.body)
	}
	if f.host(mac1).Image != "alma" || f.host(mac3).Image != "deb" {
		t.Fatal("wrong hosts changed")
	}
}

func TestBulk(t *testing.T) {
	f := newFleet(t, nil, nil)
	b := f.browser()
	csrf := b.login("alice")
	// Ticked hosts: a confirmation first, saying how many, changing nothing.
	sel := url.Values{"csrf": {csrf}, "image": {"alma"}, "mac": {mac1, mac3}}
	p := b.do("POST", "/bulk", sel)
	mustContain(t, p, "on <b>2 machine(s)</b>", "change 2 machine(s)")
	if f.host(mac1).Image != "deb" {
		t.Fatal("the confirmation page changed a host")
	}
	sel.Set("confirm", "1")
	p = b.do("POST", "/bulk", sel)
	mustContain(t, p, "Changed 2 host(s).")
	if f.host(mac1).Image != "alma" || f.host(mac3).Image != "alma" || f.host(mac2).Image != "deb" {
		t.Fatal("bulk changed the wrong hosts")
	}
	// Every host matching a search.
	all := url.Values{"csrf": {csrf}, "loader": {"-"}, "image": {"deb"}, "all": {"1"}, "in_site": {"lab"}}
	mustContain(t, b.do("POST", "/bulk", all), "on <b>2 machine(s)</b>: every host matching the search")
	all.Set("confirm", "1")
	mustContain(t, b.do("POST", "/bulk", all), "Changed 2 host(s).")
	if f.host(mac1).Image != "deb" || f.host(mac2).Image != "deb" || f.host(mac3).Image != "alma" {
		t.Fatal("bulk by search changed the wrong hosts")
	}
	for _, c := range []struct {
		name string
		form url.Values
		want string
	}{
		{"nothing selected", url.Values{"csrf": {csrf}, "image": {"alma"}}, "No host selected"},
		{"nothing to assign", url.Values{"csrf": {csrf}, "mac": {mac1}}, "Choose an image, a loader or a site"},
		{"no such image", url.Values{"csrf": {csrf}, "mac": {mac1}, "image": {"nope"}, "confirm": {"1"}}, `The image &#34;nope&#34;`},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := b.do("POST", "/bulk", c.form)
			if p.code != http.StatusUnprocessableEntity {
				t.Fatalf("HTTP %d, want 422:\n%.800s", p.code, p.body)
			}
			mustContain(t, p, c.want)
		})
	}
	// Every host a label search finds.
	byLabel := url.Values{"csrf": {csrf}, "image": {"alma"}, "all": {"1"}, "in_labels": {"labels.rack=r1"}, "confirm": {"1"}}
	mustContain(t, b.do("POST", "/bulk", byLabel), "Changed 2 host(s).")
	if f.host(mac1).Image != "alma" || f.host(mac3).Image != "alma" || f.host(mac2).Image != "deb" {
		t.Fatal("bulk by label changed the wrong hosts")
	}
	// All or nothing: moving web1 and web2 to branch fails on web2, whose
	// reservation is outside branch's subnet; web1, moved first, is put back.
	if p := b.do("POST", "/hosts/"+mac2, url.Values{"csrf": {csrf}, "image": {"deb"}, "state": {"boot"}, "ip": {"10.0.0.9"}, "hostname": {"web2"}}); p.code != http.StatusSeeOther {
		t.Fatalf("reserve an IP: HTTP %d:\n%.800s", p.code, p.body)
	}
	p = b.do("POST", "/bulk", url.Values{"csrf": {csrf}, "site": {"branch"}, "mac": {mac1, mac2}, "confirm": {"1"}})
	if p.code == 200 {
		t.Fatalf("bulk move with a host that cannot move: HTTP 200:\n%.800s", p.body)
	}
	mustContain(t, p, "Nothing changed", mac2)
	if f.host(mac1).Site != "lab" || f.host(mac2).Site != "lab" {
		t.Fatalf("a failed bulk change left hosts moved: %s %s", f.host(mac1).Site, f.host(mac2).Site)
	}
}

// TestForgedRequests: a POST from another site's page (Origin, or the
// browser's Sec-Fetch-Site) is refused before anything else; the panel
// answers only its own names.
func TestForgedRequests(t *testing.T) {
	f := newFleet(t, nil, nil)
	b := f.browser()
	csrf := b.login("alice")
	form := url.Values{"csrf": {csrf}, "image": {"alma"}, "state": {"boot"}}
	for _, hdr := range [][]string{
		{"Origin", "http://evil.example"},
		{"Sec-Fetch-Site", "cross-site"},
	} {
		if p := b.do("POST", "/hosts/"+mac1, form, hdr...); p.code != http.StatusForbidden {
			t.Errorf("%s: HTTP %d, want 403", hdr, p.code)
		}
	}
	if p := b.get("/"); p.code != 200 {
		t.Fatalf("own Host: HTTP %d", p.code)
	}
	if p := b.do("GET", "/", nil, "Host", "evil.example"); p.code != http.StatusMisdirectedRequest {
		t.Errorf("Host evil.example: HTTP %d, want 421", p.code)
	}
	if p := b.do("POST", "/hosts/"+mac1, form, "Host", "evil.example"); p.code != http.StatusMisdirectedRequest {
		t.Errorf("POST with Host evil.example: HTTP %d, want 421", p.code)
	}
	if f.host(mac1).Image != "deb" {
		t.Fatal("a forged request changed the host")
	}
}
