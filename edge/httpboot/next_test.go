package httpboot

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// discovering is an unknown machine booted into the discovery image,
// holding the edge's lease on 10.0.0.77.
const discovering = "52:54:00:00:00:77"

func discoverFixture(t *testing.T) *fixture {
	f := newFixture(t)
	f.st.SetSite(site(proto.UnknownDiscover))
	f.h.cfg.Leases = staticLeases{"10.0.0.77": discovering, "10.0.0.78": "52:54:00:00:00:78"}
	return f
}

func (f *fixture) from(method, target, ip, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.RemoteAddr = ip + ":40000"
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

// TestNext: the discovery system's "what next?" is answered from the edge's
// state: wait while the MAC is unknown or has nothing bootable, reboot once
// it boots an image or local, with the token its discovery boot carried
// (rendered while unknown) even after the host record exists.
func TestNext(t *testing.T) {
	assigned := proto.Host{MAC: discovering, Site: "lab", Image: "debian-12", State: proto.StateBoot, Updated: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)}
	tests := []struct {
		name   string
		host   *proto.Host // put after the discovery token is taken
		action string
		image  string
		reason string
	}{
		{name: "unknown: wait", action: proto.NextWait, reason: "not assigned yet"},
		{name: "assigned an image: reboot", host: &assigned, action: proto.NextReboot, image: "debian-12", reason: "host boots image debian-12"},
		{name: "local: reboot", host: func() *proto.Host { h := assigned; h.State = proto.StateLocal; return &h }(), action: proto.NextReboot, reason: "host state is local"},
		{name: "image not synced here yet: wait", host: func() *proto.Host { h := assigned; h.Image = "rocky-9"; return &h }(), action: proto.NextWait, reason: "not known at this edge"},
		{name: "known, no image: wait", host: func() *proto.Host { h := assigned; h.Image = ""; return &h }(), action: proto.NextWait, reason: "no image assigned"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := discoverFixture(t)
			tok := f.tokenFor(discovering)
			if tc.host != nil {
				f.st.PutHost(*tc.host)
			}
			w := f.from("GET", "/api/v1/next?mac="+discovering+"&token="+tok, "10.0.0.77", "")
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			var ans proto.NextAnswer
			if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil {
				t.Fatal(err)
			}
			if ans.Action != tc.action || ans.Image != tc.image || !strings.Contains(ans.Reason, tc.reason) {
				t.Errorf("answer %+v, want %s %q (%q)", ans, tc.action, tc.image, tc.reason)
			}
			ev := f.events.take()
			switch {
			case tc.action == proto.NextReboot && (len(ev) != 1 || ev[0].Kind != proto.EventDiscoveryNext || ev[0].MAC != discovering):
				t.Errorf("events %+v, want one %s", ev, proto.EventDiscoveryNext)
			case tc.action == proto.NextWait && len(ev) != 0:
				t.Errorf("a wait recorded events %+v", ev)
			}
			// The host's own current token works too, once it is known.
			if tc.host != nil {
				w := f.from("GET", "/api/v1/next?mac="+discovering+"&token="+f.tokenFor(discovering), "10.0.0.77", "")
				if w.Code != http.StatusOK {
					t.Errorf("current token: status %d", w.Code)
				}
			}
		})
	}
}

func TestNextRefusals(t *testing.T) {
	tests := []struct {
		name, token, from, reason string
	}{
		{name: "no token", from: "10.0.0.77", reason: "no token"},
		{name: "wrong token", token: "AAAA", from: "10.0.0.77", reason: "wrong token"},
		{name: "another machine's token", token: token(testKey, "52:54:00:00:00:78", nil), from: "10.0.0.77", reason: "wrong token"},
		{name: "from another machine's lease", token: token(testKey, discovering, nil), from: "10.0.0.78", reason: "address leased to another machine"},
		{name: "from an address without a lease", token: token(testKey, discovering, nil), from: "10.0.0.99", reason: "no lease on the caller's address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := discoverFixture(t)
			target := "/api/v1/next?mac=" + discovering
			if tc.token != "" {
				target += "&token=" + tc.token
			}
			w := f.from("GET", target, tc.from, "")
			if w.Code != http.StatusForbidden || w.Body.String() != refusedBody {
				t.Errorf("status %d %q, want 403 and the refusal", w.Code, w.Body)
			}
			ev := f.events.take()
			if len(ev) != 1 || ev[0].Kind != proto.EventCallbackRefused || ev[0].Detail["reason"] != tc.reason || ev[0].Detail["callback"] != "next" {
				t.Errorf("events %+v, want one refusal for %q", ev, tc.reason)
			}
		})
	}
	f := discoverFixture(t)
	if w := f.from("POST", "/api/v1/next?mac="+discovering, "10.0.0.77", ""); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", w.Code)
	}
	if w := f.from("GET", "/api/v1/next?mac=nope", "10.0.0.77", ""); w.Code != http.StatusBadRequest {
		t.Errorf("bad MAC: %d, want 400", w.Code)
	}
}

// TestDiscoveredFacts: facts of an unknown MAC, with the token of its
// discovery boot and from its lease, are forwarded where the site
// discovers, and refused where it does not.
func TestDiscoveredFacts(t *testing.T) {
	facts := `{"v":1,"boot_mac":"52:54:00:00:00:77","cpus":2,"dmi":{"vendor":"QEMU"}}`
	for _, tc := range []struct {
		policy string
		status int
		reason string
	}{
		{policy: proto.UnknownDiscover, status: http.StatusNoContent},
		{policy: proto.UnknownIgnore, status: http.StatusForbidden, reason: "unknown machine and the site does not discover"},
		{policy: proto.UnknownExit, status: http.StatusForbidden, reason: "unknown machine and the site does not discover"},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			f := discoverFixture(t)
			f.st.SetSite(site(tc.policy))
			w := f.from("POST", "/api/v1/facts?mac="+discovering+"&token="+f.tokenFor(discovering), "10.0.0.77", facts)
			if w.Code != tc.status {
				t.Fatalf("status %d %q, want %d", w.Code, w.Body, tc.status)
			}
			ev := f.events.take()
			if tc.reason == "" {
				if len(f.cb.calls) != 1 {
					t.Errorf("forwarded %v, want once", f.cb.calls)
				}
				return
			}
			if len(f.cb.calls) != 0 {
				t.Errorf("forwarded %v", f.cb.calls)
			}
			if len(ev) != 1 || ev[0].Detail["reason"] != tc.reason {
				t.Errorf("events %+v, want a refusal for %q", ev, tc.reason)
			}
		})
	}
}
