package httpboot

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/proto"
)

// byteArtifacts serves each artifact's bytes from memory, keyed by object key.
type byteArtifacts map[string][]byte

func (b byteArtifacts) ServeArtifact(w http.ResponseWriter, r *http.Request, a proto.Artifact) {
	data, ok := b[a.Key]
	if !ok {
		http.NotFound(w, r)
		return
	}
	http.ServeContent(w, r, a.Name, time.Time{}, bytes.NewReader(data))
}

type event struct {
	Kind, MAC string
	Detail    map[string]string
}

type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) Emit(kind, mac string, detail map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event{kind, mac, detail})
}

func (r *recorder) take() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.events
	r.events = nil
	return e
}

type callbacks struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (c *callbacks) Done(_ context.Context, mac string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, "done "+mac)
	return c.err
}

func (c *callbacks) Facts(_ context.Context, mac string, body []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, "facts "+mac+" "+string(body))
	return c.err
}

type fixture struct {
	h      *Handler
	st     *state.State
	events *recorder
	cb     *callbacks
	boot   string   // BootDir
	logs   *syncBuf // the handler's log
}

// newFixture builds a handler over a real state with a boot directory that
// has a regular file, sub-folders with files, symlinks pointing outside to a
// secret file next to it (at the top and in a sub-folder), and one link that
// stays inside.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	boot := filepath.Join(dir, "ipxe")
	must(t, os.MkdirAll(filepath.Join(boot, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(boot, "undionly.kpxe"), bootBytes(), 0o644))
	must(t, os.WriteFile(filepath.Join(boot, "sub", "inner.efi"), []byte("INNER"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "secret"), []byte("SECRET"), 0o644))
	must(t, os.Symlink(filepath.Join(dir, "secret"), filepath.Join(boot, "escape.efi")))
	must(t, os.Symlink("../secret", filepath.Join(boot, "escape2.efi")))
	must(t, os.MkdirAll(filepath.Join(boot, "grub", "x86_64-efi"), 0o755))
	must(t, os.WriteFile(filepath.Join(boot, "grub", "x86_64-efi", "http.mod"), []byte("MODULE"), 0o644))
	must(t, os.Symlink("../../../secret", filepath.Join(boot, "grub", "x86_64-efi", "escape.mod")))
	must(t, os.Symlink(filepath.Join(dir, "secret"), filepath.Join(boot, "sub", "escape.efi")))
	must(t, os.Symlink("../undionly.kpxe", filepath.Join(boot, "sub", "inside.kpxe")))
	must(t, os.Symlink(dir, filepath.Join(boot, "sub", "up")))

	st := state.New()
	s := site(proto.UnknownIgnore)
	st.SetSite(s)
	st.PutImage(*debian())
	st.PutImage(*discovery())
	st.PutHost(*web01())
	f := &fixture{st: st, events: &recorder{}, cb: &callbacks{}, boot: boot, logs: &syncBuf{}}
	f.h = New(Config{
		State:       st,
		BaseURL:     base,
		Artifacts:   byteArtifacts{"sha256/aa": []byte("KERNEL-BYTES"), "sha256/bb": []byte("INITRD-BYTES")},
		BootDir:     boot,
		Callbacks:   f.cb,
		CallbackKey: testKey,
		Events:      f.events,
		Logger:      slog.New(slog.NewTextHandler(f.logs, nil)),
	})
	if err := f.h.Check(); err != nil {
		t.Fatal(err)
	}
	return f
}

// testKey signs the fixture's callback tokens.
var testKey = bytes.Repeat([]byte{0x5a}, CallbackKeySize)

// tokenFor is the callback token the fixture's edge renders for mac now.
func (f *fixture) tokenFor(mac string) string {
	if h, ok := f.st.Host(mac); ok {
		return token(testKey, mac, &h)
	}
	return token(testKey, mac, nil)
}

