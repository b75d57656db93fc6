package events

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

func TestDeliveryAcrossOutage(t *testing.T) {
	tests := []struct {
		name string
		// before is how many events are sent with the server up before it
		// stops; 0 means the server is not there when the recorder starts.
		before, during, after int
	}{
		{name: "server down from the start", before: 0, during: 30, after: 5},
		{name: "server stops midway", before: 20, during: 30, after: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			storeDir := t.TempDir()
			port := freePort(t)
			var srv = startServer(t, port, storeDir)
			_, js := connect(t, port)
			ensureStream(t, js)
			if tt.before == 0 {
				stopServer(srv)
			}
			r := newRecorder(t, t.TempDir(), 0)
			stop := startRun(t, r, js)

			emitN(r, proto.EventDHCPDiscover, 0, tt.before)
			if tt.before > 0 {
				waitfor.True(t, "events before the outage", func() bool { return streamCount(js) == tt.before })
				stopServer(srv)
			}
			emitN(r, proto.EventDHCPDiscover, tt.before, tt.during)
			waitfor.True(t, "events buffered during the outage", func() bool { return r.Stats().Buffered == uint64(tt.during) })

			// The same server comes back: same port, same storage.
			startServer(t, port, storeDir)
			emitN(r, proto.EventDHCPDiscover, tt.before+tt.during, tt.after)
			total := tt.before + tt.during + tt.after
			waitfor.True(t, "every event after the outage", func() bool { return r.Stats().Buffered == 0 && streamCount(js) >= total })
			stop()

			got := streamEvents(t, js)
			if diff := cmp.Diff(want(proto.EventDHCPDiscover, 0, total), summary(got)); diff != "" {
				t.Errorf("stream content (-want +got):\n%s", diff)
			}
			ids := map[string]bool{}
			for _, e := range got {
				if e.MsgID == "" || e.MsgID != e.Event.ID || ids[e.MsgID] {
					t.Errorf("event %+v: Nats-Msg-Id %q missing, different from the event ID or repeated", e.Event, e.MsgID)
				}
				ids[e.MsgID] = true
			}
			if s := r.Stats(); s.Sent < uint64(total) || s.Dropped != 0 {
				t.Errorf("stats %+v: want Sent >= %d, Dropped 0", s, total)
			}
		})
	}
}

func TestRestartResumes(t *testing.T) {
	tests := []struct {
		name string
		// sentByFirst events are delivered by the first recorder, then
		// unsentByFirst are emitted while it has no link, and it stops.
		sentByFirst, unsentByFirst, bySecond int
		// wantRaw is how many publishes the server sees in all.
		wantRaw int
	}{
		{name: "clean stop", sentByFirst: 40, unsentByFirst: 0, bySecond: 5, wantRaw: 45},
		{name: "unsent events survive the restart", sentByFirst: 10, unsentByFirst: 25, bySecond: 5, wantRaw: 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, -1, t.TempDir())
			port := serverPort(srv)
			_, js := connect(t, port)
			ensureStream(t, js)
			raw := countRaw(t, port)
			dir := t.TempDir()

			first := newRecorder(t, dir, 0)
			stop := startRun(t, first, js)
			emitN(first, proto.EventTFTPStart, 0, tt.sentByFirst)
			waitfor.True(t, "first recorder's events", func() bool { return streamCount(js) == tt.sentByFirst && first.Stats().Buffered == 0 })
			stop()
			emitN(first, proto.EventTFTPStart, tt.sentByFirst, tt.unsentByFirst)
			if err := first.Close(); err != nil {
				t.Fatal(err)
			}

			second := newRecorder(t, dir, 0)
			if got := second.Stats().Buffered; got != uint64(tt.unsentByFirst) {
				t.Errorf("after restart Buffered = %d, want %d", got, tt.unsentByFirst)
			}
			startRun(t, second, js)
			emitN(second, proto.EventTFTPStart, tt.sentByFirst+tt.unsentByFirst, tt.bySecond)
			total := tt.sentByFirst + tt.unsentByFirst + tt.bySecond
			waitfor.True(t, "all events", func() bool { return second.Stats().Buffered == 0 && raw.count(t) >= tt.wantRaw })

			if diff := cmp.Diff(want(proto.EventTFTPStart, 0, total), summary(streamEvents(t, js))); diff != "" {
				t.Errorf("stream content (-want +got):\n%s", diff)
			}
			if got := raw.count(t); got != tt.wantRaw {
				t.Errorf("server saw %d publishes, want %d: acknowledged events were resent", got, tt.wantRaw)
			}
		})
	}
}

