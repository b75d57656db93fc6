package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

func TestParseCmdline(t *testing.T) {
	tests := []struct {
		name, cmdline string
		want          Boot
		err           string
	}{
		{
			name:    "as the edge renders it",
			cmdline: "initrd=discovery.img console=ttyS0 fleetboot.edge=http://10.0.0.1:8080 BOOTIF=01-52-54-00-AA-00-01 fleetboot.token=abc_-1",
			want:    Boot{MAC: "52:54:00:aa:00:01", Edge: "http://10.0.0.1:8080", Token: "abc_-1"},
		},
		{
			name:    "fleetboot.mac instead of BOOTIF, trailing slash",
			cmdline: "fleetboot.mac=52:54:00:aa:00:01 fleetboot.edge=http://edge/ fleetboot.token=t",
			want:    Boot{MAC: "52:54:00:aa:00:01", Edge: "http://edge", Token: "t"},
		},
		{name: "nothing", cmdline: "console=ttyS0 quiet", err: "lacks BOOTIF, fleetboot.edge, fleetboot.token"},
		{name: "no token", cmdline: "BOOTIF=01-52-54-00-aa-00-01 fleetboot.edge=http://e", err: "lacks fleetboot.token"},
		{name: "BOOTIF of another hardware type", cmdline: "BOOTIF=06-52-54-00-aa-00-01", err: "want 01-"},
		{name: "bad MAC", cmdline: "BOOTIF=01-52-54", err: "BOOTIF"},
		{name: "edge not a URL", cmdline: "fleetboot.edge=10.0.0.1:8080", err: "want http://HOST"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCmdline(tc.cmdline)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// fakeEdge answers the discovery endpoints as a script says: facts refused
// refuseFacts times, then taken; "wait" waits times, then "reboot".
type fakeEdge struct {
	mu          sync.Mutex
	refuseFacts int
	waits       int
	facts       [][]byte
	asked       int
	queries     []string
}

func (f *fakeEdge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
	switch r.URL.Path {
	case proto.DiscoveryFactsPath:
		if f.refuseFacts > 0 {
			f.refuseFacts--
			http.Error(w, "httpboot: the coordinator did not take the callback", http.StatusBadGateway)
			return
		}
		b, _ := io.ReadAll(r.Body)
		f.facts = append(f.facts, b)
		w.WriteHeader(http.StatusNoContent)
	case proto.DiscoveryNextPath:
		f.asked++
		ans := proto.NextAnswer{V: 1, Action: proto.NextWait, Reason: "unknown host: waiting for an assignment"}
		if f.asked > f.waits {
			ans = proto.NextAnswer{V: 1, Action: proto.NextReboot, Image: "img-a", Reason: "host boots image img-a"}
		}
		json.NewEncoder(w).Encode(ans)
	default:
		http.NotFound(w, r)
	}
}

func TestRun(t *testing.T) {
	edge := &fakeEdge{refuseFacts: 2, waits: 10}
	srv := httptest.NewServer(edge)
	defer srv.Close()
	rebooted := 0
	collected := 0
	cfg := Config{
		Boot: Boot{MAC: "52:54:00:aa:00:01", Edge: srv.URL, Token: "tok+/="},
		Facts: func() (proto.Facts, error) {
			collected++
			return proto.Facts{V: 1, BootMAC: "52:54:00:aa:00:01", CPUs: 2}, nil
		},
		Every:  time.Millisecond,
		Reboot: func() error { rebooted++; return nil },
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := Run(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if rebooted != 1 {
		t.Errorf("rebooted %d times, want 1", rebooted)
	}
	if len(edge.facts) != 1 || collected != 3 {
		t.Errorf("facts taken %d times (want 1), collected %d times (want 3: twice refused)", len(edge.facts), collected)
	}
	var f proto.Facts
	if err := json.Unmarshal(edge.facts[0], &f); err != nil || f.CPUs != 2 {
		t.Errorf("facts body %s: %v", edge.facts[0], err)
	}
	if edge.asked != 11 {
		t.Errorf("asked %d times, want 11 (10 waits, then reboot)", edge.asked)
	}
	// Refused reports back off: tried at questions 1, 3 (after skipping
	// one) and 6 (after skipping two), where it is taken.
	var reports []int
	asked := 0
	for _, q := range edge.queries {
		if strings.HasPrefix(q, "GET ") {
			asked++
		} else {
			reports = append(reports, asked+1)
		}
	}
	if d := cmp.Diff([]int{1, 3, 6}, reports); d != "" {
		t.Errorf("reports before question n (-want +got):\n%s", d)
	}
	// The token is escaped in the query: base64 padding and + survive.
	if want := "POST /api/v1/facts?mac=52%3A54%3A00%3Aaa%3A00%3A01&token=tok%2B%2F%3D"; edge.queries[0] != want {
		t.Errorf("first request %q, want %q", edge.queries[0], want)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	edge := &fakeEdge{waits: 1 << 30}
	srv := httptest.NewServer(edge)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := Run(ctx, Config{
		Boot:   Boot{MAC: "52:54:00:aa:00:01", Edge: srv.URL, Token: "t"},
		Facts:  func() (proto.Facts, error) { return proto.Facts{}, nil },
		Every:  time.Millisecond,
		Reboot: func() error { t.Error("rebooted while waiting"); return nil },
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want the context's", err)
	}
}

func TestRunRefusesUnknownAction(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == proto.DiscoveryNextPath {
			io.WriteString(w, `{"v":1,"action":"format-disks"}`)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	_, err := next(context.Background(), Config{Boot: Boot{MAC: "52:54:00:aa:00:01", Edge: srv.URL, Token: "t"}, Client: srv.Client()})
	if err == nil || !strings.Contains(err.Error(), "unknown action") {
		t.Errorf("err %v, want unknown action", err)
	}
}
