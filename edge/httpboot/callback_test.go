package httpboot

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

// TestCallbackRefusals: a callback without the machine's token, with a
// wrong one, with another machine's, with one from an earlier assignment,
// or from an address the edge knows is not the machine's, is refused with
// the same status and body whether or not the MAC is known, is not
// forwarded, and is recorded as callback.refused with the reason.
func TestCallbackRefusals(t *testing.T) {
	const known, unknown, other = "52:54:00:12:34:56", "52:54:00:00:00:09", "52:54:00:00:00:07"
	tests := []struct {
		name   string
		mac    string
		token  func(f *fixture) string // empty: none sent
		from   string                  // client address; default the host's reservation
		before func(f *fixture)        // runs after the token is taken
		reason string
	}{
		{name: "known, no token", mac: known, reason: "no token"},
		{name: "unknown, no token", mac: unknown, reason: "no token"},
		{name: "known, wrong token", mac: known, token: func(*fixture) string { return "AAAA" }, reason: "wrong token"},
		{name: "unknown, wrong token", mac: unknown, token: func(*fixture) string { return "AAAA" }, reason: "wrong token"},
		{name: "known, token of another MAC", mac: known, token: func(f *fixture) string { return f.tokenFor(other) }, reason: "wrong token"},
		{name: "known, token of an earlier assignment", mac: known, token: func(f *fixture) string { return f.tokenFor(known) },
			before: func(f *fixture) {
				h := *web01()
				h.Updated = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC) // host set again
				f.st.PutHost(h)
			}, reason: "wrong token"},
		{name: "known, token of a key the edge does not hold", mac: known,
			token: func(*fixture) string { return token([]byte("another edge's key"), known, web01()) }, reason: "wrong token"},
		{name: "known, right token, not from its reservation", mac: known, token: func(f *fixture) string { return f.tokenFor(known) },
			from: "10.0.0.66:40000", reason: "not the host's reserved address"},
	}
	var bodies []string
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, kind := range []string{"done", "facts"} {
				f := newFixture(t)
				target := "/api/v1/" + kind + "?mac=" + tc.mac
				if tc.token != nil {
					target += "&token=" + tc.token(f)
				}
				if tc.before != nil {
					tc.before(f)
				}
				r := httptest.NewRequest("POST", target, strings.NewReader(`{"cpus":4}`))
				r.RemoteAddr = "10.0.0.50:40000"
				if tc.from != "" {
					r.RemoteAddr = tc.from
				}
				w := httptest.NewRecorder()
				f.h.ServeHTTP(w, r)
				if w.Code != http.StatusForbidden {
					t.Errorf("%s: status %d, want 403 (%s)", kind, w.Code, w.Body)
				}
				bodies = append(bodies, w.Body.String())
				if len(f.cb.calls) != 0 {
					t.Errorf("%s: forwarded %v", kind, f.cb.calls)
				}
				ev := f.events.take()
				if len(ev) != 1 || ev[0].Kind != proto.EventCallbackRefused || ev[0].MAC != tc.mac ||
					ev[0].Detail["reason"] != tc.reason || ev[0].Detail["callback"] != kind {
					t.Errorf("%s: events %+v, want one %s with reason %q", kind, ev, proto.EventCallbackRefused, tc.reason)
				}
			}
		})
	}
	for _, b := range bodies {
		if b != bodies[0] {
			t.Errorf("refusals differ: %q and %q", bodies[0], b)
		}
	}
}

// staticLeases is the consumer's interface over a fixed table.
type staticLeases map[string]string

func (s staticLeases) MACForIP(ip net.IP) string { return s[ip.String()] }

