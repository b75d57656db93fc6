package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/natstest"
)

func TestSetRequest(t *testing.T) {
	big := `{"facts":"` + strings.Repeat("x", maxRequest) + `"}`
	cases := []struct {
		name, body, want string
	}{
		{"empty", "", ""},
		{"json kept as is", `{"mac":"52:54:00:00:00:01"}`, `{"mac":"52:54:00:00:00:01"}`},
		{"not json becomes a string", `mac=1`, `"mac=1"`},
		{"too long is cut", big, quote(big[:maxRequest] + fmt.Sprintf("… (%d bytes)", len(big)))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r Record
			r.SetRequest([]byte(c.body))
			if diff := cmp.Diff(c.want, string(r.Request)); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func startJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := natstest.Connect(t, natstest.Start(t).ClientURL())
	return js
}

func TestRecordAndRead(t *testing.T) {
	ctx := context.Background()
	js := startJS(t)
	if recs, err := Read(ctx, js, time.Time{}, 0); err != nil || recs != nil {
		t.Fatalf("no stream yet: %v %v", recs, err)
	}
	if err := EnsureStream(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	if recs, err := Read(ctx, js, time.Time{}, 0); err != nil || len(recs) != 0 {
		t.Fatalf("empty stream: %v %v", recs, err)
	}
	l := NewLog(js, nil)
	old := time.Now().Add(-2 * time.Hour).UTC()
	in := []Record{
		{Time: old, Who: "admin", Role: "admin", Action: "site.add", Outcome: Accepted},
		{Who: "bob", Role: "viewer", Action: "host.set", Outcome: Refused, Error: "permission denied"},
		{Who: "admin", Role: "admin", Action: "host.set", Outcome: Accepted},
		{Who: "e1", Role: "edge", Site: "lab", Action: "host.done", Outcome: Accepted},
	}
	for _, r := range in {
		if err := l.Record(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	type row struct{ Who, Action, Outcome string }
	rows := func(recs []Record) []row {
		var out []row
		for _, r := range recs {
			if r.V == 0 || r.Seq == 0 || r.Time.IsZero() {
				t.Errorf("record lacks version, sequence or time: %+v", r)
			}
			out = append(out, row{r.Who, r.Action, r.Outcome})
		}
		return out
	}
	cases := []struct {
		name  string
		since time.Time
		limit int
		want  []row
	}{
		// The stream stores records when they arrive, so "since" selects
		// by arrival: all four arrived just now.
		{"all", time.Now().Add(-time.Hour), 0, []row{{"admin", "site.add", "accepted"}, {"bob", "host.set", "refused"}, {"admin", "host.set", "accepted"}, {"e1", "host.done", "accepted"}}},
		{"newest two", time.Now().Add(-time.Hour), 2, []row{{"admin", "host.set", "accepted"}, {"e1", "host.done", "accepted"}}},
		{"future", time.Now().Add(time.Hour), 0, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			recs, err := Read(ctx, js, c.since, c.limit)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.want, rows(recs)); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestFullLeavesRoomForAnyRecord: while Full says there is room, the
// largest record an accepted change can make is stored, never refused: the
// API asks Full before a change and records it after, so a record that no
// longer fits would leave the change made and unaudited. The largest is a
// request cut at maxRequest whose every byte JSON escapes to six ('<' is
// \u003c).
func TestFullLeavesRoomForAnyRecord(t *testing.T) {
	ctx := context.Background()
	js := startJS(t)
	sc := proto.AuditStreamConfig(1)
	sc.MaxBytes = 256 << 10
	if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	l := NewLog(js, nil)
	stored := func() uint64 {
		t.Helper()
		st, err := js.Stream(ctx, proto.StreamAudit)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().State.Bytes
	}
	filler := Record{Who: "admin", Role: "admin", Action: proto.APISiteAdd, Outcome: Accepted, Request: json.RawMessage(`{"name":"lab"}`)}
	if err := l.Record(ctx, filler); err != nil {
		t.Fatal(err)
	}
	each := stored()
	// Fill until one more filler would leave less room than Full asks for.
	for i := 0; uint64(sc.MaxBytes)-stored() >= headroom+each; i++ {
		if i > 10000 {
			t.Fatal("the stream does not fill")
		}
		if err := l.Record(ctx, filler); err != nil {
			t.Fatal(err)
		}
	}
	if l.Full(ctx) {
		t.Fatalf("Full with %d bytes of room, headroom %d", uint64(sc.MaxBytes)-stored(), headroom)
	}
	worst := Record{Who: strings.Repeat("a", 64), Role: "admin", Key: "U" + strings.Repeat("A", 55), Action: proto.APIHostSet, Outcome: Accepted}
	worst.SetRequest([]byte(`{"v":1,"mac":"52:54:00:00:00:01","vars":{"x":"` + strings.Repeat("<", 2*maxRequest) + `"}}`))
	if err := l.Record(ctx, worst); err != nil {
		t.Fatalf("Full said there was room (%d bytes), yet the largest record was refused: %v", uint64(sc.MaxBytes)-stored(), err)
	}
}

// TestRefusalsPerMinute: one caller's refusals are stored up to
// RefusalsPerMinute a minute, then one saying the rest are counted, then
// counted; another caller, and the next minute, start afresh. Accepted
// changes are never held back.
func TestRefusalsPerMinute(t *testing.T) {
	ctx := context.Background()
	js := startJS(t)
	if err := EnsureStream(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	l := NewLog(js, nil)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	send := func(who, outcome string, n int) {
		t.Helper()
		for range n {
			if err := l.Record(ctx, Record{Who: who, Key: "U" + who, Action: proto.APIHostSet, Outcome: outcome, Error: "permission denied"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	send("bob", Refused, RefusalsPerMinute+10)
	send("carol", Refused, 2)
	send("admin", Accepted, RefusalsPerMinute+10)
	now = now.Add(time.Minute)
	send("bob", Refused, 1)
	recs, err := Read(ctx, js, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	notes := 0
	for _, r := range recs {
		count[r.Who]++
		if strings.Contains(r.Error, "counted, not stored") {
			notes++
		}
	}
	want := map[string]int{"bob": RefusalsPerMinute + 1 + 1, "carol": 2, "admin": RefusalsPerMinute + 10}
	if diff := cmp.Diff(want, count); diff != "" || notes != 1 {
		t.Errorf("records stored per caller (-want +got):\n%s\nnotes about counting: %d, want 1", diff, notes)
	}
}
