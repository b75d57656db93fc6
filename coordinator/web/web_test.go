package web

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

type fakeDesired struct{ hosts []proto.Host }

func (f fakeDesired) ListSites(context.Context) ([]proto.Site, error) {
	return []proto.Site{{Name: "lab", DHCP: proto.DHCPFull, Unknown: proto.UnknownIgnore, Networks: []proto.Network{{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.100", RangeEnd: "10.0.0.200"}}}}, nil
}

func (f fakeDesired) ListHosts(_ context.Context, site string) ([]proto.Host, error) {
	var out []proto.Host
	for _, h := range f.hosts {
		if site == "" || h.Site == site {
			out = append(out, h)
		}
	}
	return out, nil
}

func (f fakeDesired) GetHost(_ context.Context, mac string) (proto.Host, error) {
	for _, h := range f.hosts {
		if h.MAC == mac {
			return h, nil
		}
	}
	return proto.Host{}, errors.New("host " + mac + ": not found")
}

type fakeEdges []proto.EdgeView

func (f fakeEdges) ListEdges(context.Context) ([]proto.EdgeView, error) { return f, nil }

type fakeEvents []proto.Event

func (f fakeEvents) Events(_ context.Context, macs []string, since time.Time) ([]proto.Event, error) {
	var out []proto.Event
	for _, e := range f {
		for _, m := range macs {
			if e.MAC == m && !e.Time.Before(since) {
				out = append(out, e)
			}
		}
	}
	return out, nil
}

func at(sec int, kind string, detail map[string]string) proto.Event {
	return proto.Event{V: 1, Time: now.Add(-time.Hour + time.Duration(sec)*time.Second), Site: "lab", Edge: "e1", MAC: "52:54:00:00:00:01", Kind: kind, Detail: detail}
}

func TestPanel(t *testing.T) {
	h, err := New(Config{
		Desired: fakeDesired{hosts: []proto.Host{
			{MAC: "52:54:00:00:00:01", Site: "lab", Image: "deb", State: proto.StateBoot, Hostname: "web1"},
			{MAC: "52:54:00:00:00:02", Site: "lab", Image: "deb", State: proto.StateLocal, Hostname: "<script>x</script>"},
		}},
		Edges: fakeEdges{{EdgeStatus: proto.EdgeStatus{Name: "e1", Site: "lab", Time: now.Add(-time.Minute)}, Stale: true}},
		// DISCOVER and OFFER, again and again, never a REQUEST: offers lost.
		Events: fakeEvents{
			at(0, proto.EventDHCPDiscover, map[string]string{"xid": "1"}), at(0, proto.EventDHCPOffer, map[string]string{"xid": "1", "ip": "10.0.0.100"}),
			at(4, proto.EventDHCPDiscover, map[string]string{"xid": "1"}), at(4, proto.EventDHCPOffer, map[string]string{"xid": "1", "ip": "10.0.0.100"}),
			at(12, proto.EventDHCPDiscover, map[string]string{"xid": "1"}), at(12, proto.EventDHCPOffer, map[string]string{"xid": "1", "ip": "10.0.0.100"}),
		},
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	cases := []struct {
		name, path string
		code       int
		want       []string
		not        []string
	}{
		{"overview", "/", 200, []string{"lab", "10.0.0.0/24", ">2</a>", "STALE", "e1"}, nil},
		{"hosts", "/hosts?site=lab", 200, []string{"52:54:00:00:00:01", "web1", "local"}, []string{"<script>x"}},
		{"host timeline with diagnosis", "/hosts/52-54-00-00-00-01", 200, []string{"dhcp.discover", "dhcp.offer", "diagnosis:", "+4s"}, nil},
		{"unknown host", "/hosts/52:54:00:00:00:99", 200, []string{"Not a known host", "No boot recorded"}, nil},
		{"bad MAC", "/hosts/zz", 400, []string{`invalid MAC address "zz"`}, nil},
		{"bad site", "/hosts?site=a.b", 400, []string{"invalid site name"}, nil},
		{"no writes", "/hosts", 200, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("HTTP %d, want %d: %s", resp.StatusCode, tc.code, b)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(b), w) {
					t.Errorf("page lacks %q:\n%s", w, b)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(string(b), w) {
					t.Errorf("page contains %q unescaped", w)
				}
			}
		})
	}
	resp, err := http.Post(srv.URL+"/hosts", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: HTTP %d, want 405", resp.StatusCode)
	}
}