func bootBytes() []byte {
	b := make([]byte, 4096)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) do(method, target string, body string) *httptest.ResponseRecorder {
	var r *http.Request
	if body != "" {
		r = httptest.NewRequest(method, target, strings.NewReader(body))
	} else {
		r = httptest.NewRequest(method, target, nil)
	}
	r.RemoteAddr = "10.0.0.50:40000"
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

func TestScriptRoutes(t *testing.T) {
	f := newFixture(t)
	in := InputFor(f.st, base, "52:54:00:12:34:56", "x86_64", "efi", "10.0.0.50", 0)
	in.Token = f.tokenFor(in.MAC)
	known, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(known.Text, " fleetboot.token="+in.Token+" ") && !strings.Contains(known.Text, " fleetboot.token="+in.Token+" ||") {
		t.Fatalf("the script has no callback token:\n%s", known.Text)
	}
	chain, err := ChainScript(base)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		target   string
		status   int
		body     string // exact, if set
		contains string
		decision string // of the script event; empty: no event
		kind     string // of the script event; default script.served
	}{
		{name: "known", target: "/boot.ipxe?mac=52:54:00:12:34:56&arch=x86_64&platform=efi", status: 200, body: known.Text, decision: ActionBoot},
		{name: "known other spelling", target: "/boot.ipxe?mac=52-54-00-12-34-56&arch=x86_64&platform=efi", status: 200, body: known.Text, decision: ActionBoot},
		{name: "per-mac path", target: "/boot/52:54:00:12:34:56.ipxe?arch=x86_64&platform=efi", status: 200, body: known.Text, decision: ActionBoot},
		{name: "unknown ignored", target: "/boot.ipxe?mac=52:54:00:00:00:09", status: 404, contains: "policy ignore", decision: ActionIgnore, kind: proto.EventScriptUnknown},
		{name: "no mac: chain script", target: "/boot.ipxe", status: 200, body: chain},
		{name: "chain script", target: "/chain.ipxe", status: 200, body: chain},
		{name: "empty mac", target: "/boot.ipxe?mac=", status: 400, contains: "invalid MAC"},
		{name: "malformed mac", target: "/boot.ipxe?mac=52:54:00:12:34", status: 400, contains: "invalid MAC"},
		{name: "hostile arch", target: "/boot.ipxe?mac=52:54:00:12:34:56&arch=%24%7Bx%7D", status: 400, contains: "invalid arch"},
		{name: "bad try", target: "/boot.ipxe?mac=52:54:00:12:34:56&try=99", status: 400, contains: "invalid try"},
		{name: "grub over http", target: "/grub.cfg?mac=52:54:00:12:34:56", status: 200, contains: "linux '(http,10.0.0.1:8080)/artifacts/debian-12/vmlinuz", decision: ActionBoot},
		{name: "healthz", target: "/healthz", status: 200, body: "ok\n"},
		{name: "unknown route", target: "/nope", status: 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := f.do("GET", tc.target, "")
			if w.Code != tc.status {
				t.Errorf("status = %d, want %d (%s)", w.Code, tc.status, w.Body)
			}
			if tc.body != "" {
				if diff := cmp.Diff(tc.body, w.Body.String()); diff != "" {
					t.Errorf("body (-want +got):\n%s", diff)
				}
			}
			if !strings.Contains(w.Body.String(), tc.contains) {
				t.Errorf("body %q does not contain %q", w.Body, tc.contains)
			}
			ev := f.events.take()
			if tc.decision == "" {
				if len(ev) != 0 {
					t.Errorf("unexpected events %v", ev)
				}
				return
			}
			kind := tc.kind
			if kind == "" {
				kind = proto.EventScript
			}
			if len(ev) != 1 || ev[0].Kind != kind || ev[0].Detail["decision"] != tc.decision || ev[0].Detail["reason"] == "" || ev[0].Detail["ip"] != "10.0.0.50" {
				t.Errorf("events = %+v, want one %s with decision %s", ev, kind, tc.decision)
			}
		})
	}
}

func TestStateChangeServedAtOnce(t *testing.T) {
	f := newFixture(t)
	target := "/boot.ipxe?mac=52:54:00:12:34:56&platform=efi"
	if w := f.do("GET", target, ""); !strings.Contains(w.Body.String(), "kernel --name vmlinuz") {
		t.Fatalf("before: %s", w.Body)
	}
	h := *web01()
	h.State = proto.StateLocal
	f.st.PutHost(h)
	w := f.do("GET", target, "")
	if diff := cmp.Diff("#!ipxe\n# fleetboot 52:54:00:12:34:56: local: host state is local\necho fleetboot: booting from local disk\nexit 1\n", w.Body.String()); diff != "" {
		t.Errorf("after (-want +got):\n%s", diff)
	}
}

