package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/cmd/fleetboot/cli"
	"github.com/fleetboot/fleetboot/proto"
)

// These tests run the cobra command tree in the test process (cli.Main)
// against a real coordinator, with events published into its EVENTS stream
// by a real NATS client, exactly as an edge's recorder does.

// runMain runs one command line in-process.
func runMain(t *testing.T, ctx context.Context, natsURL string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Main(ctx, "test", append([]string{"--nats", natsURL}, args...), strings.NewReader(""), &out, &errb)
	return result{out.String(), errb.String(), code}
}

// publisher sends events like an edge: subject per site/edge/MAC, the event
// ID as Nats-Msg-Id.
type publisher struct {
	t  *testing.T
	js jetstream.JetStream
}

func newPublisher(t *testing.T, url string) publisher {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return publisher{t, js}
}

func (p publisher) publish(evs ...proto.Event) {
	p.t.Helper()
	for _, ev := range evs {
		data, err := json.Marshal(ev)
		if err != nil {
			p.t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = p.js.Publish(ctx, proto.EventSubject(ev.Site, ev.Edge, ev.MAC), data, jetstream.WithMsgID(ev.ID))
		cancel()
		if err != nil {
			p.t.Fatalf("publish %s: %v", ev.ID, err)
		}
	}
}

var evBase = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

// ev builds an event at evBase+sec with detail from "k=v" pairs ('_' is a space).
func ev(id string, sec float64, site, edge, mac, kind, detail string) proto.Event {
	d := map[string]string{}
	for _, kv := range strings.Fields(detail) {
		k, v, _ := strings.Cut(kv, "=")
		d[k] = strings.ReplaceAll(v, "_", " ")
	}
	if len(d) == 0 {
		d = nil
	}
	return proto.Event{V: proto.Version, ID: id, Time: evBase.Add(time.Duration(sec * float64(time.Second))),
		Site: site, Edge: edge, MAC: mac, Kind: kind, Detail: d}
}

const (
	macA = "52:54:00:00:00:0a"
	macB = "52:54:00:00:00:0b"
)

func fixtureEvents() []proto.Event {
	return []proto.Event{
		ev("a1", 0, "lab", "edge1", macA, proto.EventDHCPDiscover, "xid=0x1001 arch=efi-x64 decision=known_host;_PXE_ROM:_ipxe.efi"),
		ev("a2", 0.01, "lab", "edge1", macA, proto.EventDHCPOffer, "xid=0x1001 ip=10.0.0.20 arch=efi-x64 decision=known_host;_PXE_ROM:_ipxe.efi"),
		ev("b1", 0.5, "dc1", "edge2", macB, proto.EventDHCPDiscover, "xid=0x2001 decision=ignored:_unknown_MAC,_site_policy_ignore"),
		ev("a3", 1, "lab", "edge1", macA, proto.EventDHCPRequest, "xid=0x1001 ip=10.0.0.20"),
		ev("a4", 1.01, "lab", "edge1", macA, proto.EventDHCPAck, "xid=0x1001 ip=10.0.0.20"),
		ev("a5", 2, "lab", "edge1", macA, proto.EventTFTPStart, "file=ipxe.efi ip=10.0.0.20"),
		ev("a6", 2.3, "lab", "edge1", macA, proto.EventTFTPDone, "file=ipxe.efi bytes=1048576 duration_ms=300 ip=10.0.0.20"),
		ev("b2", 4.5, "dc1", "edge2", macB, proto.EventDHCPDiscover, "xid=0x2001 decision=ignored:_unknown_MAC,_site_policy_ignore"),
		ev("a7", 5, "lab", "edge1", macA, proto.EventScript, "decision=boot image=debian12 reason=host_boots_image_debian12 format=ipxe"),
	}
}

// TestEventsCommand reads the EVENTS stream through `fleetboot events`.
func TestEventsCommand(t *testing.T) {
	url := startCoordinator(t, "dir://"+t.TempDir())
	ctx := context.Background()
	pub := newPublisher(t, url)

	// An empty stream ends at once.
	if r := runMain(t, ctx, url, "events", "-o", "json"); r.code != 0 || r.stdout != "[]\n" {
		t.Fatalf("empty stream: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}

	pub.publish(fixtureEvents()...)
	pub.publish(fixtureEvents()[0]) // an edge resending after an outage: deduplicated by ID

	since := "--since=2025-03-01T00:00:00Z"
	goldens := []struct {
		name   string
		args   []string
		golden string
	}{
		{"all, table", []string{"events", since}, "events-all.txt"},
		{"all, json", []string{"events", since, "-o", "json"}, "events-all.json"},
		{"one host, another MAC spelling", []string{"events", since, "--host", "5254.0000.000a"}, "events-host.txt"},
		{"one site", []string{"events", since, "--site", "dc1", "-o", "json"}, "events-site.json"},
		{"one edge, one kind", []string{"events", since, "--edge", "edge1", "--kind", "tftp."}, "events-edge-kind.txt"},
	}
	for _, g := range goldens {
		t.Run(g.name, func(t *testing.T) {
			r := runMain(t, ctx, url, g.args...)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("code %d stderr %q", r.code, r.stderr)
			}
			golden(t, g.golden, r.stdout)
		})
	}

	// ids runs the command with -o json and returns the event IDs, checking
	// the output is exactly an array of proto.Event.
	ids := func(t *testing.T, args ...string) []string {
		t.Helper()
		r := runMain(t, ctx, url, append(args, "-o", "json")...)
		if r.code != 0 {
			t.Fatalf("%v: code %d stderr %q", args, r.code, r.stderr)
		}
		var evs []proto.Event
		dec := json.NewDecoder(strings.NewReader(r.stdout))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&evs); err != nil {
			t.Fatalf("%v: not a JSON array of events: %v\n%s", args, err, r.stdout)
		}
		out := []string{}
		for _, e := range evs {
			out = append(out, e.ID)
		}
		return out
	}

	t.Run("filters", func(t *testing.T) {
		tests := []struct {
			name string
			args []string
			want []string
		}{
			{"host", []string{"events", since, "--host", macA}, []string{"a1", "a2", "a3", "a4", "a5", "a6", "a7"}},
			{"host with no events", []string{"events", since, "--host", "52:54:00:00:00:99"}, []string{}},
			{"site", []string{"events", since, "--site", "dc1"}, []string{"b1", "b2"}},
			{"site without events", []string{"events", since, "--site", "nowhere"}, []string{}},
			{"kind prefix", []string{"events", since, "--kind", "dhcp"}, []string{"a1", "a2", "b1", "a3", "a4", "b2"}},
			{"since an RFC 3339 time", []string{"events", "--since", "2025-03-01T09:00:04Z"}, []string{"b2", "a7"}},
			{"default window of an hour", []string{"events"}, []string{}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if diff := cmp.Diff(tt.want, ids(t, tt.args...)); diff != "" {
					t.Errorf("event IDs (-want +got):\n%s", diff)
				}
			})
		}
	})

	t.Run("since a duration", func(t *testing.T) {
		now := time.Now().UTC()
		old, recent := ev("old", 0, "lab", "edge1", macA, proto.EventDHCPDiscover, "xid=1"), ev("recent", 0, "lab", "edge1", macA, proto.EventDHCPDiscover, "xid=2")
		old.Time, recent.Time = now.Add(-3*time.Hour), now.Add(-10*time.Minute)
		pub.publish(old, recent)
		tests := []struct {
			since string
			want  []string
		}{
			{"1h", []string{"recent"}},
			{"4h", []string{"old", "recent"}},
			{"1d", []string{"old", "recent"}},
		}
		for _, tt := range tests {
			t.Run(tt.since, func(t *testing.T) {
				if diff := cmp.Diff(tt.want, ids(t, "events", "--host", macA, "--since", tt.since)); diff != "" {
					t.Errorf("event IDs (-want +got):\n%s", diff)
				}
			})
		}
	})

	t.Run("many events, several fetches, in order", func(t *testing.T) {
		const n = 1300
		mac := "52:54:00:00:01:00"
		start := time.Now().UTC().Add(-time.Minute)
		var want []string
		for i := range n {
			e := ev(fmt.Sprintf("m%04d", i), 0, "lab", "edge1", mac, proto.EventTFTPStart, "file=ipxe.efi")
			e.Time = start.Add(time.Duration(i) * time.Millisecond)
			pub.publish(e)
			want = append(want, e.ID)
		}
		if diff := cmp.Diff(want, ids(t, "events", "--host", mac)); diff != "" {
			t.Errorf("event IDs (-want +got):\n%s", diff)
		}
	})
}

