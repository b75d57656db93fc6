package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"

	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// TestCataloguePagesInBrowser visits the images, sites, discovered,
// policies, templates and audit pages as an admin, at 1280×800 and at a
// phone's 390×844, against a real coordinator that an enrolled edge
// reports heartbeats, a boot and discovered machines to; then claims two
// discovered machines with the keyboard and mouse, and the CLI sees them.
func TestCataloguePagesInBrowser(t *testing.T) {
	c := startCoordinator(t)
	dir := t.TempDir()
	for _, f := range []string{"vmlinuz", "vmlinuz2", "initrd.img"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("not a real "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, img := range []struct{ name, kernel string }{{"deb", "vmlinuz"}, {"alma", "vmlinuz"}, {"deb", "vmlinuz2"}} {
		c.cli(t, nil, "image", "add", img.name, "--kernel", filepath.Join(dir, img.kernel), "--initrd", filepath.Join(dir, "initrd.img"))
	}
	c.cli(t, nil, "site", "add", "lab", "--subnet", "10.0.0.0/24", "--range", "10.0.0.100-10.0.0.200", "--unknown", "discover", "--discovery-image", "deb")
	c.cli(t, nil, "host", "set", mac, "--site", "lab", "--image", "deb", "--hostname", "web1")
	tmpl := filepath.Join(dir, "web.tmpl")
	if err := os.WriteFile(tmpl, []byte("#cloud-config\nhostname: {{.Hostname}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.cli(t, nil, "template", "add", "web", "--kind", "cloud-init", "--file", tmpl)
	c.cli(t, nil, "policy", "add", "gpu", "--match", "facts.cpus=128", "--image", "alma", "--template", "web", "--max", "4", "--priority", "5")
	c.cli(t, map[string]string{"FLEETBOOT_WEB_PASSWORD": password}, "user", "add", "alice", "--role", "admin", "--web", "--out", filepath.Join(dir, "alice.creds"))

	// An enrolled edge: heartbeats, one boot, three discovered machines.
	c.cli(t, nil, "edge", "add", "lab", "e1", "--out", filepath.Join(dir, "e1.creds"))
	nc, err := nats.Connect(c.nats, nats.UserCredentials(filepath.Join(dir, "e1.creds")), nats.CustomInboxPrefix(auth.EdgeInboxPrefix("e1")))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, hit := range []float64{0.4, 0.82} {
		st := proto.EdgeStatus{V: proto.Version, Name: "e1", Site: "lab", Version: "test", CacheBytes: 3 << 30, HitRatio: hit, Time: time.Now(), IntervalSecs: 3600}
		data, _ := json.Marshal(st)
		if err := nc.Publish(proto.StatusSubject("lab", "e1"), data); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	for i, kind := range []string{proto.EventDHCPDiscover, proto.EventDHCPAck, proto.EventScript} {
		ev := proto.Event{V: proto.Version, ID: fmt.Sprintf("pages-test-%d", i), Time: now.Add(time.Duration(i) * time.Second), Site: "lab", Edge: "e1", MAC: mac, Kind: kind, Detail: map[string]string{"xid": "1"}}
		data, _ := json.Marshal(ev)
		if err := nc.Publish(proto.EventSubject("lab", "e1", mac), data); err != nil {
			t.Fatal(err)
		}
	}
	discovered := []string{"52:54:00:ab:cd:11", "52:54:00:ab:cd:12", "52:54:00:ab:cd:13"}
	for i, m := range discovered {
		facts, _ := json.Marshal(proto.Facts{V: 1, BootMAC: m, Firmware: "uefi", CPUs: 4 * (i + 1), MemoryGiB: float64(8 * (i + 1)),
			DMI:   proto.DMIFacts{Vendor: "Supermicro", Product: fmt.Sprintf("SYS-%d", 1000+i)},
			NICs:  []proto.NICFacts{{Name: "eno1", MAC: m, Link: true, SpeedMbps: 10000}},
			Disks: []proto.DiskFacts{{Name: "nvme0n1", SizeGiB: 894.3, Model: "Samsung PM9A3"}}})
		req, _ := json.Marshal(proto.FactsRequest{V: proto.Version, MAC: m, Facts: facts})
		msg, err := nc.Request(proto.APISubject(proto.APIHostFacts), req, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var rep proto.Reply
		if err := json.Unmarshal(msg.Data, &rep); err != nil || rep.Error != "" {
			t.Fatalf("facts of %s: %v %s", m, err, rep.Error)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	tab := browserCtx(t)
	ctx := tab()
	login(t, ctx, c.panel, "alice")
	text := func(t *testing.T) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`main`)))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	visit := func(t *testing.T, path string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(c.panel+path), chromedp.WaitVisible(chromedp.CSS(`main h1`))); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	pages := []struct {
		path, shot string
		want       []string
	}{
		{"/images", "images", []string{"deb", "alma", "39 B"}},
		{"/images/deb", "image", []string{"Image deb", "(current)", "roll back to revision 1", "vmlinuz"}},
		{"/sites", "sites", []string{"lab", "discover", "10.0.0.0/24"}},
		{"/sites/lab", "site", []string{"Site lab", "e1", "3.0 GiB", "82%", "ok", "1 boot(s) in the last 24 h", "3 waiting"}},
		{"/discovered", "discovered", []string{"3 machine(s) waiting", "Supermicro SYS-1000", "894 GiB", "16.0 GiB", "eno1", "10000 Mb/s"}},
		{"/policies", "policies", []string{"gpu", "facts.cpus=128", "0 of 4", "enabled"}},
		{"/policies/gpu", "policy", []string{"Policy gpu", "0 of at most 4"}},
		{"/templates", "templates", []string{"web", "cloud-init", "gpu"}},
		{"/templates/web", "template", []string{"hostname: {{.Hostname}}"}},
		{"/audit", "audit", []string{"policy.add", "template.add", "accepted"}},
	}
	t.Run("desktop", func(t *testing.T) {
		for _, p := range pages {
			visit(t, p.path)
			if p.path == "/sites/lab" || p.path == "/sites" {
				// Heartbeats and the boot's events arrive asynchronously.
				waitfor.True(t, "the edge's heartbeat and boot on "+p.path, func() bool {
					visit(t, p.path)
					s := text(t)
					return strings.Contains(s, "82%") || p.path == "/sites" && strings.Contains(s, "1 in all")
				})
			}
			s := text(t)
			for _, w := range p.want {
				if !strings.Contains(s, w) {
					t.Errorf("%s lacks %q:\n%s", p.path, w, s)
				}
			}
			shot(t, ctx, "pages-"+p.shot+".png", p.shot == "site" || p.shot == "discovered")
		}
	})

	t.Run("phone", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2))); err != nil {
			t.Fatal(err)
		}
		defer chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800))
		for _, p := range pages {
			visit(t, p.path)
			// Wide tables scroll inside their box; the page itself does not
			// scroll sideways.
			over, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth - window.innerWidth`))
			if err != nil {
				t.Fatal(err)
			}
			if over > 0 {
				t.Errorf("%s at 390 px is %d px wider than the screen", p.path, over)
			}
			shot(t, ctx, "pages-"+p.shot+"-phone.png", false)
		}
	})

	t.Run("claim", func(t *testing.T) {
		visit(t, "/discovered")
		err := chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS(`input[value="`+discovered[0]+`"]`)),
			chromedp.Click(chromedp.CSS(`input[value="`+discovered[2]+`"]`)),
			chromedp.SetValue(chromedp.CSS(`#cimage`), "alma"),
			chromedp.SendKeys(chromedp.CSS(`#clabels`), "rack=r7"),
			chromedp.Submit(chromedp.CSS(`#claim`)),
			chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		)
		if err != nil {
			t.Fatal(err)
		}
		if s := text(t); !strings.Contains(s, "This makes 2 machine(s) hosts with image alma") {
			t.Fatalf("the confirmation says:\n%s", s)
		}
		shot(t, ctx, "pages-claim-confirm.png", false)
		// The confirm button, by keyboard: focus it and press Enter.
		err = chromedp.Do(ctx,
			chromedp.Focus(chromedp.CSS(`#confirm button`)),
			chromedp.KeyEvent("\r"),
			chromedp.WaitVisible(chromedp.CSS(`.saved`)),
		)
		if err != nil {
			t.Fatal(err)
		}
		if s := text(t); !strings.Contains(s, "Claimed 2 machine(s)") {
			t.Fatalf("after the claim:\n%s", s)
		}
		shot(t, ctx, "pages-claimed.png", false)
		for _, m := range []string{discovered[0], discovered[2]} {
			show := c.cli(t, nil, "host", "show", m, "-o", "json")
			if !strings.Contains(show, `"image": "alma"`) || !strings.Contains(show, `"rack": "r7"`) {
				t.Fatalf("host show %s after the claim:\n%s", m, show)
			}
		}
		if ls := c.cli(t, nil, "host", "ls", "--state", "discovered"); !strings.Contains(ls, discovered[1]) || strings.Contains(ls, discovered[0]) {
			t.Fatalf("still discovered after the claim:\n%s", ls)
		}
		if audit := c.cli(t, nil, "audit", "-o", "json"); !strings.Contains(audit, `"action": "host.import"`) {
			t.Fatalf("the audit log lacks the claim:\n%s", audit)
		}
	})
}

// shot saves the page as a PNG test artifact and, with -docs and toDocs,
// as docs/NAME without the "pages-" prefix (the README's).
func shot(t *testing.T, ctx context.Context, name string, toDocs bool) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
	if *docs && toDocs {
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "panel-"+strings.TrimPrefix(name, "pages-")), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