func TestArtifacts(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		method string
		target string
		status int
		body   string
	}{
		{"kernel", "GET", "/artifacts/debian-12/vmlinuz?mac=52:54:00:12:34:56", 200, "KERNEL-BYTES"},
		{"initrd", "GET", "/artifacts/debian-12/initrd.img", 200, "INITRD-BYTES"},
		{"head", "HEAD", "/artifacts/debian-12/vmlinuz", 200, ""},
		{"unknown file", "GET", "/artifacts/debian-12/nope", 404, ""},
		{"unknown image", "GET", "/artifacts/nope/vmlinuz", 404, ""},
		{"artifact of another image by key", "GET", "/artifacts/discovery/sha256%2faa", 400, ""},
		{"no file", "GET", "/artifacts/debian-12", 400, ""},
		{"dotdot", "GET", "/artifacts/../../etc/passwd", 400, ""},
		{"dotdot in file", "GET", "/artifacts/debian-12/../../../etc/passwd", 400, ""},
		{"encoded dotdot", "GET", "/artifacts/%2e%2e/%2e%2e/etc/passwd", 400, ""},
		{"encoded slash", "GET", "/artifacts/debian-12/..%2f..%2fetc%2fpasswd", 400, ""},
		{"encoded upper slash", "GET", "/artifacts/debian-12/..%2F..%2Fetc%2Fpasswd", 400, ""},
		{"backslash", "GET", "/artifacts/debian-12/..\\..\\etc\\passwd", 400, ""},
		{"nul", "GET", "/artifacts/debian-12/vmlinuz%00", 400, ""},
		{"post", "POST", "/artifacts/debian-12/vmlinuz", 405, ""},
		{"put", "PUT", "/artifacts/debian-12/vmlinuz", 405, ""},
		{"delete", "DELETE", "/boot.ipxe?mac=52:54:00:12:34:56", 405, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := f.do(tc.method, tc.target, "")
			if w.Code != tc.status {
				t.Errorf("status = %d, want %d (%s)", w.Code, tc.status, w.Body)
			}
			if tc.body != "" && w.Body.String() != tc.body {
				t.Errorf("body = %q, want %q", w.Body, tc.body)
			}
			if strings.Contains(w.Body.String(), "root:") {
				t.Error("served a file outside")
			}
		})
	}
}

func TestBootFiles(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		method string
		target string
		status int
		body   []byte
	}{
		{"regular file", "GET", "/boot/undionly.kpxe", 200, bootBytes()},
		{"head", "HEAD", "/boot/undionly.kpxe", 200, nil},
		{"missing", "GET", "/boot/ipxe.efi", 404, nil},
		{"directory", "GET", "/boot/sub", 404, nil},
		{"directory slash", "GET", "/boot/sub/", 404, nil},
		{"listing", "GET", "/boot/", 404, nil},
		{"file in a sub-folder", "GET", "/boot/sub/inner.efi", 200, []byte("INNER")},
		{"file two folders down", "GET", "/boot/grub/x86_64-efi/http.mod", 200, []byte("MODULE")},
		{"link inside the boot directory", "GET", "/boot/sub/inside.kpxe", 200, bootBytes()},
		{"relative symlink out of a sub-folder", "GET", "/boot/grub/x86_64-efi/escape.mod", 404, nil},
		{"absolute symlink out of a sub-folder", "GET", "/boot/sub/escape.efi", 404, nil},
		{"through a directory link out", "GET", "/boot/sub/up/secret", 404, nil},
		{"dotdot in a sub-folder", "GET", "/boot/sub/../../secret", 404, nil},
		{"dotdot back inside", "GET", "/boot/sub/../undionly.kpxe", 404, nil},
		{"dot segment", "GET", "/boot/sub/./inner.efi", 404, nil},
		{"empty segment", "GET", "/boot/sub//inner.efi", 404, nil},
		{"hidden segment", "GET", "/boot/.sub/inner.efi", 404, nil},
		{"sub-folder at the root", "GET", "/sub/inner.efi", 404, nil},
		{"absolute symlink out", "GET", "/boot/escape.efi", 404, nil},
		{"relative symlink out", "GET", "/boot/escape2.efi", 404, nil},
		{"dotdot", "GET", "/boot/../secret", 404, nil},
		{"encoded dotdot", "GET", "/boot/%2e%2e/secret", 404, nil},
		{"encoded slash", "GET", "/boot/..%2fsecret", 400, nil},
		{"absolute", "GET", "/boot//etc/passwd", 404, nil},
		{"post", "POST", "/boot/undionly.kpxe", 405, nil},
		{"at the root for UEFI HTTP boot", "GET", "/undionly.kpxe", 200, bootBytes()},
		{"symlink out at the root", "GET", "/escape.efi", 404, nil},
		{"dotdot at the root", "GET", "/..", 404, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := f.do(tc.method, tc.target, "")
			if w.Code != tc.status {
				t.Errorf("status = %d, want %d (%s)", w.Code, tc.status, w.Body)
			}
			if tc.body != nil && !bytes.Equal(w.Body.Bytes(), tc.body) {
				t.Errorf("body differs (%d bytes, want %d)", w.Body.Len(), len(tc.body))
			}
			if strings.Contains(w.Body.String(), "SECRET") {
				t.Error("served a file outside the boot directory")
			}
		})
	}
}

