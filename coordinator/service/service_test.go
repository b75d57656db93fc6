package service

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/natstest"
)

func startJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := natstest.Connect(t, natstest.Start(t).ClientURL())
	return js
}

type fakeChecker struct{ missing string }

func (f fakeChecker) CheckArtifact(_ context.Context, a proto.Artifact) error {
	if a.Key == f.missing {
		return errors.New("no such object")
	}
	return nil
}

func sha(c byte) string { return strings.Repeat(string(c), 64) }

func testImage(name string) proto.Image {
	return proto.Image{Name: name, Cmdline: "console=ttyS0", Artifacts: []proto.Artifact{
		{Role: proto.RoleKernel, Name: "vmlinuz", Key: "sha256/" + sha('a'), Size: 10, SHA256: sha('a')},
		{Role: proto.RoleInitrd, Name: "initrd.img", Key: "sha256/" + sha('b'), Size: 20, SHA256: sha('b')},
	}}
}

func ptr[T any](v T) *T { return &v }

// newService returns a service with site "lab" (10.0.0.0/24), site "dc"
// (10.1.0.0/24), image "deb" and host 52:54:00:00:00:01 at lab with 10.0.0.10.
func newService(t *testing.T) *Service {
	t.Helper()
	ctx := context.Background()
	s, err := New(ctx, Config{JS: startJS(t), Checker: fakeChecker{missing: "sha256/" + sha('f')}})
	if err != nil {
		t.Fatal(err)
	}
	for _, site := range []proto.Site{
		{Name: "lab", Networks: []proto.Network{{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.100", RangeEnd: "10.0.0.200"}}},
		{Name: "dc", Networks: []proto.Network{{Subnet: "10.1.0.0/24"}}},
	} {
		if _, err := s.AddSite(ctx, site); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AddImage(ctx, testImage("deb")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:01", Site: ptr("lab"), Image: ptr("deb"), IP: ptr("10.0.0.10")}); err != nil {
		t.Fatal(err)
	}
	return s
}

// snapshot is everything in every bucket, to prove a refused change wrote nothing.
func snapshot(t *testing.T, s *Service) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, kv := range s.kv {
		lister, err := kv.ListKeys(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for k := range lister.Keys() {
			e, err := kv.Get(context.Background(), k)
			if err != nil {
				t.Fatal(err)
			}
			out[name+"/"+k] = string(e.Value())
		}
	}
	return out
}

func TestRejectedChangesWriteNothing(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	cases := []struct {
		name string
		do   func() error
		want string // substring of the error
		is   error
	}{
		{"malformed MAC", func() error {
			_, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:zz:00:02", Site: ptr("lab")})
			return err
		}, `invalid MAC address "52:54:00:zz:00:02"`, ErrInvalid},
		{"missing image", func() error {
			_, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:02", Site: ptr("lab"), Image: ptr("nope")})
			return err
		}, "image nope: not found", ErrNotFound},
		{"missing site", func() error {
			_, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:02", Site: ptr("mars")})
			return err
		}, "site mars: not found", ErrNotFound},
		{"no site with two sites", func() error {
			_, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:02"})
			return err
		}, "needs --site", ErrInvalid},
		{"IP outside subnet", func() error {
			_, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:02", Site: ptr("lab"), IP: ptr("10.1.0.5")})
			return err
		}, "IP 10.1.0.5 is not inside any subnet of site lab", ErrInvalid},
		{"IP is the broadcast address", func() error {
			_, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:02", Site: ptr("lab"), IP: ptr("10.0.0.255")})
			return err
		}, "not inside any subnet", ErrInvalid},
		{"duplicate reservation", func() error {
			_, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:02", Site: ptr("lab"), IP: ptr("10.0.0.10")})
			return err
		}, "IP 10.0.0.10 at site lab is already used by host 52:54:00:00:00:01", ErrConflict},
		{"MAC already at another site", func() error {
			_, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:02", Site: ptr("dc"), ExtraMACs: &[]string{"52:54:00:00:00:01"}})
			return err
		}, "MAC 52:54:00:00:00:01 is already used by host 52:54:00:00:00:01 at site lab", ErrConflict},
		{"bad hostname", func() error {
			_, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:02", Site: ptr("lab"), Hostname: ptr("a b")})
			return err
		}, "hostname", ErrInvalid},
		{"hostile var", func() error {
			_, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:01", Vars: map[string]string{"x": "a\nchain http://evil/"}})
			return err
		}, "", ErrInvalid},
		{"bad state", func() error {
			_, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:01", State: ptr("reboot")})
			return err
		}, `invalid state "reboot"`, ErrInvalid},
		{"image in use", func() error { return s.RemoveImage(ctx, "deb") }, "image deb is used by 1 host(s)", ErrConflict},
		{"remove missing image", func() error { return s.RemoveImage(ctx, "nope") }, "image nope: not found", ErrNotFound},
		{"site with hosts", func() error { return s.RemoveSite(ctx, "lab") }, "site lab still has 1 host(s)", ErrConflict},
		{"bad image name", func() error { _, err := s.AddImage(ctx, testImage("Deb!")); return err }, `invalid image name "Deb!"`, ErrInvalid},
		{"image without initrd", func() error {
			im := testImage("x")
			im.Artifacts = im.Artifacts[:1]
			_, err := s.AddImage(ctx, im)
			return err
		}, "needs a kernel and an initrd", ErrInvalid},
		{"image artifact not in store", func() error {
			im := testImage("x")
			im.Artifacts[0].Key = "sha256/" + sha('f')
			_, err := s.AddImage(ctx, im)
			return err
		}, "no such object", ErrInvalid},
		{"image bad arch", func() error {
			im := testImage("x")
			im.Arch = "mips"
			_, err := s.AddImage(ctx, im)
			return err
		}, `invalid arch "mips"`, ErrInvalid},
		{"site bad name", func() error {
			_, err := s.AddSite(ctx, proto.Site{Name: "lab.x", Networks: []proto.Network{{Subnet: "10.9.0.0/24"}}})
			return err
		}, `invalid site name "lab.x"`, ErrInvalid},
		{"site bad subnet", func() error {
			_, err := s.AddSite(ctx, proto.Site{Name: "x", Networks: []proto.Network{{Subnet: "10.9.0.0/33"}}})
			return err
		}, `invalid subnet "10.9.0.0/33"`, ErrInvalid},
		{"site host bits", func() error {
			_, err := s.AddSite(ctx, proto.Site{Name: "x", Networks: []proto.Network{{Subnet: "10.9.0.1/24"}}})
			return err
		}, "host bits set", ErrInvalid},
		{"site range outside", func() error {
			_, err := s.AddSite(ctx, proto.Site{Name: "x", Networks: []proto.Network{{Subnet: "10.9.0.0/24", RangeStart: "10.9.0.10", RangeEnd: "10.9.1.10"}}})
			return err
		}, "not inside subnet 10.9.0.0/24", ErrInvalid},
		{"site range reversed", func() error {
			_, err := s.AddSite(ctx, proto.Site{Name: "x", Networks: []proto.Network{{Subnet: "10.9.0.0/24", RangeStart: "10.9.0.50", RangeEnd: "10.9.0.10"}}})
			return err
		}, "ends before it starts", ErrInvalid},
		{"site overlapping subnets", func() error {
			_, err := s.AddSite(ctx, proto.Site{Name: "x", Networks: []proto.Network{{Subnet: "10.9.0.0/16"}, {Subnet: "10.9.1.0/24"}}})
			return err
		}, "overlap", ErrInvalid},
		{"site bad dhcp mode", func() error {
			_, err := s.AddSite(ctx, proto.Site{Name: "x", DHCP: "auto", Networks: []proto.Network{{Subnet: "10.9.0.0/24"}}})
			return err
		}, `invalid dhcp mode "auto"`, ErrInvalid},
		{"site change strands a reservation", func() error {
			_, err := s.AddSite(ctx, proto.Site{Name: "lab", Networks: []proto.Network{{Subnet: "10.5.0.0/24"}}})
			return err
		}, "reservation 10.0.0.10 outside", ErrInvalid},
		{"site discover without image", func() error {
			_, err := s.AddSite(ctx, proto.Site{Name: "x", Unknown: proto.UnknownDiscover, Networks: []proto.Network{{Subnet: "10.9.0.0/24"}}})
			return err
		}, "needs a discovery image", ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, s)
			err := tc.do()
			if err == nil {
				t.Fatal("change accepted, want an error")
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if diff := cmp.Diff(before, snapshot(t, s)); diff != "" {
				t.Errorf("refused change wrote to the store (-before +after):\n%s", diff)
			}
		})
	}
}

func TestHostLifecycle(t *testing.T) {
	s := newService(t)
	ctx := context.Background()

	// Any accepted spelling is stored canonically, keyed <site>.<12 hex>.
	h, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "5254.0000.0002", Site: ptr("lab"), Image: ptr("deb"), Hostname: ptr("web2"),
		ExtraMACs: &[]string{"52-54-00-00-00-03"}, Vars: map[string]string{"role": "db"}})
	if err != nil {
		t.Fatal(err)
	}
	if h.MAC != "52:54:00:00:00:02" || h.State != proto.StateBoot {
		t.Fatalf("host = %+v", h)
	}
	e, err := s.kv[proto.BucketHosts].Get(ctx, "lab.525400000002")
	if err != nil {
		t.Fatalf("host key lab.525400000002 missing: %v", err)
	}
	if !strings.Contains(string(e.Value()), `"hostname":"web2"`) {
		t.Errorf("stored host = %s", e.Value())
	}
	// Found by its extra MAC.
	got, err := s.GetHost(ctx, "52:54:00:00:00:03")
	if err != nil || got.MAC != h.MAC {
		t.Fatalf("GetHost(extra MAC) = %+v, %v", got, err)
	}
	// A partial update changes only what it names.
	h2, err := s.SetHost(ctx, proto.HostSetRequest{MAC: h.MAC, State: ptr(proto.StateLocal), UnsetVars: []string{"role"}})
	if err != nil {
		t.Fatal(err)
	}
	want := h
	want.State, want.Vars, want.Updated = proto.StateLocal, nil, h2.Updated
	if diff := cmp.Diff(want, h2); diff != "" {
		t.Errorf("partial update (-want +got):\n%s", diff)
	}
	// Moving to another site moves the key and keeps the MAC index right.
	if _, err := s.SetHost(ctx, proto.HostSetRequest{MAC: h.MAC, Site: ptr("dc")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.kv[proto.BucketHosts].Get(ctx, "lab.525400000002"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("old key still there: %v", err)
	}
	hosts, err := s.ListHosts(ctx, "dc")
	if err != nil || len(hosts) != 1 || hosts[0].MAC != h.MAC {
		t.Fatalf("ListHosts(dc) = %+v, %v", hosts, err)
	}
	// A reservation freed by one host can be taken by another.
	if _, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:01", IP: ptr("")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:09", Site: ptr("lab"), IP: ptr("10.0.0.10")}); err != nil {
		t.Fatalf("freed IP not reusable: %v", err)
	}
	// Removing frees the MACs.
	if err := s.RemoveHost(ctx, "52:54:00:00:00:03"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetHost(ctx, h.MAC); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed host still found: %v", err)
	}
	if _, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:03", Site: ptr("lab")}); err != nil {
		t.Errorf("freed extra MAC not reusable: %v", err)
	}
}

