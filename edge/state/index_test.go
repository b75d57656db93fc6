package state_test

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/edge/statesync"
	"github.com/fleetboot/fleetboot/proto"
)

// TestReservationIndex follows the IP -> host index through the changes the
// syncer applies: a host set with an address, its address moved, another
// host taking the freed address, two hosts briefly naming one address, a
// host removed, and the state reloaded from a snapshot written by the
// syncer into a fresh State.
func TestReservationIndex(t *testing.T) {
	const (
		a = "52:54:00:00:00:0a"
		b = "52:54:00:00:00:0b"
	)
	ip := netip.MustParseAddr
	type want map[string]string // address -> owner ("" : free)
	steps := []struct {
		name   string
		change func(s *state.State)
		want   want
	}{
		{"set with address", func(s *state.State) { s.PutHost(proto.Host{MAC: a, IP: "10.0.0.10"}) },
			want{"10.0.0.10": a, "10.0.0.11": ""}},
		{"address moved", func(s *state.State) { s.PutHost(proto.Host{MAC: a, IP: "10.0.0.11"}) },
			want{"10.0.0.10": "", "10.0.0.11": a}},
		{"freed address taken by another host", func(s *state.State) { s.PutHost(proto.Host{MAC: b, IP: "10.0.0.10"}) },
			want{"10.0.0.10": b, "10.0.0.11": a}},
		{"address dropped", func(s *state.State) { s.PutHost(proto.Host{MAC: b}) },
			want{"10.0.0.10": "", "10.0.0.11": a}},
		{"two hosts name one address during a swap", func(s *state.State) { s.PutHost(proto.Host{MAC: b, IP: "10.0.0.11"}) },
			want{"10.0.0.11": a}},
		{"first of the two moves away", func(s *state.State) { s.PutHost(proto.Host{MAC: a, IP: "10.0.0.10"}) },
			want{"10.0.0.10": a, "10.0.0.11": b}},
		{"host removed frees its address", func(s *state.State) { s.DeleteHost(a) },
			want{"10.0.0.10": "", "10.0.0.11": b}},
		{"unparsable address reserves nothing", func(s *state.State) { s.PutHost(proto.Host{MAC: a, IP: "10.0.0.300"}) },
			want{"10.0.0.10": "", "10.0.0.11": b}},
	}
	s := state.New()
	check := func(t *testing.T, s *state.State, w want) {
		t.Helper()
		for addr, owner := range w {
			got, ok := s.Reservation(ip(addr))
			if got != owner || ok != (owner != "") {
				t.Errorf("Reservation(%s) = %q, %v; want %q", addr, got, ok, owner)
			}
		}
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.change(s)
			check(t, s, st.want)
		})
	}

	// Snapshot reload: what the syncer writes and loads into a new state
	// holds the same reservations.
	path := filepath.Join(t.TempDir(), "snapshot.json")
	w, err := statesync.New(statesync.Config{Site: "lab", State: s, SnapshotPath: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteSnapshot(); err != nil {
		t.Fatal(err)
	}
	fresh := state.New()
	if _, err := statesync.New(statesync.Config{Site: "lab", State: fresh, SnapshotPath: path}); err != nil {
		t.Fatal(err)
	}
	t.Run("snapshot reload", func(t *testing.T) {
		check(t, fresh, want{"10.0.0.10": "", "10.0.0.11": b})
		fresh.DeleteHost(b)
		check(t, fresh, want{"10.0.0.11": ""})
	})
}
