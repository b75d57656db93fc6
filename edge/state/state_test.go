package state

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

func TestHostsByAnyMAC(t *testing.T) {
	s := New()
	changes := 0
	s.OnChange(func() { changes++ })
	s.PutHost(proto.Host{MAC: "52:54:00:00:00:02", Image: "b", ExtraMACs: []string{"52:54:00:00:00:03"}, Vars: map[string]string{"k": "v"}})
	s.PutHost(proto.Host{MAC: "52:54:00:00:00:01", Image: "a"})
	s.SetSite(proto.Site{Name: "lab", DiscoveryImage: "disc"})

	cases := []struct {
		name, mac, wantPrimary string
		found                  bool
	}{
		{"primary MAC", "52:54:00:00:00:02", "52:54:00:00:00:02", true},
		{"extra MAC", "52:54:00:00:00:03", "52:54:00:00:00:02", true},
		{"other host", "52:54:00:00:00:01", "52:54:00:00:00:01", true},
		{"unknown", "52:54:00:00:00:09", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, ok := s.Host(tc.mac)
			if ok != tc.found || h.MAC != tc.wantPrimary {
				t.Errorf("Host(%s) = %s, %v; want %s, %v", tc.mac, h.MAC, ok, tc.wantPrimary, tc.found)
			}
		})
	}
	var macs []string
	for _, h := range s.Hosts() {
		macs = append(macs, h.MAC)
	}
	if diff := cmp.Diff([]string{"52:54:00:00:00:01", "52:54:00:00:00:02"}, macs); diff != "" {
		t.Errorf("Hosts order (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"a", "b", "disc"}, s.AssignedImages()); diff != "" {
		t.Errorf("AssignedImages (-want +got):\n%s", diff)
	}

	// Readers get copies: changing one never changes the state.
	h, _ := s.Host("52:54:00:00:00:02")
	h.Vars["k"] = "changed"
	h.ExtraMACs[0] = "xx"
	if again, _ := s.Host("52:54:00:00:00:03"); again.Vars["k"] != "v" || again.ExtraMACs[0] != "52:54:00:00:00:03" {
		t.Errorf("a reader's change leaked into the state: %+v", again)
	}

	// Replacing a host drops MACs it no longer has; deleting drops all.
	s.PutHost(proto.Host{MAC: "52:54:00:00:00:02", Image: "b"})
	if _, ok := s.Host("52:54:00:00:00:03"); ok {
		t.Error("a removed extra MAC still finds the host")
	}
	s.DeleteHost("52:54:00:00:00:02")
	if _, ok := s.Host("52:54:00:00:00:02"); ok {
		t.Error("deleted host still found")
	}
	if changes != 5 {
		t.Errorf("%d change notifications, want 5", changes)
	}
}