func TestConcurrentReservationsOneWins(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			mac := "52:54:00:00:01:0" + string(rune('0'+i))
			_, err := s.SetHost(ctx, proto.HostSetRequest{MAC: mac, Site: ptr("lab"), IP: ptr("10.0.0.77")})
			errs <- err
		}()
	}
	ok := 0
	for range n {
		if err := <-errs; err == nil {
			ok++
		} else if !errors.Is(err, ErrConflict) {
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d hosts got 10.0.0.77, want exactly 1", ok)
	}
}

func TestEdgeStaleness(t *testing.T) {
	s := newService(t)
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	ctx := context.Background()
	for _, st := range []proto.EdgeStatus{
		{Name: "fresh", Site: "lab", Time: now.Add(-4 * time.Second), IntervalSecs: 5},
		{Name: "silent", Site: "lab", Time: now.Add(-16 * time.Second), IntervalSecs: 5},
	} {
		if err := s.RecordStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	edges, err := s.ListEdges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, e := range edges {
		got[e.Name] = e.Stale
	}
	if diff := cmp.Diff(map[string]bool{"fresh": false, "silent": true}, got); diff != "" {
		t.Error(diff)
	}
}

func TestInstallDoneSwitchesOnceHostsToLocal(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	if _, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:05", Site: ptr("lab"), Image: ptr("deb"), Once: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, mac, state string
	}{
		{"once host goes local", "52:54:00:00:00:05", proto.StateLocal},
		{"ordinary host stays", "52:54:00:00:00:01", proto.StateBoot},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := s.InstallDone(ctx, tc.mac)
			if err != nil {
				t.Fatal(err)
			}
			if h.State != tc.state || h.Once {
				t.Errorf("after done: state %s once %v, want %s false", h.State, h.Once, tc.state)
			}
		})
	}
	if _, err := s.InstallDone(ctx, "52:54:00:00:00:77"); !errors.Is(err, ErrNotFound) {
		t.Errorf("done for an unknown MAC: %v", err)
	}
	if err := s.RecordFacts(ctx, proto.FactsRequest{MAC: "52:54:00:00:00:01", Facts: []byte(`{"disks":2}`)}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Facts(ctx, "52:54:00:00:00:01"); err != nil || string(got) != `{"disks":2}` {
		t.Errorf("facts = %s, %v", got, err)
	}
	if err := s.RecordFacts(ctx, proto.FactsRequest{MAC: "52:54:00:00:00:01", Facts: []byte(`{nope`)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad facts accepted: %v", err)
	}
}

// TestConfinedToSite: under ConfineToSite a host of another site can be
// neither changed, moved in, moved out nor removed, and a refusal writes
// nothing; hosts of the site itself change as usual. The check is on the
// host as read for the write, so it holds even when the API guard checked
// an older version (a host moved between the check and the write).
func TestConfinedToSite(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	lab := ConfineToSite(ctx, "lab")
	if _, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:02", Site: ptr("dc"), Image: ptr("deb")}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s)
	refused := []struct {
		name string
		do   func() error
		want error
	}{
		{"change a dc host", func() error {
			_, err := s.SetHost(lab, proto.HostSetRequest{MAC: "52:54:00:00:00:02", Hostname: ptr("x")})
			return err
		}, ErrNotFound},
		{"move a dc host to lab", func() error {
			_, err := s.SetHost(lab, proto.HostSetRequest{MAC: "52:54:00:00:00:02", Site: ptr("lab")})
			return err
		}, ErrNotFound},
		{"move a lab host to dc", func() error {
			_, err := s.SetHost(lab, proto.HostSetRequest{MAC: "52:54:00:00:00:01", Site: ptr("dc"), IP: ptr("")})
			return err
		}, ErrInvalid},
		{"create a host at dc", func() error {
			_, err := s.SetHost(lab, proto.HostSetRequest{MAC: "52:54:00:00:00:09", Site: ptr("dc")})
			return err
		}, ErrInvalid},
		{"remove a dc host", func() error { return s.RemoveHost(lab, "52:54:00:00:00:02") }, ErrNotFound},
	}
	for _, c := range refused {
		if err := c.do(); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	if diff := cmp.Diff(before, snapshot(t, s)); diff != "" {
		t.Errorf("a refused change wrote (-before +after):\n%s", diff)
	}
	if _, err := s.SetHost(lab, proto.HostSetRequest{MAC: "52:54:00:00:00:01", Hostname: ptr("web1")}); err != nil {
		t.Errorf("change a lab host: %v", err)
	}
	if _, err := s.SetHost(lab, proto.HostSetRequest{MAC: "52:54:00:00:00:09", Site: ptr("lab"), Image: ptr("deb")}); err != nil {
		t.Errorf("create a lab host: %v", err)
	}
	if err := s.RemoveHost(lab, "52:54:00:00:00:09"); err != nil {
		t.Errorf("remove a lab host: %v", err)
	}
}