// TestCrashBeforeCursorSaved: the edge dies after JetStream acknowledged
// events but before the cursor recording that reached the disk. The next
// run resends them and the stream's duplicate window absorbs the repeats.
func TestCrashBeforeCursorSaved(t *testing.T) {
	srv := startServer(t, -1, t.TempDir())
	port := serverPort(srv)
	_, js := connect(t, port)
	ensureStream(t, js)
	raw := countRaw(t, port)
	dir := t.TempDir()

	r := newRecorder(t, dir, 0)
	emitN(r, proto.EventTFTPDone, 0, 10)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// The disk as it is just before the sends: 10 events, none acked.
	snapshot := map[string][]byte{}
	for _, name := range []string{logFile, stateFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		snapshot[name] = b
	}

	r = newRecorder(t, dir, 0)
	stop := startRun(t, r, js)
	waitfor.True(t, "first delivery", func() bool { return streamCount(js) == 10 && r.Stats().Buffered == 0 })
	stop()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Crash: none of what the run wrote after the sends survived.
	for name, b := range snapshot {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}

	r = newRecorder(t, dir, 0)
	if got := r.Stats().Buffered; got != 10 {
		t.Fatalf("after the crash Buffered = %d, want 10", got)
	}
	startRun(t, r, js)
	emitN(r, proto.EventTFTPDone, 10, 3)
	waitfor.True(t, "redelivery", func() bool { return r.Stats().Buffered == 0 && raw.count(t) >= 23 })
	if diff := cmp.Diff(want(proto.EventTFTPDone, 0, 13), summary(streamEvents(t, js))); diff != "" {
		t.Errorf("stream content (-want +got):\n%s", diff)
	}
	if got := raw.count(t); got != 23 {
		t.Errorf("server saw %d publishes, want 23 (10 + 10 resent + 3)", got)
	}
}

func TestBoundDropsOldest(t *testing.T) {
	tests := []struct {
		name     string
		max      int
		emitted  int
		restart  bool // close and reopen the buffer before sending
		paced    bool // let each event reach the disk before the next, so dead lines pile up in the log
		wantSent []string
	}{
		{name: "under the bound", max: 10, emitted: 10, wantSent: want(proto.EventScript, 0, 10)},
		{name: "over the bound", max: 10, emitted: 25,
			wantSent: append([]string{"dropped:15"}, want(proto.EventScript, 15, 10)...)},
		{name: "over the bound across a restart", max: 10, emitted: 25, restart: true,
			wantSent: append([]string{"dropped:15"}, want(proto.EventScript, 15, 10)...)},
		{name: "far over the bound", max: 3, emitted: 1000,
			wantSent: append([]string{"dropped:997"}, want(proto.EventScript, 997, 3)...)},
		{name: "dead lines are compacted", max: 3, emitted: 300, paced: true,
			wantSent: append([]string{"dropped:297"}, want(proto.EventScript, 297, 3)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			r := newRecorder(t, dir, tt.max)
			if tt.paced {
				for i := 0; i < tt.emitted; i++ {
					emitN(r, proto.EventScript, i, 1)
					waitfor.True(t, "the writer", func() bool {
						r.mu.Lock()
						defer r.mu.Unlock()
						return r.durable == r.nextSeq-1
					})
				}
			} else {
				emitN(r, proto.EventScript, 0, tt.emitted)
			}
			dropped := uint64(max(0, tt.emitted-tt.max))
			if diff := cmp.Diff(Stats{Buffered: uint64(min(tt.emitted, tt.max)), Dropped: dropped}, r.Stats()); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
			waitfor.True(t, "the writer", func() bool {
				r.mu.Lock()
				defer r.mu.Unlock()
				return len(r.pending) == 0 && r.durable == r.nextSeq-1
			})
			r.fileMu.Lock() // the writer's last round is over
			lines := countLines(t, filepath.Join(dir, logFile))
			r.fileMu.Unlock()
			// The log holds at most the bound plus the dead lines that
			// trigger a compaction.
			if lines > max(tt.max, minCompact)+tt.max {
				t.Errorf("log has %d lines for a bound of %d", lines, tt.max)
			}
			if tt.restart {
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
				r = newRecorder(t, dir, tt.max)
				if diff := cmp.Diff(Stats{Buffered: uint64(min(tt.emitted, tt.max))}, r.Stats()); diff != "" {
					t.Errorf("stats after restart (-want +got):\n%s", diff)
				}
			}
			srv := startServer(t, -1, t.TempDir())
			_, js := connect(t, serverPort(srv))
			ensureStream(t, js)
			startRun(t, r, js)
			waitfor.True(t, "delivery", func() bool { return r.Stats().Buffered == 0 && streamCount(js) >= len(tt.wantSent) })
			got := streamEvents(t, js)
			if diff := cmp.Diff(tt.wantSent, summary(got)); diff != "" {
				t.Errorf("stream content (-want +got):\n%s", diff)
			}
			if tt.emitted > tt.max && got[0].Subject != proto.EventSubject("lab", "edge1", "") {
				t.Errorf("drop report subject %q", got[0].Subject)
			}
		})
	}
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		n++
	}
	return n
}

