package bootstats

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetboot/fleetboot/proto"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

type step struct {
	at     time.Duration
	kind   string
	detail map[string]string
}

func seq(mac string, steps ...step) []proto.Event {
	var evs []proto.Event
	for _, s := range steps {
		evs = append(evs, proto.Event{V: 1, Kind: s.kind, MAC: mac, Site: "lab", Edge: "e1", Time: t0.Add(s.at), Detail: s.detail})
	}
	return evs
}

// A machine's whole iPXE boot, its OS's own DHCP at the end (a new DISCOVER
// after the artifacts: timeline.Group's next boot).
func goodBoot(mac string, off time.Duration) []proto.Event {
	return seq(mac,
		step{off, proto.EventDHCPDiscover, map[string]string{"decision": "offer"}},
		step{off + time.Second, proto.EventDHCPOffer, nil},
		step{off + 2*time.Second, proto.EventDHCPRequest, nil},
		step{off + 2*time.Second, proto.EventDHCPAck, nil},
		step{off + 3*time.Second, proto.EventTFTPStart, map[string]string{"file": "undionly.kpxe"}},
		step{off + 4*time.Second, proto.EventTFTPDone, map[string]string{"file": "undionly.kpxe"}},
		step{off + 6*time.Second, proto.EventScript, map[string]string{"decision": "boot", "image": "img-a"}},
		step{off + 7*time.Second, proto.EventArtifactStart, map[string]string{"file": "vmlinuz"}},
		step{off + 8*time.Second, proto.EventArtifactEnd, map[string]string{"file": "vmlinuz", "status": "complete"}},
		step{off + 9*time.Second, proto.EventArtifactStart, map[string]string{"file": "initrd.img"}},
		step{off + 10*time.Second, proto.EventArtifactEnd, map[string]string{"file": "initrd.img", "status": "complete"}},
	)
}

func osDHCP(mac string, off time.Duration) []proto.Event {
	return seq(mac,
		step{off, proto.EventDHCPDiscover, map[string]string{"decision": "offer"}},
		step{off + time.Second, proto.EventDHCPOffer, nil},
		step{off + time.Second, proto.EventDHCPRequest, nil},
		step{off + time.Second, proto.EventDHCPAck, nil},
	)
}

func TestTracker(t *testing.T) {
	const a, b = "52:54:00:00:00:0a", "52:54:00:00:00:0b"
	cat := func(xs ...[]proto.Event) []proto.Event {
		var out []proto.Event
		for _, x := range xs {
			out = append(out, x...)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		events []proto.Event
		sweep  time.Duration // Sweep at t0+sweep; 0: not at all
		want   map[string]float64
	}{
		{"a boot, not over yet", goodBoot(a, 0), 0,
			map[string]float64{"started": 1, "in_progress": 1}},
		{"a boot, then quiet", goodBoot(a, 0), 10 * time.Minute,
			map[string]float64{"started": 1, "completed": 1}},
		{"a boot, then its OS's DHCP, then quiet: one boot", cat(goodBoot(a, 0), osDHCP(a, 40*time.Second)), 10 * time.Minute,
			map[string]float64{"started": 1, "completed": 1}},
		{"a reboot ends the first boot at once", cat(goodBoot(a, 0), goodBoot(a, time.Minute)), 0,
			map[string]float64{"started": 2, "completed": 1, "in_progress": 1}},
		{"offers never taken", seq(a,
			step{0, proto.EventDHCPDiscover, map[string]string{"decision": "offer"}},
			step{time.Second, proto.EventDHCPOffer, nil},
			step{5 * time.Second, proto.EventDHCPDiscover, map[string]string{"decision": "offer"}},
			step{6 * time.Second, proto.EventDHCPOffer, nil}), 10 * time.Minute,
			map[string]float64{"started": 1, "failed{diagnosis=no-request}": 1}},
		{"script served, no kernel asked", seq(b,
			step{0, proto.EventDHCPDiscover, map[string]string{"decision": "offer"}},
			step{time.Second, proto.EventDHCPOffer, nil},
			step{time.Second, proto.EventDHCPRequest, nil},
			step{time.Second, proto.EventDHCPAck, nil},
			step{2 * time.Second, proto.EventScript, map[string]string{"decision": "boot", "image": "img-a"}}), 10 * time.Minute,
			map[string]float64{"started": 1, "failed{diagnosis=no-artifact}": 1}},
		{"two machines", cat(goodBoot(a, 0), goodBoot(b, 0)), 10 * time.Minute,
			map[string]float64{"started": 2, "completed": 2}},
		{"an OS's DHCP alone is no boot", osDHCP(a, 0), 10 * time.Minute,
			map[string]float64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			tr, err := New(reg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range tc.events {
				tr.Add(ev)
			}
			if tc.sweep > 0 {
				tr.Sweep(t0.Add(tc.sweep))
				tr.Sweep(t0.Add(2 * tc.sweep)) // nothing left to count twice
			}
			if diff := cmp.Diff(tc.want, read(t, reg)); diff != "" {
				t.Errorf("metrics (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTrackerBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	tr, err := New(reg, Options{MaxMachines: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, mac := range []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"} {
		for _, ev := range goodBoot(mac, 0) {
			tr.Add(ev)
		}
	}
	if diff := cmp.Diff(map[string]float64{"started": 2, "in_progress": 2, "untracked_events": 11}, read(t, reg)); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}

// read returns the non-zero series, named without the fleetboot_boots_
// prefix and _total suffix.
func read(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		name := f.GetName()
		name = name[len("fleetboot_boots_"):]
		if n := len(name) - len("_total"); n > 0 && name[n:] == "_total" {
			name = name[:n]
		}
		for _, m := range f.GetMetric() {
			key := name
			for _, l := range m.GetLabel() {
				key += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			if v != 0 {
				out[key] = v
			}
		}
	}
	return out
}

// TestBootsPerHour: boots count in the hour they started, per site; hours
// older than a day fall out, and another site's boots are its own.
func TestBootsPerHour(t *testing.T) {
	tr, err := New(prometheus.NewRegistry(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	feed := func(evs []proto.Event) {
		for _, ev := range evs {
			tr.Add(ev)
		}
	}
	feed(goodBoot("52:54:00:00:00:01", 0))              // 10:00
	feed(goodBoot("52:54:00:00:00:02", 5*time.Minute))  // 10:05
	feed(goodBoot("52:54:00:00:00:03", 2*time.Hour))    // 12:00
	feed(goodBoot("52:54:00:00:00:04", -25*time.Hour))  // a day before: out of the window
	other := goodBoot("52:54:00:00:00:05", 2*time.Hour) // 12:00, at branch
	for i := range other {
		other[i].Site = "branch"
	}
	feed(other)
	feed(osDHCP("52:54:00:00:00:06", time.Hour)) // DHCP alone: no boot
	now := t0.Add(2*time.Hour + 30*time.Minute)
	want := make([]int, 24)
	want[21], want[23] = 2, 1 // 10:00 and 12:00; 12:00 is the last hour
	if diff := cmp.Diff(want, tr.BootsPerHour("lab", now)); diff != "" {
		t.Errorf("lab (-want +got):\n%s", diff)
	}
	want = make([]int, 24)
	want[23] = 1
	if diff := cmp.Diff(want, tr.BootsPerHour("branch", now)); diff != "" {
		t.Errorf("branch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(make([]int, 24), tr.BootsPerHour("nowhere", now)); diff != "" {
		t.Errorf("a site without boots (-want +got):\n%s", diff)
	}
}