func TestCallbacks(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		target  string
		body    string
		cbErr   error
		status  int
		calls   []string
		event   string
		fwd     string
		noEvent bool
	}{
		{name: "done without body", method: "POST", target: "/api/v1/done?mac=52:54:00:12:34:56&token={token}", status: 204,
			calls: []string{"done 52:54:00:12:34:56"}, event: proto.EventCallbackDone, fwd: "true"},
		{name: "done with json", method: "POST", target: "/api/v1/done?mac=52-54-00-12-34-56&token={token}", body: `{"ok":true}`, status: 204,
			calls: []string{"done 52:54:00:12:34:56"}, event: proto.EventCallbackDone, fwd: "true"},
		{name: "facts", method: "POST", target: "/api/v1/facts?mac=52:54:00:12:34:56&token={token}", body: `{"cpus":4}`, status: 204,
			calls: []string{`facts 52:54:00:12:34:56 {"cpus":4}`}, event: proto.EventCallbackFacts, fwd: "true"},
		{name: "facts invalid json", method: "POST", target: "/api/v1/facts?mac=52:54:00:12:34:56&token={token}", body: `{"cpus":`, status: 400, noEvent: true},
		{name: "facts empty", method: "POST", target: "/api/v1/facts?mac=52:54:00:12:34:56&token={token}", status: 400, noEvent: true},
		{name: "done invalid json", method: "POST", target: "/api/v1/done?mac=52:54:00:12:34:56&token={token}", body: `nope`, status: 400, noEvent: true},
		{name: "too large", method: "POST", target: "/api/v1/facts?mac=52:54:00:12:34:56&token={token}", body: `"` + strings.Repeat("x", MaxCallbackBody) + `"`, status: 413, noEvent: true},
		{name: "bad mac", method: "POST", target: "/api/v1/done?mac=nope", status: 400, noEvent: true},
		{name: "get", method: "GET", target: "/api/v1/done?mac=52:54:00:12:34:56&token={token}", status: 405, noEvent: true},
		{name: "coordinator down", method: "POST", target: "/api/v1/done?mac=52:54:00:12:34:56&token={token}", cbErr: errors.New("nats: no responders"), status: 502,
			calls: []string{"done 52:54:00:12:34:56"}, event: proto.EventCallbackDone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.cb.err = tc.cbErr
			w := f.do(tc.method, strings.ReplaceAll(tc.target, "{token}", f.tokenFor("52:54:00:12:34:56")), tc.body)
			if w.Code != tc.status {
				t.Errorf("status = %d, want %d (%s)", w.Code, tc.status, w.Body)
			}
			if diff := cmp.Diff(tc.calls, f.cb.calls); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			ev := f.events.take()
			if tc.noEvent {
				if len(ev) != 0 {
					t.Errorf("unexpected events %+v", ev)
				}
				return
			}
			if len(ev) != 1 || ev[0].Kind != tc.event || ev[0].MAC != "52:54:00:12:34:56" || ev[0].Detail["forwarded"] != tc.fwd {
				t.Errorf("events = %+v, want one %s forwarded=%q", ev, tc.event, tc.fwd)
			}
		})
	}
	t.Run("no callbacks configured", func(t *testing.T) {
		f := newFixture(t)
		f.h.cfg.Callbacks = nil
		if w := f.do("POST", "/api/v1/done?mac=52:54:00:12:34:56&token="+f.tokenFor("52:54:00:12:34:56"), ""); w.Code != 204 {
			t.Errorf("status = %d", w.Code)
		}
		if ev := f.events.take(); len(ev) != 1 || ev[0].Detail["forwarded"] != "false" {
			t.Errorf("events = %+v", ev)
		}
	})
}