// TestCallbackOverHTTP: over a real socket, the installer posts with the
// token its script carried, as the kernel command line and the {{callback}}
// variable give it; the edge forwards it when it comes from the machine's
// reservation or DHCP lease, and refuses it from any other loopback address.
func TestCallbackOverHTTP(t *testing.T) {
	f := newFixture(t)
	reserved := *web01()
	reserved.IP = "127.0.0.1"
	f.st.PutHost(reserved)
	leased := proto.Host{MAC: "52:54:00:00:00:20", Site: "lab", Image: "debian-12", State: proto.StateBoot}
	f.st.PutHost(leased)
	im := *debian()
	im.Cmdline = "fleetboot.done={{callback}}"
	f.st.PutImage(im)
	f.h.cfg.Leases = staticLeases{"127.0.0.3": leased.MAC, "127.0.0.4": "52:54:00:99:99:99"}
	srv := httptest.NewServer(f.h)
	t.Cleanup(srv.Close)

	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	}
	get := func(c *http.Client, target string) string {
		t.Helper()
		resp, err := c.Get(srv.URL + target)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	post := func(c *http.Client, target string, hdr http.Header) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", target, strings.NewReader(`{"ok":true}`))
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tokenRE := regexp.MustCompile(` fleetboot\.token=([A-Za-z0-9_-]+)`)
	doneRE := regexp.MustCompile(` fleetboot\.done=(\S+)`)

	// The reserved host: the callback URL from its own script, as is.
	script := get(from("127.0.0.1"), "/boot.ipxe?mac="+reserved.MAC)
	m, d := tokenRE.FindStringSubmatch(script), doneRE.FindStringSubmatch(script)
	if m == nil || d == nil {
		t.Fatalf("no token or callback URL in the script:\n%s", script)
	}
	callback := strings.Replace(d[1], base, srv.URL, 1)
	if want := "/api/v1/done?mac=" + reserved.MAC + "&token=" + m[1]; !strings.HasSuffix(callback, want) {
		t.Fatalf("{{callback}} = %s, want …%s", d[1], want)
	}
	refused := ""
	for _, tc := range []struct {
		name   string
		client string
		url    string
		hdr    http.Header
		status int
	}{
		{"from another address", "127.0.0.2", callback, nil, 403},
		{"no token, from its address", "127.0.0.1", srv.URL + "/api/v1/done?mac=" + reserved.MAC, nil, 403},
		{"unknown MAC, no token", "127.0.0.1", srv.URL + "/api/v1/done?mac=52:54:00:00:00:09", nil, 403},
		{"from its reservation", "127.0.0.1", callback, nil, 204},
		{"token in the header", "127.0.0.1", srv.URL + "/api/v1/facts?mac=" + reserved.MAC, http.Header{TokenHeader: {m[1]}}, 204},
	} {
		code, body := post(from(tc.client), tc.url, tc.hdr)
		if code != tc.status {
			t.Errorf("%s: %d %q, want %d", tc.name, code, body, tc.status)
		}
		if code == 403 {
			if refused != "" && body != refused {
				t.Errorf("%s: refusal %q differs from %q", tc.name, body, refused)
			}
			refused = body
		}
	}

	// The leased host: its lease decides.
	script = get(from("127.0.0.3"), "/boot.ipxe?mac="+leased.MAC)
	m = tokenRE.FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("no token in the script:\n%s", script)
	}
	u := srv.URL + "/api/v1/done?mac=" + leased.MAC + "&token=" + m[1]
	for ip, want := range map[string]int{"127.0.0.3": 204, "127.0.0.4": 403, "127.0.0.5": 403} {
		if code, body := post(from(ip), u, nil); code != want {
			t.Errorf("leased host from %s: %d %q, want %d", ip, code, body, want)
		}
	}
	if got := f.cb.take(); len(got) != 3 {
		t.Errorf("forwarded %v, want the three accepted callbacks", got)
	}
	reasons := map[string]int{}
	for _, ev := range f.events.take() {
		if ev.Kind == proto.EventCallbackRefused {
			reasons[ev.Detail["reason"]]++
		}
	}
	want := map[string]int{"not the host's reserved address": 1, "no token": 2,
		"address leased to another machine": 1, "no lease on the caller's address": 1}
	for r, n := range want {
		if reasons[r] != n {
			t.Errorf("refusals by reason %v, want %v", reasons, want)
			break
		}
	}
}

// TestCallbackKeySurvivesRestart: the key is created once, 0600, and read
// back, so a restarted edge accepts the tokens it rendered before.
func TestCallbackKeySurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "callback.key")
	k1, err := LoadCallbackKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode())
	}
	k2, err := LoadCallbackKey(path)
	if err != nil || string(k1) != string(k2) {
		t.Fatalf("second load: %v, same key %v", err, string(k1) == string(k2))
	}
	must(t, os.WriteFile(path, []byte("short"), 0o600))
	if _, err := LoadCallbackKey(path); err == nil || !strings.Contains(err.Error(), "has 5 bytes") {
		t.Errorf("a damaged key file: %v", err)
	}
}

