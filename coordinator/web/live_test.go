package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/coordinator/web"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// sseMsg is one Server-Sent Event as a browser's EventSource sees it.
type sseMsg struct {
	event, id, data string
	at              time.Time // when it arrived
}

// sseConn is an open event stream, read in the background.
type sseConn struct {
	code   int
	ctype  string
	cancel context.CancelFunc

	mu       sync.Mutex
	msgs     []sseMsg
	comments int
	ended    bool
}

// stream opens path as an EventSource would (the person's cookies, any
// headers given as name, value pairs).
func (b *browser) stream(path string, hdr ...string) *sseConn {
	t := b.f.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", b.f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := b.c.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &sseConn{code: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), cancel: cancel}
	t.Cleanup(c.close)
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var m sseMsg
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if m.event != "" || len(data) > 0 {
					m.data, m.at = strings.Join(data, "\n"), time.Now()
					c.mu.Lock()
					c.msgs = append(c.msgs, m)
					c.mu.Unlock()
				}
				m, data = sseMsg{}, nil
			case strings.HasPrefix(line, ":"):
				c.mu.Lock()
				c.comments++
				c.mu.Unlock()
			case strings.HasPrefix(line, "event: "):
				m.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "id: "):
				m.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				data = append(data, strings.TrimPrefix(line, "data: "))
			}
		}
		c.mu.Lock()
		c.ended = true
		c.mu.Unlock()
	}()
	return c
}

func (c *sseConn) close() { c.cancel() }

// find returns the first message of that event whose data holds want.
func (c *sseConn) find(event, want string) (sseMsg, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.msgs {
		if m.event == event && strings.Contains(m.data, want) {
			return m, true
		}
	}
	return sseMsg{}, false
}

func (c *sseConn) all() []sseMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sseMsg(nil), c.msgs...)
}

func (c *sseConn) isEnded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ended
}

func (c *sseConn) heartbeats() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.comments
}

// publish stores an event as edge e1 (or e2 at branch) would, and returns
// when it was sent.
func (f *fleet) publish(site, edge, mac, kind string, detail map[string]string) time.Time {
	f.t.Helper()
	ev := proto.Event{V: proto.Version, ID: fmt.Sprintf("%s-%d", kind, time.Now().UnixNano()), Time: time.Now(), Site: site, Edge: edge, MAC: mac, Kind: kind, Detail: detail}
	data, _ := json.Marshal(ev)
	at := time.Now()
	if _, err := f.js.Publish(context.Background(), proto.EventSubject(site, edge, mac), data); err != nil {
		f.t.Fatal(err)
	}
	return at
}

// consumers is how many consumers the EVENTS stream has.
func (f *fleet) consumers() int {
	st, err := f.js.Stream(context.Background(), proto.StreamEvents)
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return info.State.Consumers
}

// liveGoroutines lists the goroutines still serving a live stream or
// following the EVENTS stream for one.
func liveGoroutines() []string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "web.(*Handler).serveStream") || strings.Contains(g, "eventlog.FollowSeq") {
			out = append(out, g)
		}
	}
	return out
}

// noLeak waits until no stream is open: no handler, no consumer on the
// server, no goroutine left.
func (f *fleet) noLeak(t *testing.T) {
	t.Helper()
	waitfor.OK(t, "every live stream closed and cleaned up", func() error {
		if n := f.h.OpenStreams(); n != 0 {
			return fmt.Errorf("%d streams open", n)
		}
		if n := f.consumers(); n != 0 {
			return fmt.Errorf("%d consumers on the EVENTS stream", n)
		}
		if g := liveGoroutines(); len(g) > 0 {
			return fmt.Errorf("%d goroutines left:\n%s", len(g), strings.Join(g, "\n\n"))
		}
		return nil
	})
}