func TestLookupTFTP(t *testing.T) {
	f := newFixture(t)
	remote := &net.UDPAddr{IP: net.IPv4(10, 0, 0, 50), Port: 1234}
	in := InputFor(f.st, base, "52:54:00:12:34:56", "", "efi", "10.0.0.50", 0)
	in.Token = f.tokenFor(in.MAC)
	in.Via = ViaTFTP // asked over TFTP: kernel and initrd over TFTP too
	want, err := RenderGRUB(in)
	if err != nil {
		t.Fatal(err)
	}
	fallback, err := GRUBFallback(base)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		ok   bool
		body string
	}{
		{"per-mac under /grub", "grub/grub.cfg-01-52-54-00-12-34-56", true, want.Text},
		{"per-mac under EFI/BOOT", "EFI/BOOT/grub.cfg-01-52-54-00-12-34-56", true, want.Text},
		{"unknown mac, policy ignore", "grub/grub.cfg-01-52-54-00-00-00-09", false, ""},
		{"ip hex", "grub/grub.cfg-0A000032", false, ""},
		{"generic", "grub/grub.cfg", true, fallback},
		{"not grub", "undionly.kpxe", false, ""},
		{"malformed mac", "grub/grub.cfg-01-zz", false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := f.h.LookupTFTP(tc.path, remote)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if diff := cmp.Diff(tc.body, string(got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestCurl fetches through a real HTTP client and server on loopback.
func TestCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is required: apt-get install curl")
	}
	f := newFixture(t)
	srv := httptest.NewServer(f.h)
	t.Cleanup(srv.Close)
	curl := func(args ...string) (string, string) {
		t.Helper()
		out, err := exec.Command("curl", append([]string{"-sS", "--path-as-is", "-o", "-", "-w", "\n%{http_code}"}, args...)...).Output()
		if err != nil {
			t.Fatalf("curl %v: %v", args, err)
		}
		s := string(out)
		i := strings.LastIndex(s, "\n")
		return s[:i], s[i+1:]
	}
	in := InputFor(f.st, base, "52:54:00:12:34:56", "x86_64", "efi", "127.0.0.1", 0)
	in.Token = f.tokenFor(in.MAC)
	known, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		status string
		body   string
	}{
		{"known host", []string{srv.URL + "/boot.ipxe?mac=52:54:00:12:34:56&arch=x86_64&platform=efi"}, "200", known.Text},
		{"unknown host", []string{srv.URL + "/boot.ipxe?mac=52:54:00:00:00:09"}, "404", ""},
		{"malformed mac", []string{srv.URL + "/boot.ipxe?mac=zz"}, "400", ""},
		{"range of boot file", []string{"-r", "100-199", srv.URL + "/boot/undionly.kpxe"}, "206", string(bootBytes()[100:200])},
		{"traversal", []string{srv.URL + "/boot/../../../../etc/passwd"}, "404", ""},
		{"traversal artifacts", []string{srv.URL + "/artifacts/../../etc/passwd"}, "400", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body, status := curl(tc.args...)
			if status != tc.status {
				t.Errorf("status = %s, want %s (%s)", status, tc.status, body)
			}
			if tc.body != "" {
				if diff := cmp.Diff(tc.body, body); diff != "" {
					t.Errorf("body (-want +got):\n%s", diff)
				}
			}
			if strings.Contains(body, "root:") {
				t.Error("served a file outside")
			}
		})
	}
}

func FuzzPath(f *testing.F) {
	for _, s := range []string{"/boot/undionly.kpxe", "/boot/../secret", "/boot/escape.efi", "/artifacts/debian-12/vmlinuz",
		"/artifacts/%2e%2e/x", "/boot/..%2fsecret", "/boot.ipxe?mac=52:54:00:12:34:56", "/boot/sub/inner.efi", "/boot//secret",
		"/boot/sub/up/secret", "/boot/grub/x86_64-efi/escape.mod", "/boot/sub/escape.efi"} {
		f.Add(s)
	}
	fx := newFixture(f)
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.Parse(target)
		if err != nil {
			u = &url.URL{Path: target} // a decoded path no client could send: still must be safe
		}
		r := &http.Request{Method: "GET", URL: u, Header: http.Header{}, RemoteAddr: "10.0.0.50:1", Body: http.NoBody}
		r = r.WithContext(context.Background())
		w := httptest.NewRecorder()
		fx.h.ServeHTTP(w, r)
		b := w.Body.String()
		if strings.Contains(b, "SECRET") {
			t.Fatalf("%q served a file outside the boot directory", target)
		}
		// A 200 under /boot/ is one of the boot directory's files (or a script).
		if w.Code == 200 && strings.HasPrefix(u.Path, "/boot/") && !strings.HasSuffix(u.Path, ".ipxe") &&
			!bytes.Equal(w.Body.Bytes(), bootBytes()) && b != "INNER" && b != "MODULE" {
			t.Fatalf("%q: 200 with unexpected content", target)
		}
	})
}