// TestCallbackAddressByMode: which address a callback must come from
// depends on what the edge knows of the machine's address. In reservations
// mode the edge's DHCP answers only hosts with a reservation; a host
// without one gets its address from another server, which the edge never
// sees, so its token alone decides (as in proxy mode), while an address
// the edge leased to another machine is still refused. Refusing it made a
// --once host at such a site reinstall on every boot. (Issue 12 item 1.)
func TestCallbackAddressByMode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mode   string
		ip     string // the caller
		status int
	}{
		{"full: no lease on the caller's address", proto.DHCPFull, "127.0.0.77", 403},
		{"full: its lease", proto.DHCPFull, "127.0.0.80", 204},
		{"reservations, no reservation: an address of the other server", proto.DHCPReservations, "127.0.0.77", 204},
		{"reservations, no reservation: another machine's lease", proto.DHCPReservations, "127.0.0.81", 403},
		{"proxy: any address", proto.DHCPProxy, "127.0.0.77", 204},
		{"proxy: another machine's lease", proto.DHCPProxy, "127.0.0.81", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			s := site(proto.UnknownIgnore)
			s.DHCP = tc.mode
			f.st.SetSite(s)
			h := proto.Host{MAC: "52:54:00:00:00:30", Site: "lab", Image: "debian-12", State: proto.StateBoot}
			f.st.PutHost(h)
			f.h.cfg.Leases = staticLeases{"127.0.0.80": h.MAC, "127.0.0.81": "52:54:00:99:99:99"}
			srv := httptest.NewServer(f.h)
			t.Cleanup(srv.Close)
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(tc.ip)}}
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
			resp, err := c.Post(srv.URL+"/api/v1/done?mac="+h.MAC+"&token="+f.tokenFor(h.MAC), "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("%d %q, want %d", resp.StatusCode, body, tc.status)
			}
		})
	}
}

// macSeen is an ArtifactServer that records the ?mac= each request reached
// it with.
type macSeen struct {
	mu   sync.Mutex
	macs []string
}

func (m *macSeen) ServeArtifact(w http.ResponseWriter, r *http.Request, a proto.Artifact) {
	m.mu.Lock()
	m.macs = append(m.macs, r.URL.Query().Get("mac"))
	m.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// TestArtifactMACOnlyForKnownMachines: an artifact request passes its
// ?mac= on to the cache (whose events put it in that machine's timeline)
// only when the site knows the MAC; any other is dropped, so the cache
// counts the request as nobody's instead of recording events for a MAC a
// client made up, one pair per request. (Issue 12 item 4.)
func TestArtifactMACOnlyForKnownMachines(t *testing.T) {
	f := newFixture(t)
	seen := &macSeen{}
	f.h.cfg.Artifacts = seen
	srv := httptest.NewServer(f.h)
	t.Cleanup(srv.Close)
	for _, q := range []string{"?mac=52:54:00:12:34:56", "?mac=52:54:00:de:ad:01", "?mac=52-54-00-12-34-56&x=1", "?mac=nope", ""} {
		resp, err := http.Get(srv.URL + "/artifacts/debian-12/vmlinuz" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	want := []string{"52:54:00:12:34:56", "", "52-54-00-12-34-56", "", ""}
	if d := cmp.Diff(want, seen.macs); d != "" {
		t.Errorf("MACs the cache saw (-want +got):\n%s", d)
	}
}

// TestArtifactMACFromLease: an artifact request with no ?mac= (dracut's
// livenet fetching the LiveOS ISO from root=live:URL) reaches the cache
// named by the edge's DHCP lease on its source address when the site knows
// the lease's MAC; a lease of an unknown MAC, or no lease, leaves it
// nobody's. A ?mac= in the URL is never replaced by the lease.
func TestArtifactMACFromLease(t *testing.T) {
	f := newFixture(t)
	seen := &macSeen{}
	f.h.cfg.Artifacts = seen
	f.h.cfg.Leases = staticLeases{"127.0.0.3": "52:54:00:12:34:56", "127.0.0.4": "52:54:00:99:99:99"}
	srv := httptest.NewServer(f.h)
	t.Cleanup(srv.Close)
	tests := []struct {
		from, query, want string
	}{
		{"127.0.0.3", "", "52:54:00:12:34:56"},
		{"127.0.0.4", "", ""},
		{"127.0.0.5", "", ""},
		{"127.0.0.3", "?mac=52:54:00:de:ad:01", ""},
	}
	for _, tc := range tests {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(tc.from)}}
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
		resp, err := c.Get(srv.URL + "/artifacts/debian-12/vmlinuz" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		seen.mu.Lock()
		got := seen.macs[len(seen.macs)-1]
		seen.mu.Unlock()
		if got != tc.want {
			t.Errorf("from %s %q: the cache saw mac %q, want %q", tc.from, tc.query, got, tc.want)
		}
	}
}