// TestLiveAccess: the live endpoints are pages like the others: a session
// is needed, and a site admin follows only her site's machines and events.
func TestLiveAccess(t *testing.T) {
	f := newFleet(t, nil, nil)
	anon := f.browser()
	for _, p := range []string{"/hosts/" + mac1 + "/events/stream", "/events/stream", "/events"} {
		if pg := anon.get(p); pg.code != http.StatusSeeOther || !strings.HasPrefix(pg.loc, "/login?next=") {
			t.Errorf("%s without a session: HTTP %d to %q, want 303 to the login page", p, pg.code, pg.loc)
		}
	}
	sam := f.browser()
	sam.login("sam")
	cases := []struct {
		path string
		code int
		want string
	}{
		{"/hosts/" + mac3 + "/events/stream", http.StatusForbidden, ""}, // branch's host
		{"/events/stream?site=branch", http.StatusForbidden, "only the events of site lab"},
		{"/events?site=branch", http.StatusForbidden, "only the events of site lab"},
		{"/events?mac=nonsense", http.StatusBadRequest, `id="emac-err"`},
		{"/hosts/nonsense/events/stream", http.StatusBadRequest, ""},
	}
	for _, c := range cases {
		if p := sam.get(c.path); p.code != c.code || !strings.Contains(p.body, c.want) {
			t.Errorf("sam GET %s: HTTP %d, want %d with %q:\n%.600s", c.path, p.code, c.code, c.want, p.body)
		}
	}
	s := sam.stream("/hosts/" + mac1 + "/events/stream")
	if s.code != http.StatusOK || s.ctype != "text/event-stream" {
		t.Fatalf("sam's stream of her own host: HTTP %d %q", s.code, s.ctype)
	}
	s.close()
	f.noLeak(t)
}

// TestHostStream: an event stored in the EVENTS stream reaches an open
// host page as its timeline fragment, drawn again; closing the page
// leaves no consumer and no goroutine behind.
func TestHostStream(t *testing.T) {
	f := newFleet(t, nil, nil)
	b := f.browser()
	b.login("alice")
	page := b.get("/hosts/" + mac1)
	mustContain(t, page, `data-stream="/hosts/`+mac1+`/events/stream"`, `<script src="/static/live.js" defer></script>`, `<section id="timeline"`)
	f.publish("lab", "e1", mac1, proto.EventDHCPDiscover, map[string]string{"xid": "7"})
	s := b.stream("/hosts/" + mac1 + "/events/stream")
	if s.code != http.StatusOK {
		t.Fatalf("stream: HTTP %d", s.code)
	}
	// The stored event first: the fragment is drawn once the burst is over.
	waitfor.True(t, "the stored DISCOVER in the fragment", func() bool {
		_, ok := s.find("timeline", "dhcp.discover")
		return ok
	})
	// Another machine's event does not reach this page; this one's does.
	f.publish("lab", "e1", mac2, proto.EventScript, map[string]string{"image": "other-machine"})
	sent := f.publish("lab", "e1", mac1, proto.EventScript, map[string]string{"image": "deb"})
	var got sseMsg
	waitfor.True(t, "the new script event in the fragment", func() bool {
		var ok bool
		got, ok = s.find("timeline", "script.served")
		return ok
	})
	t.Logf("event stored → fragment received: %s", got.at.Sub(sent).Round(time.Millisecond))
	if !strings.Contains(got.data, "<svg class=\"wf\"") || !strings.Contains(got.data, "dhcp.discover") {
		t.Errorf("the fragment is not the whole timeline:\n%s", got.data)
	}
	for _, m := range s.all() {
		if strings.Contains(m.data, "other-machine") {
			t.Errorf("another machine's event reached the page:\n%s", m.data)
		}
	}
	if f.h.OpenStreams() != 1 || f.consumers() != 1 {
		t.Errorf("one open page: %d streams, %d consumers", f.h.OpenStreams(), f.consumers())
	}
	s.close() // the browser goes
	f.noLeak(t)
}

