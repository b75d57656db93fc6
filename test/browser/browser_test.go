// Package browser drives the web panel in headless Chromium (Debian's
// chromium, through chromedp) against a real coordinator with --auth and a
// real edge: a person logs in, finds a host by MAC, changes its image, and
// the CLI and the edge's next script show it; the host's page, left open,
// draws the boot the edge then serves without a reload; a viewer sees no
// edit control and a form she forges is refused.
package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"

	"github.com/fleetboot/fleetboot/cmd/fleetboot/cli"
	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

var docs = flag.Bool("docs", false, "also copy the screenshots the README shows into docs/")

const (
	mac      = "52:54:00:ab:cd:01"
	recorded = "52:54:00:ab:cd:03" // a host with a recorded boot, which the edge never serves
	password = "correct horse battery"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// coord is a coordinator with --auth run in the test process, with its
// panel on loopback.
type coord struct {
	panel, nats, creds, store string
}

func startCoordinator(t *testing.T) coord {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(ctx, cli.Invocation{Version: "test", Env: cli.EnvMap(nil), Stdout: io.Discard, Stderr: &stderr, Args: []string{
			"coordinator", "--auth", "--data", filepath.Join(dir, "data"), "--store", "dir://" + filepath.Join(dir, "artifacts"),
			"--nats-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	panelRE := regexp.MustCompile(`msg="web panel serving" url=(http://127\.0\.0\.1:\d+)`)
	natsRE := regexp.MustCompile(`msg="coordinator API serving".* nats=(nats://127\.0\.0\.1:\d+)`)
	var c coord
	waitfor.True(t, "the coordinator and its panel", func() bool {
		select {
		case code := <-done:
			t.Fatalf("coordinator ended with code %d: %s", code, stderr.String())
		default:
		}
		p, n := panelRE.FindStringSubmatch(stderr.String()), natsRE.FindStringSubmatch(stderr.String())
		if p == nil || n == nil {
			return false
		}
		c.panel, c.nats = p[1], n[1]
		return true
	})
	c.creds = filepath.Join(dir, "data", "admin.creds")
	c.store = "dir://" + filepath.Join(dir, "artifacts")
	return c
}

// cli runs a fleetboot client command as the first admin.
func (c coord) cli(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	if env == nil {
		env = map[string]string{}
	}
	env["FLEETBOOT_NATS"], env["FLEETBOOT_CREDS"] = c.nats, c.creds
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), cli.Invocation{Version: "test", Args: args, Env: cli.EnvMap(env), Stdout: &out, Stderr: &errb})
	if code != 0 {
		t.Fatalf("fleetboot %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
	}
	return out.String()
}

// edge is a real edge agent of site lab, run in the test process with
// its enrolled credentials: HTTP on loopback, no DHCP (no --interface), no
// TFTP.
type edge struct{ url string }

func (c coord) startEdge(t *testing.T, dir, name string) edge {
	t.Helper()
	creds := filepath.Join(dir, name+".creds")
	c.cli(t, nil, "edge", "add", "lab", name, "--out", creds)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(ctx, cli.Invocation{Version: "test", Env: cli.EnvMap(nil), Stdout: io.Discard, Stderr: &stderr, Args: []string{
			"edge", "--nats", c.nats, "--creds", creds, "--site", "lab", "--name", name,
			"--http-listen", "127.0.0.1:0", "--tftp-listen", "", "--drain", "1s",
			"--state-dir", t.TempDir(), "--cache-dir", t.TempDir(), "--boot-dir", t.TempDir(), "--store", c.store}})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	re := regexp.MustCompile(`msg="edge serving".* http=(127\.0\.0\.1:\d+)`)
	var e edge
	waitfor.OK(t, "the edge serving", func() error {
		select {
		case code := <-done:
			t.Fatalf("edge ended with code %d: %s", code, stderr.String())
		default:
		}
		m := re.FindStringSubmatch(stderr.String())
		if m == nil {
			return errors.New(stderr.String())
		}
		e.url = "http://" + m[1]
		return nil
	})
	return e
}

// get fetches a URL of the edge as a booting machine would, and returns
// the body.
func (e edge) get(t *testing.T, path string) (string, error) {
	t.Helper()
	resp, err := http.Get(e.url + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: HTTP %d: %s", path, resp.StatusCode, b)
	}
	return string(b), nil
}

// browserCtx starts one headless Chromium for the test and returns a tab
// factory: each person gets her own incognito-like context (own cookies).
func browserCtx(t *testing.T) func() context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("the browser tests need Debian's chromium (test/deps.sh installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.WindowSize(1280, 800),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelA)
	root, cancelR := chromedp.NewContext(actx)
	t.Cleanup(cancelR)
	if err := chromedp.Do(root); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return func() context.Context {
		ctx, cancel := chromedp.NewContext(root, chromedp.WithNewBrowserContext())
		t.Cleanup(cancel)
		ctx, cancelT := context.WithTimeout(ctx, 2*time.Minute)
		t.Cleanup(cancelT)
		return ctx
	}
}

// screenshot saves the page as a PNG test artifact (and, with -docs, the
// README's in docs/).
func screenshot(t *testing.T, ctx context.Context, name string) {
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
	if *docs && name != "viewer-forged.png" {
		if err := os.WriteFile(filepath.Join("..", "..", "docs", name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func login(t *testing.T, ctx context.Context, panel, name string) {
	t.Helper()
	err := chromedp.Do(ctx,
		chromedp.Navigate(panel+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#name`)),
		chromedp.SendKeys(chromedp.CSS(`#name`), name),
		chromedp.SendKeys(chromedp.CSS(`#password`), password+"\n"), // Enter submits: keyboard only
		chromedp.WaitVisible(chromedp.CSS(`nav .who`)),
	)
	if err != nil {
		t.Fatalf("log in as %s: %v", name, err)
	}
}

func TestPanelInBrowser(t *testing.T) {
	c := startCoordinator(t)
	dir := t.TempDir()
	// Not a real kernel and initrd, but of their sizes: the waterfall
	// draws each transfer with its bytes and rate.
	for f, n := range map[string]int{"vmlinuz": 8 << 20, "initrd.img": 24 << 20} {
		if err := os.WriteFile(filepath.Join(dir, f), bytes.Repeat([]byte(f[:1]), n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c.cli(t, nil, "site", "add", "lab", "--subnet", "10.0.0.0/24", "--range", "10.0.0.100-10.0.0.200")
	for _, img := range []string{"deb", "alma"} {
		c.cli(t, nil, "image", "add", img, "--kernel", filepath.Join(dir, "vmlinuz"), "--initrd", filepath.Join(dir, "initrd.img"))
	}
	c.cli(t, nil, "host", "set", mac, "--site", "lab", "--image", "deb", "--hostname", "web1")
	c.cli(t, nil, "host", "set", "52:54:00:ab:cd:02", "--site", "lab", "--image", "deb", "--hostname", "web2")
	c.cli(t, nil, "host", "set", recorded, "--site", "lab", "--image", "alma", "--hostname", "web3")
	pw := map[string]string{"FLEETBOOT_WEB_PASSWORD": password}
	c.cli(t, pw, "user", "add", "alice", "--role", "admin", "--web", "--out", filepath.Join(dir, "alice.creds"))
	c.cli(t, pw, "user", "add", "vic", "--role", "viewer", "--web", "--out", filepath.Join(dir, "vic.creds"))
	e := c.startEdge(t, dir, "e1")
	waitfor.OK(t, "the edge's script for the host, with its first image", func() error {
		return scriptNames(t, e, mac, "/artifacts/deb/vmlinuz?mac="+mac)
	})
	tab := browserCtx(t)

	var stolen string // alice's host form, as HTML
	t.Run("admin changes an image", func(t *testing.T) {
		ctx := tab()
		login(t, ctx, c.panel, "alice")
		err := chromedp.Do(ctx,
			chromedp.Navigate(c.panel+"/hosts"),
			chromedp.SendKeys(chromedp.CSS(`#q`), "52-54-00-ab-cd-01\n"),
		)
		if err != nil {
			t.Fatal(err)
		}
		// The unsearched page lists the host too: wait for the answer.
		waitfor.True(t, "the search's answer", func() bool {
			ok, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`location.search.includes('q=') && document.readyState === 'complete'`))
			return ok
		})
		text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`main`)))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text, "1 host(s)") || strings.Contains(text, "52:54:00:ab:cd:02") {
			t.Fatalf("search by MAC found:\n%s", text)
		}
		screenshot(t, ctx, "panel-hosts.png")
		err = chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS(`a[href="/hosts/`+mac+`"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#hostform`)),
		)
		if err != nil {
			t.Fatal(err)
		}
		if stolen, err = chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS(`#hostform`))); err != nil {
			t.Fatal(err)
		}
		err = chromedp.Do(ctx,
			chromedp.SetValue(chromedp.CSS(`#image`), "alma"),
			chromedp.Submit(chromedp.CSS(`#hostform`)),
			chromedp.WaitVisible(chromedp.CSS(`.saved`)),
		)
		if err != nil {
			t.Fatal(err)
		}
		show := c.cli(t, nil, "host", "show", mac, "-o", "json")
		if !strings.Contains(show, `"image": "alma"`) {
			t.Fatalf("host show after the change:\n%s", show)
		}
		audit := c.cli(t, nil, "audit", "-o", "json")
		if !strings.Contains(audit, `"who": "alice"`) {
			t.Fatalf("the audit log lacks alice's change:\n%s", audit)
		}
		// The edge follows: the machine's next script boots the new image.
		waitfor.OK(t, "the edge's next script naming the new image's kernel", func() error {
			return scriptNames(t, e, mac, "/artifacts/alma/vmlinuz?mac="+mac)
		})
	})

	t.Run("a boot's timeline", func(t *testing.T) {
		// A recorded boot with every step (DHCP and TFTP too, which the
		// edge serves only on a real segment), sent by an enrolled edge
		// as it would record it.
		c.cli(t, nil, "edge", "add", "lab", "e0", "--out", filepath.Join(dir, "e0.creds"))
		nc, err := nats.Connect(c.nats, nats.UserCredentials(filepath.Join(dir, "e0.creds")), nats.CustomInboxPrefix(auth.EdgeInboxPrefix("e0")))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		start := time.Now().Add(-20 * time.Second)
		for i, e := range []struct {
			ms     int
			kind   string
			detail map[string]string
		}{
			{0, proto.EventDHCPDiscover, map[string]string{"xid": "1", "arch": "0"}},
			{12, proto.EventDHCPOffer, map[string]string{"xid": "1", "ip": "10.0.0.100"}},
			{1020, proto.EventDHCPRequest, map[string]string{"xid": "1"}},
			{1031, proto.EventDHCPAck, map[string]string{"xid": "1", "ip": "10.0.0.100", "file": "undionly.kpxe"}},
			{1480, proto.EventTFTPDone, map[string]string{"file": "undionly.kpxe", "bytes": "70006", "duration_ms": "410"}},
			{4200, proto.EventDHCPDiscover, map[string]string{"xid": "2", "user_class": "iPXE"}},
			{4215, proto.EventDHCPAck, map[string]string{"xid": "2", "ip": "10.0.0.100"}},
			{4390, proto.EventScript, map[string]string{"image": "alma"}},
			{6900, proto.EventArtifactEnd, map[string]string{"file": "alma/vmlinuz", "bytes": "14155776", "duration_ms": "2460", "status": "ok", "cache": "hit"}},
			{9800, proto.EventArtifactEnd, map[string]string{"file": "alma/initrd.img", "bytes": "61341696", "duration_ms": "2850", "status": "ok", "cache": "miss"}},
		} {
			ev := proto.Event{V: proto.Version, ID: fmt.Sprintf("browser-test-%d", i), Time: start.Add(time.Duration(e.ms) * time.Millisecond), Site: "lab", Edge: "e0", MAC: recorded, Kind: e.kind, Detail: e.detail}
			data, _ := json.Marshal(ev)
			if err := nc.Publish(proto.EventSubject("lab", "e0", recorded), data); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		ctx := tab()
		login(t, ctx, c.panel, "alice")
		waitfor.True(t, "the boot on the host's page", func() bool {
			if err := chromedp.Do(ctx, chromedp.Navigate(c.panel+"/hosts/"+recorded)); err != nil {
				return false
			}
			ok, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelectorAll('svg.wf rect').length >= 10`))
			return ok
		})
		screenshot(t, ctx, "panel-host.png")
	})

	t.Run("a live boot without a reload", func(t *testing.T) {
		// web2 has booted nothing yet. Its page stays open while the real
		// edge serves it a script, a kernel and an initrd over HTTP, as
		// iPXE would fetch them.
		const mac2 = "52:54:00:ab:cd:02"
		ctx := tab()
		login(t, ctx, c.panel, "alice")
		err := chromedp.Do(ctx,
			chromedp.Navigate(c.panel+"/hosts/"+mac2),
			chromedp.WaitVisible(chromedp.CSS(`#timeline`)),
		)
		if err != nil {
			t.Fatal(err)
		}
		// A mark on this document: a reload or a navigation would lose it.
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.fleetbootSameDocument = true; true`)); err != nil {
			t.Fatal(err)
		}
		waitfor.True(t, "the page's live stream open", func() bool {
			ok, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.body.dataset.live === 'open'`))
			return ok
		})
		if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('svg.wf rect').length`)); n != 0 {
			t.Fatalf("web2's page shows %d steps before its boot", n)
		}
		// The events page, filtered to the machine, open in another tab.
		evTab := tab()
		login(t, evTab, c.panel, "alice")
		if err := chromedp.Do(evTab, chromedp.Navigate(c.panel+"/events?mac="+mac2), chromedp.WaitVisible(chromedp.CSS(`#events`))); err != nil {
			t.Fatal(err)
		}
		waitfor.True(t, "the events page's live stream open", func() bool {
			ok, _ := chromedp.Run(evTab, chromedp.Evaluate[bool](`document.body.dataset.live === 'open'`))
			return ok
		})
		script, err := e.get(t, "/boot.ipxe?mac="+mac2+"&arch=i386&platform=pcbios")
		if err != nil {
			t.Fatal(err)
		}
		urls := regexp.MustCompile(`http://\S+/artifacts/\S+`).FindAllString(script, -1)
		if len(urls) != 2 {
			t.Fatalf("the script names %d artifacts, want a kernel and an initrd:\n%s", len(urls), script)
		}
		for _, u := range urls {
			resp, err := http.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: HTTP %d", u, resp.StatusCode)
			}
			t.Logf("fetched %s: %d bytes", u, n)
		}
		waited := waitfor.Within(t, waitfor.Default, "the boot drawn on the open page", func() error {
			type state struct {
				Same    bool   `json:"same"`
				Updates string `json:"updates"`
				Rects   int    `json:"rects"`
				Text    string `json:"text"`
			}
			st, err := chromedp.Run(ctx, chromedp.Evaluate[state](`({same: window.fleetbootSameDocument === true, updates: document.body.dataset.liveUpdates || '',
				rects: document.querySelectorAll('#timeline svg.wf rect').length, text: document.querySelector('#timeline').textContent})`))
			switch {
			case err != nil:
				return err
			case !st.Same:
				return errors.New("the page was reloaded or left")
			case st.Rects < 5 || !strings.Contains(st.Text, "initrd.img") || !strings.Contains(st.Text, "script.served"):
				return fmt.Errorf("%d steps drawn after %s update(s):\n%s", st.Rects, st.Updates, st.Text)
			}
			return nil
		})
		// Rough, not asserted: the edge batches its events, the panel waits
		// for a burst to end, the browser polls here.
		t.Logf("the edge served the initrd → the open page drew it: %s", waited.Round(time.Millisecond))
		if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.fleetbootSameDocument === true && performance.getEntriesByType('navigation').length === 1`)); err != nil || !same {
			t.Fatalf("the page was reloaded (%v)", err)
		}
		screenshot(t, ctx, "panel-host-live.png")
		waitfor.OK(t, "the boot's events on the open events page", func() error {
			text, err := chromedp.Run(evTab, chromedp.Evaluate[string](`document.querySelector('#events').innerText`))
			if err != nil {
				return err
			}
			if !strings.Contains(text, "artifact.end") || !strings.Contains(text, "initrd.img") || strings.Contains(text, mac+"\t") {
				return fmt.Errorf("the events page shows:\n%s", text)
			}
			return nil
		})
		screenshot(t, evTab, "panel-events.png")
	})

	t.Run("bulk by a label search", func(t *testing.T) {
		// 50 machines of rack r7 and 3 of r8, imported as an operator does.
		var csv strings.Builder
		csv.WriteString("mac,site,image,hostname,labels\n")
		for i := range 53 {
			rack := "r7"
			if i >= 50 {
				rack = "r8"
			}
			fmt.Fprintf(&csv, "52:54:00:b7:00:%02x,lab,deb,rack-%d,rack=%s\n", i, i, rack)
		}
		file := filepath.Join(dir, "racks.csv")
		if err := os.WriteFile(file, []byte(csv.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		c.cli(t, nil, "host", "import", file)
		ctx := tab()
		login(t, ctx, c.panel, "alice")
		err := chromedp.Do(ctx,
			chromedp.Navigate(c.panel+"/hosts"),
			chromedp.SendKeys(chromedp.CSS(`#flabels`), "labels.rack=r7\n"),
		)
		if err != nil {
			t.Fatal(err)
		}
		waitfor.True(t, "the label search's answer", func() bool {
			ok, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`location.search.includes('labels=') && document.readyState === 'complete'`))
			return ok
		})
		if text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`main`))); err != nil || !strings.Contains(text, "50 host(s)") {
			t.Fatalf("the label search found (%v):\n%s", err, text)
		}
		err = chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS(`#all`)),
			chromedp.SetValue(chromedp.CSS(`#bimage`), "alma"),
			chromedp.Submit(chromedp.CSS(`#bulk`)),
			chromedp.WaitVisible(chromedp.CSS(`form[action="/bulk"] button[type=submit]`)),
		)
		if err != nil {
			t.Fatal(err)
		}
		text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`main`)))
		if err != nil || !strings.Contains(text, "on 50 machine(s): every host matching the search") {
			t.Fatalf("the confirmation says (%v):\n%s", err, text)
		}
		if show := c.cli(t, nil, "host", "show", "52:54:00:b7:00:00", "-o", "json"); !strings.Contains(show, `"image": "deb"`) {
			t.Fatalf("the confirmation page changed a host:\n%s", show)
		}
		err = chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS(`form[action="/bulk"] button[type=submit]`)),
			chromedp.WaitVisible(chromedp.CSS(`.saved`)),
		)
		if err != nil {
			t.Fatal(err)
		}
		screenshot(t, ctx, "panel-bulk.png")
		var hosts []proto.Host
		if err := json.Unmarshal([]byte(c.cli(t, nil, "host", "ls", "--site", "lab", "-o", "json")), &hosts); err != nil {
			t.Fatal(err)
		}
		moved := map[string]int{}
		for _, h := range hosts {
			if r := h.Labels["rack"]; r != "" {
				moved[r+" "+h.Image]++
			}
		}
		if moved["r7 alma"] != 50 || moved["r8 deb"] != 3 || len(moved) != 2 {
			t.Fatalf("after the bulk change, hosts by rack and image: %v", moved)
		}
	})

	t.Run("viewer", func(t *testing.T) {
		if stolen == "" {
			t.Fatal("no admin's form to forge: the subtest \"admin changes an image\" did not capture it")
		}
		ctx := tab()
		login(t, ctx, c.panel, "vic")
		err := chromedp.Do(ctx,
			chromedp.Navigate(c.panel+"/hosts/"+mac),
			chromedp.WaitVisible(chromedp.CSS(`main h1`)),
		)
		if err != nil {
			t.Fatal(err)
		}
		forms, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('form')).map(f => f.action)`))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range forms {
			if !strings.HasSuffix(f, "/logout") {
				t.Fatalf("the viewer's page has an edit form posting to %s", f)
			}
		}
		// She plants the admin's stolen form (its token is the admin's)
		// in her page and sends it, choosing another image.
		forged := strings.Replace(stolen, `<option selected="">alma</option>`, `<option>alma</option>`, 1)
		_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('main').insertAdjacentHTML('beforeend', `+jsString(forged)+`);
				document.querySelector('#hostform #image').value = 'deb'; setTimeout(() => document.querySelector('#hostform').submit(), 0); true`))
		if err != nil {
			t.Fatal(err)
		}
		// The page navigates to the answer: read it once it is there.
		var body string
		waitfor.True(t, "the answer to the forged form", func() bool {
			body, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#hostform') ? '' : document.body.innerText`))
			return body != ""
		})
		if !strings.Contains(body, "token is missing or stale") {
			t.Fatalf("the forged form got:\n%s", body)
		}
		screenshot(t, ctx, "viewer-forged.png")
		if show := c.cli(t, nil, "host", "show", mac, "-o", "json"); !strings.Contains(show, `"image": "alma"`) {
			t.Fatalf("the forged form changed the host:\n%s", show)
		}
	})
}

// scriptNames tells whether the edge's script for mac names want.
func scriptNames(t *testing.T, e edge, mac, want string) error {
	t.Helper()
	script, err := e.get(t, "/boot.ipxe?mac="+mac+"&arch=i386&platform=pcbios")
	if err != nil {
		return err
	}
	if !strings.Contains(script, want) {
		return fmt.Errorf("the script does not name %s:\n%s", want, script)
	}
	return nil
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, "`", "\\`", "$", `\$`)
	return "`" + r.Replace(s) + "`"
}
