package edge

import (
	"testing"

	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/proto"
)

// In auto mode the edge advertises only while it is the segment's DHCP
// server, by the site's mode or the edge's own --dhcp override.
func TestRAAutoFollowsDHCPMode(t *testing.T) {
	for _, tc := range []struct {
		name     string
		site     string // "" : no site config yet
		override string
		want     bool
	}{
		{name: "site unknown", want: false},
		{name: "full", site: proto.DHCPFull, want: true},
		{name: "reservations", site: proto.DHCPReservations, want: true},
		{name: "proxy", site: proto.DHCPProxy, want: false},
		{name: "off", site: proto.DHCPOff, want: false},
		{name: "full site, edge says proxy", site: proto.DHCPFull, override: proto.DHCPProxy, want: false},
		{name: "proxy site, edge says full", site: proto.DHCPProxy, override: proto.DHCPFull, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := state.New()
			if tc.site != "" {
				st.SetSite(proto.Site{V: 1, Name: "lab", DHCP: tc.site})
			}
			if got := handsOutAddresses(siteMode{State: st, mode: tc.override})(); got != tc.want {
				t.Errorf("advertise = %v, want %v", got, tc.want)
			}
		})
	}
}