// TestEventsStream: the events page lists the last events the person may
// see and follows from where its list ends; a site admin gets only her
// site's; a reconnecting browser resumes after the last event it got.
func TestEventsStream(t *testing.T) {
	f := newFleet(t, nil, nil)
	f.publish("lab", "e1", mac1, proto.EventDHCPDiscover, map[string]string{"xid": "old-lab"})
	f.publish("branch", "e2", mac3, proto.EventDHCPDiscover, map[string]string{"xid": "old-branch"})
	sam := f.browser()
	sam.login("sam")
	page := sam.get("/events")
	mustContain(t, page, "xid=old-lab", `data-stream="/events/stream?after=2&amp;site=lab"`)
	mustNotContain(t, page, "old-branch")
	alice := f.browser()
	alice.login("alice")
	mustContain(t, alice.get("/events?kind=dhcp"), "xid=old-lab", "xid=old-branch")
	mustNotContain(t, alice.get("/events?kind=script"), "xid=old")

	s := sam.stream("/events/stream?site=lab&after=2")
	k := alice.stream("/events/stream?kind=script.served&after=2")
	// branch's event is stored first: if it leaked, it would come first.
	f.publish("branch", "e2", mac3, proto.EventScript, map[string]string{"image": "branch-one"})
	sent := f.publish("lab", "e1", mac1, proto.EventScript, map[string]string{"image": "lab-one"})
	var got sseMsg
	waitfor.True(t, "lab's new event on sam's page", func() bool {
		var ok bool
		got, ok = s.find("event", "lab-one")
		return ok
	})
	t.Logf("event stored → row received: %s", got.at.Sub(sent).Round(time.Millisecond))
	if all := s.all(); len(all) != 1 || got.id != "4" || !strings.HasPrefix(got.data, "<tr>") {
		t.Errorf("sam's stream: %+v, want one row with id 4", all)
	}
	waitfor.True(t, "both script events on alice's filtered page", func() bool {
		_, a := k.find("event", "branch-one")
		_, b := k.find("event", "lab-one")
		return a && b
	})
	// A browser reconnecting after event 3 (Last-Event-ID) gets 4 on.
	r := alice.stream("/events/stream?after=2", "Last-Event-ID", "3")
	waitfor.True(t, "the resumed stream", func() bool {
		_, ok := r.find("event", "lab-one")
		return ok
	})
	if m := r.all(); m[0].id != "4" {
		t.Errorf("resumed after 3, first event id %s", m[0].id)
	}
	s.close()
	k.close()
	r.close()
	f.noLeak(t)
}

// TestStreamLimits: a session opens only so many streams; idle streams
// send heartbeats; a stream ends when its session expires and when the
// panel shuts down, leaving nothing behind.
func TestStreamLimits(t *testing.T) {
	f := newFleet(t, nil, func(c *web.Config) {
		c.StreamsPerSession = 2
		c.StreamHeartbeat = 20 * time.Millisecond
	})
	b := f.browser()
	csrf := b.login("alice")
	s1 := b.stream("/hosts/" + mac1 + "/events/stream")
	s2 := b.stream("/events/stream")
	s3 := b.stream("/events/stream")
	if s1.code != 200 || s2.code != 200 || s3.code != http.StatusTooManyRequests {
		t.Fatalf("three streams in one session: HTTP %d %d %d, want 200 200 429", s1.code, s2.code, s3.code)
	}
	other := f.browser() // another session has its own allowance
	other.login("vic")
	v := other.stream("/events/stream")
	if v.code != 200 {
		t.Fatalf("another session's stream: HTTP %d", v.code)
	}
	waitfor.True(t, "heartbeats on an idle stream", func() bool { return s2.heartbeats() >= 3 })
	// alice logs out (in another tab): her streams end at their next
	// heartbeat, vic's goes on.
	if p := b.do("POST", "/logout", url.Values{"csrf": {csrf}}); p.code != http.StatusSeeOther {
		t.Fatalf("logout: HTTP %d", p.code)
	}
	waitfor.True(t, "alice's streams ended with her session", func() bool { return s1.isEnded() && s2.isEnded() })
	if v.isEnded() {
		t.Fatal("vic's stream ended with alice's session")
	}
	f.h.CloseStreams() // what the coordinator's server does on shutdown
	waitfor.True(t, "vic's stream ended at shutdown", v.isEnded)
	f.noLeak(t)
	if p := other.get("/events/stream"); p.code != http.StatusTooManyRequests {
		t.Errorf("a stream after shutdown: HTTP %d, want 429", p.code)
	}
}