// lineWriter hands complete lines of a running command's output to the test.
type lineWriter struct {
	mu    sync.Mutex
	buf   []byte
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.lines <- string(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

func TestEventsFollow(t *testing.T) {
	url := startCoordinator(t, "dir://"+t.TempDir())
	pub := newPublisher(t, url)
	now := time.Now().UTC()
	mk := func(id, mac string) proto.Event {
		e := ev(id, 0, "lab", "edge1", mac, proto.EventDHCPDiscover, "xid=0x"+id)
		e.Time = now
		return e
	}
	pub.publish(mk("f1", macA))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lineWriter{lines: make(chan string, 100)}
	var errb bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Main(ctx, "test", []string{"--nats", url, "events", "--follow", "--host", macA, "--since", "1h", "-o", "json"}, strings.NewReader(""), out, &errb)
	}()
	next := func() proto.Event {
		t.Helper()
		select {
		case line := <-out.lines:
			var e proto.Event
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("--follow -o json printed %q: %v", line, err)
			}
			return e
		case code := <-done:
			t.Fatalf("events --follow ended with code %d: %s", code, errb.String())
		case <-time.After(30 * time.Second):
			t.Fatal("events --follow printed nothing within 30 s")
		}
		return proto.Event{}
	}
	// The stored event first, then new ones as they come; another MAC's
	// event in between never shows.
	if e := next(); e.ID != "f1" {
		t.Fatalf("first event %q, want f1", e.ID)
	}
	pub.publish(mk("f2", macA), mk("other", macB), mk("f3", macA))
	for _, want := range []string{"f2", "f3"} {
		if e := next(); e.ID != want {
			t.Fatalf("event %q, want %q", e.ID, want)
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("interrupted --follow: exit code %d, stderr %q", code, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("events --follow did not stop when its context ended")
	}
}

// TestEventsBadInput: every refusal is one line on stderr and a non-zero
// exit, 3 when the coordinator's NATS cannot be reached.
func TestEventsBadInput(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "nats://" + l.Addr().String()
	l.Close()
	unreachable := "fleetboot: cannot reach the coordinator's NATS at " + dead + ": nats: no servers available for connection\n"
	badMAC := `fleetboot: invalid MAC address "52:54:00:zz:00:01": want aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff` + "\n"
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"events: bad MAC", []string{"events", "--host", "52:54:00:zz:00:01"}, 1, badMAC},
		{"events: bad --since", []string{"events", "--since", "yesterday"}, 1,
			`fleetboot: invalid --since "yesterday": want a duration such as 1h, 30m or 7d, or a time such as 2025-03-01T09:00:00Z` + "\n"},
		{"events: negative --since", []string{"events", "--since", "-1h"}, 1,
			`fleetboot: invalid --since "-1h": want a duration such as 1h, 30m or 7d, or a time such as 2025-03-01T09:00:00Z` + "\n"},
		{"events: bad site", []string{"events", "--site", "Lab.1"}, 1,
			`fleetboot: invalid site name "Lab.1": use lower-case letters, digits, '_' or '-', starting with a letter or digit (at most 64, no '.')` + "\n"},
		{"events: bad edge", []string{"events", "--edge", "edge 1"}, 1,
			`fleetboot: invalid edge name "edge 1": use lower-case letters, digits, '_' or '-', starting with a letter or digit (at most 64, no '.')` + "\n"},
		{"events: bad output", []string{"events", "-o", "yaml"}, 1, "fleetboot: invalid --output \"yaml\": want table or json\n"},
		{"events: unreachable", []string{"events"}, 3, unreachable},
		{"events --follow: unreachable", []string{"events", "--follow"}, 3, unreachable},
		{"timeline: bad MAC", []string{"host", "timeline", "52:54:00:zz:00:01"}, 1, badMAC},
		{"timeline: missing MAC", []string{"host", "timeline"}, 1, "fleetboot: fleetboot host timeline: want MAC, got 0 argument(s) (see --help)\n"},
		{"timeline: bad --since", []string{"host", "timeline", macA, "--since", "3"}, 1,
			`fleetboot: invalid --since "3": want a duration such as 1h, 30m or 7d, or a time such as 2025-03-01T09:00:00Z` + "\n"},
		{"timeline: bad --boots", []string{"host", "timeline", macA, "--boots", "-1"}, 1, "fleetboot: invalid --boots -1: want 1 or more, or 0 for all\n"},
		{"timeline: unreachable", []string{"host", "timeline", macA}, 3, unreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runMain(t, context.Background(), dead, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit code %d, want %d", r.code, tt.code)
			}
			if r.stderr != tt.stderr {
				t.Errorf("stderr = %q\nwant     %q", r.stderr, tt.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
		})
	}
}
