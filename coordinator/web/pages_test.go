package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetboot/fleetboot/coordinator/bootstats"
	"github.com/fleetboot/fleetboot/coordinator/web"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// Discovered machines of the catalogue fleet.
const (
	disc1 = "52:54:00:00:01:01" // lab, Dell, 8 CPUs, 16 GiB
	disc2 = "52:54:00:00:01:02" // lab, QEMU, 2 CPUs
	disc3 = "52:54:00:00:01:03" // branch
)

// catalogue is a fleet with what the catalogue pages show: both sites
// discover unknown machines and three wait; deb has a second revision; a
// template and a policy (matching nothing waiting); edges e1 (fresh) and
// e2 (stale) at lab; boots counted per hour and hit ratios kept.
func catalogue(t *testing.T) *fleet {
	t.Helper()
	boots, err := bootstats.New(prometheus.NewRegistry(), bootstats.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hist := web.NewEdgeHistory()
	f := newFleet(t, nil, func(c *web.Config) { c.Boots, c.EdgeHistory = boots, hist })
	ctx := context.Background()
	for _, s := range []string{"lab", "branch"} {
		st, err := f.svc.GetSite(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		st.Unknown, st.DiscoveryImage = proto.UnknownDiscover, "deb"
		if _, err := f.svc.AddSite(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []struct {
		mac, site string
		facts     proto.Facts
	}{
		{disc1, "lab", proto.Facts{V: 1, BootMAC: disc1, Firmware: "uefi", SecureBoot: true, CPUModel: "Xeon Gold 6338", CPUs: 8, MemoryGiB: 16,
			DMI:   proto.DMIFacts{Vendor: "Dell Inc.", Product: "PowerEdge R650", Serial: "ABC123"},
			NICs:  []proto.NICFacts{{Name: "eno1", MAC: disc1, Link: true, SpeedMbps: 25000}, {Name: "eno2", MAC: "52:54:00:00:02:01"}},
			Disks: []proto.DiskFacts{{Name: "sda", SizeGiB: 447.1, Model: "SSDSC2KG48", Rotational: false}, {Name: "sdb", SizeGiB: 3726, Rotational: true}}}},
		{disc2, "lab", proto.Facts{V: 1, BootMAC: disc2, Firmware: "bios", CPUs: 2, MemoryGiB: 1.95,
			DMI: proto.DMIFacts{Vendor: "QEMU", Product: "Standard PC (Q35 + ICH9, 2009)"}, NICs: []proto.NICFacts{{Name: "ens3", MAC: disc2, Link: true}},
			Disks: []proto.DiskFacts{{Name: "vda", SizeGiB: 20}}}},
		{disc3, "branch", proto.Facts{V: 1, BootMAC: disc3, Firmware: "uefi", CPUs: 4, MemoryGiB: 8, DMI: proto.DMIFacts{Vendor: "Lenovo", Product: "ThinkSystem"}}},
	} {
		data, _ := json.Marshal(m.facts)
		if err := f.svc.RecordFacts(ctx, proto.FactsRequest{V: proto.Version, MAC: m.mac, Site: m.site, Facts: data}); err != nil {
			t.Fatal(err)
		}
	}
	// deb revision 2: a new kernel.
	if _, err := f.svc.AddImage(ctx, proto.Image{Name: "deb", Cmdline: "console=ttyS0", Artifacts: []proto.Artifact{
		{Role: proto.RoleKernel, Name: "vmlinuz", Key: "sha256/" + sha('c'), Size: 14155776, SHA256: sha('c')},
		{Role: proto.RoleInitrd, Name: "initrd.img", Key: "sha256/" + sha('b'), Size: 20, SHA256: sha('b')},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.AddTemplate(ctx, proto.Template{Name: "web", Kind: "cloud-init", Text: "#cloud-config\nhostname: {{.Hostname}}\n# <b>not bold</b>\n"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.AddPolicy(ctx, proto.Policy{Name: "gpu", Match: "facts.cpus=128", Image: "alma", Template: "web", Max: 10, Priority: 5, Labels: map[string]string{"role": "gpu"}}); err != nil {
		t.Fatal(err)
	}
	now := f.clock.now()
	for _, e := range []proto.EdgeStatus{
		{Name: "e1", Site: "lab", Version: "1.2.3", CacheBytes: 1610612736, HitRatio: 0.87, Time: now.Add(-3 * time.Second), IntervalSecs: 5},
		{Name: "e2", Site: "lab", Version: "1.2.0", CacheBytes: 0, HitRatio: 0, Time: now.Add(-2 * time.Hour), IntervalSecs: 5},
		{Name: "b1", Site: "branch", Version: "1.2.3", Time: now, IntervalSecs: 5},
	} {
		if err := f.svc.RecordStatus(ctx, e); err != nil {
			t.Fatal(err)
		}
		hist.Record(now.Add(-time.Hour), proto.EdgeStatus{Name: e.Name, Site: e.Site, HitRatio: 0.5})
		hist.Record(now, e)
	}
	for i, site := range []string{"lab", "lab", "branch"} {
		mac := []string{mac1, mac2, mac3}[i]
		boots.Add(proto.Event{V: 1, Time: now.Add(-time.Duration(i) * time.Hour), Site: site, Edge: "e1", MAC: mac, Kind: proto.EventScript})
	}
	return f
}

// discover reads the discovered machines' MACs from the service.
func (f *fleet) waiting() []string {
	ds, err := f.svc.ListDiscovered(context.Background(), "")
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		out = append(out, d.MAC)
	}
	return out
}

func TestCataloguePages(t *testing.T) {
	f := catalogue(t)
	alice := f.browser()
	alice.login("alice")
	cases := []struct {
		name, path string
		code       int
		want, not  []string
	}{
		{"images", "/images", 200, []string{`<a href="/images/deb">deb</a>`, "13.5 MiB", `<a href="/hosts?image=deb">3</a>`, "alma", "30 B"}, nil},
		{"image", "/images/deb", 200, []string{"Image deb", "revision <b>2</b>", `title="` + sha('c') + `"`, "cccccccccccc…", "2 <b>(current)</b>",
			`<a href="/hosts?image=deb">3 host(s)</a>`, "roll back to revision 1", `id="rollback"`}, []string{"1 <b>(current)</b>"}},
		{"no such image", "/images/nope", 404, []string{"not found"}, nil},
		{"bad image name", "/images/a%20b", 400, []string{"invalid image name"}, nil},
		{"sites", "/sites", 200, []string{`<a href="/sites/lab">lab</a>`, `<a href="/sites/branch">branch</a>`, "(1 stale)", `<svg class="spark"`, "2 in all", `<a href="/hosts?site=lab">2</a>`}, nil},
		{"site", "/sites/lab", 200, []string{"Site lab", "<code>10.0.0.0/24</code>", "10.0.0.100–10.0.0.200", "discover", "(discovery image <a href=\"/images/deb\">deb</a>)",
			`<a href="/discovered?site=lab">2 waiting</a>`, "e1", "3.0 s ago", "1.5 GiB", "87%", "STALE", "2 h 0 min ago", "1 stale", `<path class="line"`,
			"cache hit ratio of edge e1", "2 boot(s) in the last 24 h", "kept in this coordinator's memory"}, []string{"b1"}},
		{"no such site", "/sites/nope", 404, []string{"not found"}, nil},
		{"bad site name", "/sites/a.b", 400, []string{"invalid site name"}, nil},
		{"discovered", "/discovered", 200, []string{"3 machine(s) waiting", disc1, disc2, disc3, "Dell Inc. PowerEdge R650", "16.0 GiB", "sda 447 GiB <span", "3.6 TiB HDD",
			"eno1 <code>" + disc1 + "</code> 25000 Mb/s", "no link", "uefi (Secure Boot)", `title="Xeon Gold 6338"`, "1.9 GiB",
			`<input type="checkbox" name="mac" value="` + disc1 + `"`, `<label for="cimage">image</label>`, `<label for="clabels">labels</label>`, `<label for="csite">site</label>`}, nil},
		{"discovered at a site", "/discovered?site=branch", 200, []string{"1 machine(s) waiting", disc3}, []string{disc1}},
		{"discovered, bad site", "/discovered?site=a.b", 400, []string{"invalid site name"}, nil},
		{"policies", "/policies", 200, []string{`<a href="/policies/gpu">gpu</a>`, "<code>facts.cpus=128</code>", "0 of 10", "enabled", `<a href="/templates/web">web</a>`, "role=gpu",
			`aria-label="disable policy gpu"`}, nil},
		{"policy", "/policies/gpu", 200, []string{"Policy gpu", "0 of at most 10", `<label for="state">state</label>`, "none yet"}, nil},
		{"no such policy", "/policies/nope", 404, []string{"not found"}, nil},
		{"templates", "/templates", 200, []string{`<a href="/templates/web">web</a>`, "cloud-init", `<a href="/policies/gpu">gpu</a>`, "56 B"}, nil},
		{"template", "/templates/web", 200, []string{"kind <b>cloud-init</b>", `<pre class="body"`, "hostname: {{.Hostname}}", "# &lt;b&gt;not bold&lt;/b&gt;"}, []string{"<b>not bold</b>"}},
		{"no such template", "/templates/nope", 404, []string{"not found"}, nil},
		{"audit", "/audit", 200, []string{"Audit log", `<label for="awho">who</label>`}, nil},
		{"audit, bad window", "/audit?since=2y", 400, []string{`<span class="err" id="since-err">`, "is not one of the windows offered"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := alice.get(c.path)
			if p.code != c.code {
				t.Fatalf("HTTP %d, want %d:\n%.1500s", p.code, c.code, p.body)
			}
			mustContain(t, p, c.want...)
			mustNotContain(t, p, c.not...)
		})
	}
	// Every page links to every other, and the skip link leads to the page.
	p := alice.get("/images")
	for _, l := range []string{"/", "/hosts", "/discovered", "/sites", "/policies", "/templates", "/audit"} {
		mustContain(t, p, `<a href="`+l+`">`)
	}
	mustContain(t, p, `<a href="/images" aria-current="page">images</a>`, `<a class="skip" href="#main">`, `<main id="main">`)
}

// TestPagesRefuseOthers: the Host check, the login and the CSRF token
// guard every new page and form.
func TestPagesRefuseOthers(t *testing.T) {
	f := catalogue(t)
	anon := f.browser()
	gets := []string{"/images", "/images/deb", "/sites", "/sites/lab", "/discovered", "/policies", "/policies/gpu", "/templates", "/templates/web", "/audit"}
	posts := []string{"/images/deb/rollback", "/discovered", "/policies/gpu/enable"}
	for _, path := range gets {
		if p := anon.get(path); p.code != http.StatusSeeOther || !strings.HasPrefix(p.loc, "/login?next=") {
			t.Errorf("GET %s without a session: HTTP %d to %q, want 303 to the login page", path, p.code, p.loc)
		}
	}
	for _, path := range posts {
		if p := anon.do("POST", path, url.Values{"csrf": {"x"}}); p.code != http.StatusUnauthorized {
			t.Errorf("POST %s without a session: HTTP %d, want 401", path, p.code)
		}
	}
	alice := f.browser()
	csrf := alice.login("alice")
	for _, path := range gets {
		if p := alice.do("GET", path, nil, "Host", "evil.example"); p.code != http.StatusMisdirectedRequest {
			t.Errorf("GET %s for Host evil.example: HTTP %d, want 421", path, p.code)
		}
	}
	other := csrfOf(t, f.browser().get("/login"))
	for _, path := range posts {
		form := url.Values{"csrf": {csrf}, "state": {"disabled"}, "image": {"alma"}, "mac": {disc1}, "confirm": {"1"}}
		if p := alice.do("POST", path, form, "Host", "evil.example"); p.code != http.StatusMisdirectedRequest {
			t.Errorf("POST %s for Host evil.example: HTTP %d, want 421", path, p.code)
		}
		if p := alice.do("POST", path, form, "Origin", "http://evil.example"); p.code != http.StatusForbidden {
			t.Errorf("POST %s from another origin: HTTP %d, want 403", path, p.code)
		}
		for _, tok := range []string{"", other} {
			form.Set("csrf", tok)
			if p := alice.do("POST", path, form); p.code != http.StatusForbidden || !strings.Contains(p.body, "token is missing or stale") {
				t.Errorf("POST %s with token %q: HTTP %d, want 403:\n%.300s", path, tok, p.code, p.body)
			}
		}
	}
	// Nothing changed.
	if pv, err := f.svc.GetPolicy(context.Background(), "gpu"); err != nil || pv.Disabled {
		t.Fatalf("policy after refused forms: %+v %v", pv, err)
	}
	if im, _ := f.svc.GetImage(context.Background(), "deb"); im.Revision != 2 {
		t.Fatalf("deb after refused forms: revision %d", im.Revision)
	}
	if w := f.waiting(); len(w) != 3 {
		t.Fatalf("waiting after refused forms: %v", w)
	}
}

func TestImageRollback(t *testing.T) {
	f := catalogue(t)
	for _, name := range []string{"vic", "sam"} {
		b := f.browser()
		csrf := b.login(name)
		p := b.get("/images/deb")
		if p.code != 200 {
			t.Fatalf("%s: HTTP %d", name, p.code)
		}
		mustContain(t, p, "revision <b>2</b>")
		mustNotContain(t, p, `id="rollback"`, "roll back to")
		if p := b.do("POST", "/images/deb/rollback", url.Values{"csrf": {csrf}}); p.code != http.StatusForbidden {
			t.Fatalf("%s's rollback: HTTP %d, want 403:\n%.500s", name, p.code, p.body)
		}
		if !slices.Contains(f.auditOf(), name+" image.rollback refused") {
			t.Fatalf("audit lacks %s's refusal: %q", name, f.auditOf())
		}
	}
	alice := f.browser()
	csrf := alice.login("alice")
	p := alice.do("POST", "/images/deb/rollback", url.Values{"csrf": {csrf}})
	if p.code != http.StatusSeeOther || p.loc != "/images/deb?rolledback=1" {
		t.Fatalf("rollback: HTTP %d to %q:\n%.800s", p.code, p.loc, p.body)
	}
	if im, _ := f.svc.GetImage(context.Background(), "deb"); im.CurrentRevision() != 1 {
		t.Fatalf("deb after the rollback: revision %d, want 1", im.CurrentRevision())
	}
	mustContain(t, alice.get(p.loc), "Rolled back: revision 1 is current.", "1 <b>(current)</b>", "No revision before 1")
	if !slices.Contains(f.auditOf(), "alice image.rollback accepted") {
		t.Fatalf("audit lacks alice's rollback: %q", f.auditOf())
	}
	// Nothing before revision 1: the service's refusal stands next to the button.
	p = alice.do("POST", "/images/deb/rollback", url.Values{"csrf": {csrf}})
	if p.code != http.StatusConflict {
		t.Fatalf("second rollback: HTTP %d, want 409:\n%.800s", p.code, p.body)
	}
	mustContain(t, p, `<span class="err" id="rollback-err" role="alert">`, "no revision before 1")
}

func TestSitesScope(t *testing.T) {
	f := catalogue(t)
	sam := f.browser()
	sam.login("sam")
	p := sam.get("/sites")
	mustContain(t, p, `<a href="/sites/lab">lab</a>`)
	mustNotContain(t, p, `/sites/branch`)
	if p := sam.get("/sites/branch"); p.code != http.StatusForbidden {
		t.Fatalf("sam on another site's page: HTTP %d, want 403", p.code)
	}
	mustContain(t, sam.get("/sites/lab"), "e1", "STALE")
	p = sam.get("/discovered")
	mustContain(t, p, disc1, disc2, "2 machine(s) waiting")
	mustNotContain(t, p, disc3)
	if p := sam.get("/discovered?site=branch"); p.code != http.StatusForbidden {
		t.Fatalf("sam on another site's discovered: HTTP %d, want 403", p.code)
	}
	// The images page counts only her site's hosts.
	mustContain(t, sam.get("/images"), `<a href="/hosts?image=deb">2</a>`)
	// No audit log for her, and no link to it.
	if p := sam.get("/audit"); p.code != http.StatusForbidden {
		t.Fatalf("sam's audit: HTTP %d, want 403", p.code)
	}
	mustNotContain(t, sam.get("/sites"), `href="/audit"`)
	vic := f.browser()
	vic.login("vic")
	p = vic.get("/sites")
	mustContain(t, p, "/sites/lab", "/sites/branch")
	for _, path := range []string{"/sites", "/sites/lab", "/images", "/images/deb", "/discovered", "/policies", "/policies/gpu", "/templates", "/audit"} {
		p := vic.get(path)
		if p.code != 200 {
			t.Fatalf("vic %s: HTTP %d", path, p.code)
		}
		// The viewer's only form is the logout's (and the searches).
		mustNotContain(t, p, `method="post" action="/images`, `method="post" action="/discovered"`, `method="post" action="/policies`, `type="checkbox" name="mac"`)
	}
}

func TestClaim(t *testing.T) {
	f := catalogue(t)
	alice := f.browser()
	csrf := alice.login("alice")
	form := func(kv ...string) url.Values {
		v := url.Values{"csrf": {csrf}, "image": {"alma"}, "mac": {disc1, disc2}}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				v.Del(kv[i])
				continue
			}
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
		{"no image", form("image", ""), 422, "image-err", "Choose the image the machines boot."},
		{"no such image", form("image", "nope"), 422, "image-err", "nope"},
		{"bad labels", form("labels", "rack"), 422, "labels-err", `invalid label "rack": want KEY=VALUE`},
		{"bad label value", form("labels", "rack=a b c=d e"), 422, "labels-err", "want KEY=VALUE"},
		{"no such site", form("site", "nowhere"), 422, "site-err", "nowhere"},
		{"nothing ticked", form("mac", ""), 422, "mac-err", "Tick the machines to claim."},
		{"not waiting", form("mac", mac1), 422, "mac-err", mac1 + " no longer waiting"},
		{"bad MAC", form("mac", "zz"), 422, "mac-err", `invalid MAC address "zz"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := alice.do("POST", "/discovered", c.form)
			if p.code != c.code {
				t.Fatalf("HTTP %d, want %d:\n%.1500s", p.code, c.code, p.body)
			}
			mustContain(t, p, `id="`+c.field+`"`, c.want)
			if c.field != "mac-err" {
				mustContain(t, p, `aria-invalid="true"`)
			}
			// The form keeps what was chosen.
			if slices.Contains(c.form["mac"], disc1) {
				mustContain(t, p, `value="`+disc1+`" id="sel-`+disc1+`" aria-label="select `+disc1+`" checked`)
			}
			if w := f.waiting(); len(w) != 3 {
				t.Fatalf("a refused claim changed the waiting machines: %v", w)
			}
		})
	}
	// A confirmation first, saying how many, changing nothing.
	p := alice.do("POST", "/discovered", form("labels", "rack=r9, role=web"))
	if p.code != 200 {
		t.Fatalf("review: HTTP %d:\n%.1500s", p.code, p.body)
	}
	mustContain(t, p, "This makes <b>2 machine(s)</b> hosts with image <b>alma</b>", "claim 2 machine(s)", `name="confirm" value="1"`)
	if w := f.waiting(); len(w) != 3 {
		t.Fatalf("the confirmation claimed: %v", w)
	}
	confirm := form("labels", "rack=r9, role=web", "confirm", "1")
	p = alice.do("POST", "/discovered", confirm)
	if p.code != 200 {
		t.Fatalf("claim: HTTP %d:\n%.1500s", p.code, p.body)
	}
	mustContain(t, p, "Claimed 2 machine(s)")
	for _, m := range []string{disc1, disc2} {
		h := f.host(m)
		if h.Image != "alma" || h.Site != "lab" || h.Labels["rack"] != "r9" || h.Labels["role"] != "web" || h.State != proto.StateBoot {
			t.Fatalf("claimed host %s: %+v", m, h)
		}
	}
	if w := f.waiting(); !slices.Equal(w, []string{disc3}) {
		t.Fatalf("waiting after the claim: %v", w)
	}
	if !slices.Contains(f.auditOf(), "alice host.import accepted") {
		t.Fatalf("audit lacks alice's claim: %q", f.auditOf())
	}
	// The same form again: they are hosts now, so nothing is claimed.
	p = alice.do("POST", "/discovered", confirm)
	if p.code != 422 {
		t.Fatalf("claim of hosts: HTTP %d:\n%.1500s", p.code, p.body)
	}
	mustContain(t, p, "no longer waiting")
	waitfor.True(t, "the claimed hosts in the hosts page", func() bool {
		return strings.Contains(alice.get("/hosts?image=alma").body, disc2)
	})
}

func TestClaimRefusals(t *testing.T) {
	f := catalogue(t)
	vic := f.browser()
	csrf := vic.login("vic")
	p := vic.get("/discovered")
	mustContain(t, p, disc1)
	mustNotContain(t, p, `id="claim"`, `type="checkbox"`, `id="cimage"`)
	p = vic.do("POST", "/discovered", url.Values{"csrf": {csrf}, "image": {"alma"}, "mac": {disc1}, "confirm": {"1"}})
	if p.code != http.StatusForbidden || !strings.Contains(p.body, "read-only") {
		t.Fatalf("viewer's claim: HTTP %d, want 403:\n%.500s", p.code, p.body)
	}
	if !slices.Contains(f.auditOf(), "vic host.import refused") {
		t.Fatalf("audit lacks vic's refusal: %q", f.auditOf())
	}
	// sam claims at lab only: branch's machine is not hers to see, nor is
	// branch hers to claim at.
	sam := f.browser()
	csrf = sam.login("sam")
	p = sam.do("POST", "/discovered", url.Values{"csrf": {csrf}, "image": {"alma"}, "mac": {disc3}, "confirm": {"1"}})
	if p.code != 422 || !strings.Contains(p.body, disc3+" no longer waiting") {
		t.Fatalf("sam claims a branch machine: HTTP %d:\n%.1000s", p.code, p.body)
	}
	p = sam.do("POST", "/discovered", url.Values{"csrf": {csrf}, "image": {"alma"}, "mac": {disc1}, "site": {"branch"}, "confirm": {"1"}})
	if p.code != http.StatusUnprocessableEntity || !strings.Contains(p.body, `<span class="err" id="site-err">`) || !strings.Contains(p.body, "site lab") {
		t.Fatalf("sam claims at branch: HTTP %d, want 422 with the refusal next to the site:\n%.1500s", p.code, p.body)
	}
	if w := f.waiting(); len(w) != 3 {
		t.Fatalf("refused claims changed the waiting machines: %v", w)
	}
	p = sam.do("POST", "/discovered", url.Values{"csrf": {csrf}, "image": {"alma"}, "mac": {disc1}, "confirm": {"1"}})
	if p.code != 200 || !strings.Contains(p.body, "Claimed 1 machine(s)") {
		t.Fatalf("sam claims at lab: HTTP %d:\n%.1000s", p.code, p.body)
	}
	if h := f.host(disc1); h.Site != "lab" || h.Image != "alma" {
		t.Fatalf("sam's claim: %+v", h)
	}
}

func TestPolicyEnable(t *testing.T) {
	f := catalogue(t)
	disabled := func() bool {
		pv, err := f.svc.GetPolicy(context.Background(), "gpu")
		if err != nil {
			t.Fatal(err)
		}
		return pv.Disabled
	}
	for _, name := range []string{"vic", "sam"} {
		b := f.browser()
		csrf := b.login(name)
		for _, path := range []string{"/policies", "/policies/gpu"} {
			mustNotContain(t, b.get(path), `action="/policies/gpu/enable"`)
		}
		if p := b.do("POST", "/policies/gpu/enable", url.Values{"csrf": {csrf}, "state": {"disabled"}}); p.code != http.StatusForbidden {
			t.Fatalf("%s disables: HTTP %d, want 403:\n%.500s", name, p.code, p.body)
		}
		if disabled() {
			t.Fatalf("%s disabled the policy", name)
		}
	}
	alice := f.browser()
	csrf := alice.login("alice")
	p := alice.do("POST", "/policies/gpu/enable", url.Values{"csrf": {csrf}, "state": {"off"}})
	if p.code != http.StatusUnprocessableEntity {
		t.Fatalf("bad state: HTTP %d:\n%.800s", p.code, p.body)
	}
	mustContain(t, p, `aria-describedby="state-err"`, `<span class="err" id="state-err">choose enabled or disabled</span>`)
	// From the list's button.
	p = alice.do("POST", "/policies/gpu/enable", url.Values{"csrf": {csrf}, "state": {"disabled"}, "from": {"list"}})
	if p.code != http.StatusSeeOther || p.loc != "/policies" || !disabled() {
		t.Fatalf("disable: HTTP %d to %q, disabled %v", p.code, p.loc, disabled())
	}
	mustContain(t, alice.get("/policies"), "disabled", `aria-label="enable policy gpu"`)
	// From the policy's page.
	p = alice.do("POST", "/policies/gpu/enable", url.Values{"csrf": {csrf}, "state": {"enabled"}})
	if p.code != http.StatusSeeOther || p.loc != "/policies/gpu?saved=1" || disabled() {
		t.Fatalf("enable: HTTP %d to %q, disabled %v", p.code, p.loc, disabled())
	}
	mustContain(t, alice.get(p.loc), "Saved.", "<option selected>enabled</option>")
	if p := alice.do("POST", "/policies/nope/enable", url.Values{"csrf": {csrf}, "state": {"enabled"}}); p.code != http.StatusNotFound {
		t.Fatalf("no such policy: HTTP %d", p.code)
	}
	n := 0
	for _, a := range f.auditOf() {
		if a == "alice policy.enable accepted" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("audit has %d of alice's policy changes, want 2: %q", n, f.auditOf())
	}
}

func TestAuditPage(t *testing.T) {
	f := newFleet(t, nil, nil)
	alice := f.browser()
	csrf := alice.login("alice")
	// 55 changes by alice, then one refusal of vic's.
	for i := range 55 {
		hn := "web" + strings.Repeat("x", i%3) + string(rune('a'+i%26))
		if p := alice.do("POST", "/hosts/"+mac1, url.Values{"csrf": {csrf}, "image": {"deb"}, "state": {"boot"}, "hostname": {hn}}); p.code != http.StatusSeeOther {
			t.Fatalf("change %d: HTTP %d:\n%.500s", i, p.code, p.body)
		}
	}
	vic := f.browser()
	vcsrf := vic.login("vic")
	vic.do("POST", "/hosts/"+mac1, url.Values{"csrf": {vcsrf}, "image": {"alma"}, "state": {"boot"}})
	p := vic.get("/audit")
	if p.code != 200 {
		t.Fatalf("viewer's audit: HTTP %d", p.code)
	}
	mustContain(t, p, "56 record(s)", "1–50 shown", "page 1 of 2", `rel="next"`, "refused</span>: ", "read-only")
	// Newest first: vic's refusal is the first row.
	if i, j := strings.Index(p.body, ">vic</a>"), strings.Index(p.body, ">alice</a>"); i < 0 || j < 0 || i > j {
		t.Fatalf("vic's refusal (at %d) not before alice's changes (at %d)", i, j)
	}
	mustContain(t, vic.get("/audit?page=2"), "51–56 shown", "page 2 of 2", `rel="prev"`)
	p = vic.get("/audit?who=ALICE")
	mustContain(t, p, "55 record(s) by ALICE", "host.set")
	mustNotContain(t, p, ">vic</a>")
	mustContain(t, vic.get("/audit?who=nobody"), "0 record(s)", "no records")
	mustContain(t, vic.get("/audit?since=1h&page=99"), "page 2 of 2")
}