func TestLogCompactedWhenAllSent(t *testing.T) {
	srv := startServer(t, -1, t.TempDir())
	_, js := connect(t, serverPort(srv))
	ensureStream(t, js)
	dir := t.TempDir()
	r := newRecorder(t, dir, 0)
	emitN(r, proto.EventArtifactStart, 0, 50)
	startRun(t, r, js)
	waitfor.True(t, "delivery and compaction", func() bool {
		st, err := os.Stat(filepath.Join(dir, logFile))
		return err == nil && st.Size() == 0 && r.Stats().Buffered == 0
	})
	// Sequence numbers continue after the compaction and a restart.
	emitN(r, proto.EventArtifactStart, 50, 5)
	waitfor.True(t, "more delivery", func() bool { return streamCount(js) == 55 })
	if diff := cmp.Diff(want(proto.EventArtifactStart, 0, 55), summary(streamEvents(t, js))); diff != "" {
		t.Errorf("stream content (-want +got):\n%s", diff)
	}
}

func TestTornLog(t *testing.T) {
	tests := []struct {
		name   string
		append string // written to the end of the log after a clean close
	}{
		{name: "torn json line", append: `{"seq":4,"id":"x-4","subj`},
		{name: "torn garbage", append: "\x00\x00\x00"},
		{name: "corrupt complete line", append: "not json\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			r := newRecorder(t, dir, 0)
			emitN(r, proto.EventDHCPAck, 0, 3)
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(filepath.Join(dir, logFile), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(tt.append)
			f.Close()

			r = newRecorder(t, dir, 0)
			if got := r.Stats().Buffered; got != 3 {
				t.Errorf("Buffered = %d after recovery, want 3", got)
			}
			emitN(r, proto.EventDHCPAck, 3, 2)
			srv := startServer(t, -1, t.TempDir())
			_, js := connect(t, serverPort(srv))
			ensureStream(t, js)
			startRun(t, r, js)
			waitfor.True(t, "delivery", func() bool { return r.Stats().Buffered == 0 && streamCount(js) >= 5 })
			if diff := cmp.Diff(want(proto.EventDHCPAck, 0, 5), summary(streamEvents(t, js))); diff != "" {
				t.Errorf("stream content (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEventContent(t *testing.T) {
	srv := startServer(t, -1, t.TempDir())
	_, js := connect(t, serverPort(srv))
	ensureStream(t, js)
	now := time.Date(2025, 11, 25, 14, 0, 0, 0, time.FixedZone("CET", 3600))
	r, err := NewRecorder(Config{Dir: t.TempDir(), Site: "lab", Edge: "edge-1", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() }) // after Run stops: cleanups run last-in first-out
	detail := map[string]string{"xid": "0x1234", "file": "undionly.kpxe"}
	r.Emit(proto.EventDHCPOffer, "AA-BB-CC-DD-EE-0F", detail)
	detail["xid"] = "changed after Emit"
	r.Emit(proto.EventScript, "", nil)
	r.Emit(proto.EventTFTPError, "not-a-mac", nil)
	startRun(t, r, js)
	waitfor.True(t, "delivery", func() bool { return streamCount(js) == 3 })

	wantEvents := []storedEvent{
		{Subject: "fleetboot.events.lab.edge-1.aabbccddee0f", Event: proto.Event{V: proto.Version, Time: now.UTC(), Site: "lab", Edge: "edge-1",
			MAC: "aa:bb:cc:dd:ee:0f", Kind: proto.EventDHCPOffer, Detail: map[string]string{"xid": "0x1234", "file": "undionly.kpxe"}}},
		{Subject: "fleetboot.events.lab.edge-1.none", Event: proto.Event{V: proto.Version, Time: now.UTC(), Site: "lab", Edge: "edge-1",
			Kind: proto.EventScript}},
		{Subject: "fleetboot.events.lab.edge-1.none", Event: proto.Event{V: proto.Version, Time: now.UTC(), Site: "lab", Edge: "edge-1",
			MAC: "not-a-mac", Kind: proto.EventTFTPError}},
	}
	got := streamEvents(t, js)
	if diff := cmp.Diff(wantEvents, got, cmpopts.IgnoreFields(storedEvent{}, "MsgID"), cmpopts.IgnoreFields(proto.Event{}, "ID")); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	for _, e := range got {
		if e.Event.ID == "" || e.MsgID != e.Event.ID {
			t.Errorf("event ID %q, Nats-Msg-Id %q: want equal and non-empty", e.Event.ID, e.MsgID)
		}
	}
}

func TestNewRecorderErrors(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "no dir", cfg: Config{Site: "lab", Edge: "e1"}, wantErr: "no buffer directory"},
		{name: "bad site", cfg: Config{Dir: "x", Site: "Lab.1", Edge: "e1"}, wantErr: "invalid site name"},
		{name: "edge with a dot", cfg: Config{Dir: "x", Site: "lab", Edge: "e.1"}, wantErr: "invalid edge name"},
		{name: "empty edge", cfg: Config{Dir: "x", Site: "lab"}, wantErr: "invalid edge name"},
		{name: "negative bound", cfg: Config{Dir: "x", Site: "lab", Edge: "e1", MaxBuffered: -1}, wantErr: "negative"},
		{name: "dir is a file", cfg: Config{Dir: "/dev/null/x", Site: "lab", Edge: "e1"}, wantErr: "buffer directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewRecorder(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewRecorder error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestEnsureStream(t *testing.T) {
	srv := startServer(t, -1, t.TempDir())
	_, js := connect(t, serverPort(srv))
	ctx := context.Background()
	tests := []struct {
		name     string
		replicas int
		maxBytes int64
		wantErr  string
	}{
		{name: "create", replicas: 1, maxBytes: 32 << 20},
		{name: "update the limit", replicas: 1, maxBytes: 16 << 20},
		{name: "no limit", replicas: 1, maxBytes: 0, wantErr: "byte limit"},
		{name: "no replicas", replicas: 0, maxBytes: 1 << 20, wantErr: "replicas"},
		{name: "more replicas than servers", replicas: 3, maxBytes: 1 << 20, wantErr: "create stream EVENTS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := EnsureStream(ctx, js, tt.replicas, tt.maxBytes)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("EnsureStream error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st, err := js.Stream(ctx, proto.StreamEvents)
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			type cfg struct {
				Subjects   []string
				MaxBytes   int64
				Duplicates time.Duration
				Storage    string
			}
			c := info.Config
			got := cfg{Subjects: c.Subjects, MaxBytes: c.MaxBytes, Duplicates: c.Duplicates, Storage: c.Storage.String()}
			wantCfg := cfg{Subjects: []string{"fleetboot.events.>"}, MaxBytes: tt.maxBytes, Duplicates: DuplicateWindow, Storage: "File"}
			if diff := cmp.Diff(wantCfg, got); diff != "" {
				t.Errorf("stream config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSecondRunRefused(t *testing.T) {
	srv := startServer(t, -1, t.TempDir())
	_, js := connect(t, serverPort(srv))
	r := newRecorder(t, t.TempDir(), 0)
	startRun(t, r, js)
	waitfor.True(t, "first Run to start", r.running.Load)
	if err := r.Run(context.Background(), js); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Run = %v, want an 'already running' error", err)
	}
}
