package service

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

// importRows makes n rows of hosts at site lab, from host number from on,
// with reservations in 10.0.0.0/8 (see bigLab).
func importRows(n, from int) []proto.ImportRow {
	rows := make([]proto.ImportRow, n)
	for j := range n {
		i := from + j
		rows[j] = proto.ImportRow{Line: i + 2, MAC: fmt.Sprintf("02:00:00:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i)), Site: "lab", Image: "deb",
			IP: fmt.Sprintf("10.%d.%d.%d", 1+i>>16, byte(i>>8), byte(i)), Hostname: fmt.Sprintf("h%d", i), Labels: map[string]string{"rack": fmt.Sprintf("r%d", i/40)}}
	}
	return rows
}

// bigLab widens site lab to 10.0.0.0/8 (its host 52:54:00:00:00:01 keeps 10.0.0.10).
func bigLab(t testing.TB, s *Service) {
	t.Helper()
	if _, err := s.AddSite(context.Background(), proto.Site{Name: "lab", Networks: []proto.Network{{Subnet: "10.0.0.0/8"}}}); err != nil {
		t.Fatal(err)
	}
}

// TestImportHosts: every bad row is refused with its line and reason, a
// checked import writes nothing, and an applied one writes the good rows
// (created, changed, unchanged) with their indexes.
func TestImportHosts(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	if _, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:02", Site: ptr("dc"), ExtraMACs: &[]string{"52:54:00:00:00:0e"}}); err != nil {
		t.Fatal(err)
	}
	rows := []proto.ImportRow{
		{Line: 2, MAC: "52:54:00:00:01:01", Site: "lab", Image: "deb", IP: "10.0.0.21", Hostname: "web1", Labels: map[string]string{"rack": "r12"}},
		{Line: 3, MAC: "52-54-00-00-01-02", Site: "lab", Labels: map[string]string{"rack": "r12"}},                // no image: waits for a policy
		{Line: 4, MAC: "52:54:00:00:00:01", Site: "lab", Hostname: "db1", Vars: map[string]string{"disk": "vda"}}, // changes the existing host
		{Line: 5, MAC: "52:54:00:zz:01:03", Site: "lab"},
		{Line: 6, MAC: "52:54:00:00:01:01", Site: "lab"},
		{Line: 7, MAC: "52:54:00:00:01:04", Site: "nope"},
		{Line: 8, MAC: "52:54:00:00:01:05", Site: "lab", Image: "nope"},
		{Line: 9, MAC: "52:54:00:00:01:06", Site: "lab", IP: "10.9.0.1"},
		{Line: 10, MAC: "52:54:00:00:01:07", Site: "lab", IP: "10.0.0.21"},
		{Line: 11, MAC: "52:54:00:00:01:08", Site: "lab", IP: "10.0.0.10"},
		{Line: 12, MAC: "52:54:00:00:00:0e", Site: "dc"},
		{Line: 13, MAC: "52:54:00:00:00:02", Site: "lab"},
		{Line: 14, MAC: "52:54:00:00:01:09", Site: "lab", Labels: map[string]string{"rack": "r 1"}},
		{Line: 15, MAC: "52:54:00:00:01:0a", Site: "lab", Hostname: "-x"},
		{Line: 16, MAC: "52:54:00:00:01:0b", Site: "lab", IP: "fd00::1"},
		{Line: 17, MAC: "52:54:00:00:01:0c", Site: "lab", Vars: map[string]string{"x": "a;b"}},
	}
	wantRefused := []proto.ImportProblem{
		{Line: 5, MAC: "52:54:00:zz:01:03", Reason: `invalid MAC address "52:54:00:zz:01:03": want aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff`},
		{Line: 6, MAC: "52:54:00:00:01:01", Reason: "MAC 52:54:00:00:01:01 is on line 2 already"},
		{Line: 7, MAC: "52:54:00:00:01:04", Reason: "site nope: not found"},
		{Line: 8, MAC: "52:54:00:00:01:05", Reason: "image nope: not found"},
		{Line: 9, MAC: "52:54:00:00:01:06", Reason: "IP 10.9.0.1 is not inside any subnet of site lab (10.0.0.0/24)"},
		{Line: 10, MAC: "52:54:00:00:01:07", Reason: "IP 10.0.0.21 at site lab is on line 2 already"},
		{Line: 11, MAC: "52:54:00:00:01:08", Reason: "IP 10.0.0.10 at site lab is already used by host 52:54:00:00:00:01 at site lab"},
		{Line: 12, MAC: "52:54:00:00:00:0e", Reason: "MAC 52:54:00:00:00:0e is an extra MAC of host 52:54:00:00:00:02"},
		{Line: 13, MAC: "52:54:00:00:00:02", Reason: "host 52:54:00:00:00:02 is at site dc, not lab (move it with `fleetboot host set 52:54:00:00:00:02 --site lab`)"},
		{Line: 14, MAC: "52:54:00:00:01:09", Reason: `invalid value "r 1" of label rack: use letters, digits, '.', '_' or '-'`},
		{Line: 15, MAC: "52:54:00:00:01:0a", Reason: `invalid hostname "-x": a label cannot start or end with '-'`},
		{Line: 16, MAC: "52:54:00:00:01:0b", Reason: `invalid IP address "fd00::1"`},
		{Line: 17, MAC: "52:54:00:00:01:0c", Reason: `variable x: value "a;b" contains ";", which boot scripts interpret`},
	}
	before := snapshot(t, s)
	rep, err := s.ImportHosts(ctx, proto.HostImportRequest{Check: true, Rows: rows})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(proto.HostImportReply{V: proto.Version, Created: 2, Changed: 1, Refused: wantRefused}, rep); diff != "" {
		t.Errorf("checked import (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, snapshot(t, s)); diff != "" {
		t.Fatalf("a checked import wrote:\n%s", diff)
	}
	rep, err = s.ImportHosts(ctx, proto.HostImportRequest{Rows: rows})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Created != 2 || rep.Changed != 1 || rep.Unchanged != 0 || len(rep.Refused) != len(wantRefused) {
		t.Errorf("applied import: %+v", rep)
	}
	h, err := s.GetHost(ctx, "52:54:00:00:00:01")
	if err != nil || h.Hostname != "db1" || h.IP != "10.0.0.10" || h.Image != "deb" || h.Vars["disk"] != "vda" {
		t.Errorf("changed host: %+v %v", h, err)
	}
	h, err = s.GetHost(ctx, "52:54:00:00:01:01")
	if err != nil || h.IP != "10.0.0.21" || h.Labels["rack"] != "r12" || h.State != proto.StateBoot {
		t.Errorf("created host: %+v %v", h, err)
	}
	// The indexes hold: the new reservation and MAC are taken.
	if _, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:09:09", Site: ptr("lab"), IP: ptr("10.0.0.21")}); err == nil || !strings.Contains(err.Error(), "already used by host 52:54:00:00:01:01") {
		t.Errorf("the imported reservation is not in the index: %v", err)
	}
	// The same rows again: nothing changes, and a check names the lines
	// that need not be sent to apply (one with a new label does).
	again := append(rows[:3:3], proto.ImportRow{Line: 20, MAC: "52:54:00:00:01:01", Site: "lab", Labels: map[string]string{"role": "web"}})
	rep, err = s.ImportHosts(ctx, proto.HostImportRequest{Check: true, Rows: again[:3]})
	if err != nil || rep.Unchanged != 3 || rep.Created+rep.Changed != 0 {
		t.Errorf("import again: %+v %v", rep, err)
	}
	rep, err = s.ImportHosts(ctx, proto.HostImportRequest{Check: true, Rows: again[1:]})
	if d := cmp.Diff(proto.HostImportReply{V: proto.Version, Changed: 1, Unchanged: 2, UnchangedLines: []int{3, 4}}, rep); err != nil || d != "" {
		t.Errorf("check again (-want +got):\n%s%v", d, err)
	}
	rep, err = s.ImportHosts(ctx, proto.HostImportRequest{Rows: rows[:3]})
	if err != nil || rep.Unchanged != 3 || rep.Created+rep.Changed != 0 || rep.UnchangedLines != nil {
		t.Errorf("import again: %+v %v", rep, err)
	}
	// A new reservation for an imported host frees its old one.
	rep, err = s.ImportHosts(ctx, proto.HostImportRequest{Rows: []proto.ImportRow{{Line: 2, MAC: "52:54:00:00:01:01", Site: "lab", IP: "10.0.0.22"}}})
	if err != nil || rep.Changed != 1 {
		t.Fatalf("move a reservation: %+v %v", rep, err)
	}
	if _, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:09:09", Site: ptr("lab"), IP: ptr("10.0.0.21")}); err != nil {
		t.Errorf("the old reservation was not released: %v", err)
	}
	if _, err := s.ImportHosts(ctx, proto.HostImportRequest{Rows: importRows(proto.MaxImportRows+1, 0)}); err == nil {
		t.Error("an oversized chunk was accepted")
	}
}

// TestImportConfined: a site admin's import may not touch another site.
func TestImportConfined(t *testing.T) {
	s := newService(t)
	lab := ConfineToSite(context.Background(), "lab")
	rep, err := s.ImportHosts(lab, proto.HostImportRequest{Rows: []proto.ImportRow{
		{Line: 2, MAC: "52:54:00:00:02:01", Site: "dc"},
		{Line: 3, MAC: "52:54:00:00:02:02", Site: "lab"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []proto.ImportProblem{{Line: 2, MAC: "52:54:00:00:02:01", Reason: `may be imported only at site lab, not "dc"`}}
	if diff := cmp.Diff(want, rep.Refused); diff != "" || rep.Created != 1 {
		t.Errorf("confined import: %+v\n%s", rep, diff)
	}
}

// TestBulkSetHosts: host set --selector changes exactly the hosts matched,
// by labels and by facts; --dry-run changes nothing.
func TestBulkSetHosts(t *testing.T) {
	s := newService(t)
	bigLab(t, s)
	ctx := context.Background()
	if _, err := s.AddImage(ctx, testImage("deb13")); err != nil {
		t.Fatal(err)
	}
	if rep, err := s.ImportHosts(ctx, proto.HostImportRequest{Rows: importRows(120, 0)}); err != nil || rep.Created != 120 {
		t.Fatalf("import: %+v %v", rep, err)
	}
	if err := s.RecordFacts(ctx, proto.FactsRequest{MAC: "02:00:00:00:00:05", Facts: factsJSON("02:00:00:00:00:05", 512)}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s)
	rep, err := s.BulkSetHosts(ctx, proto.HostBulkSetRequest{Selector: "labels.rack=r1", Image: "deb13", DryRun: true})
	if err != nil || len(rep.Matched) != 40 || rep.Matched[0] != "02:00:00:00:00:28" || rep.Changed != 0 {
		t.Fatalf("dry run: %+v %v", rep, err)
	}
	if diff := cmp.Diff(before, snapshot(t, s)); diff != "" {
		t.Fatalf("a dry run wrote:\n%s", diff)
	}
	rep, err = s.BulkSetHosts(ctx, proto.HostBulkSetRequest{Selector: "labels.rack=r1", Image: "deb13"})
	if err != nil || rep.Changed != 40 || len(rep.Refused) != 0 {
		t.Fatalf("bulk set: %+v %v", rep, err)
	}
	hosts, err := s.ListHosts(ctx, "lab")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range hosts {
		if h.Image == "deb13" {
			got = append(got, h.MAC)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, rep.Matched) {
		t.Errorf("hosts on deb13: %v, matched %v", got, rep.Matched)
	}
	rep, err = s.BulkSetHosts(ctx, proto.HostBulkSetRequest{Selector: "facts.memory_gib>=256", Image: "deb13"})
	if err != nil || !slices.Equal(rep.Matched, []string{"02:00:00:00:00:05"}) || rep.Changed != 1 {
		t.Errorf("bulk set by facts: %+v %v", rep, err)
	}
	for _, tc := range []struct {
		req  proto.HostBulkSetRequest
		want string
	}{
		{proto.HostBulkSetRequest{Selector: "", Image: "deb13"}, "an empty selector"},
		{proto.HostBulkSetRequest{Selector: "labels.rack=r1"}, "--image is required"},
		{proto.HostBulkSetRequest{Selector: "labels.rack=r1", Image: "nope"}, "image nope: not found"},
		{proto.HostBulkSetRequest{Selector: "rack=r1", Image: "deb13"}, "--selector: selector requirement 1"},
	} {
		if _, err := s.BulkSetHosts(ctx, tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("BulkSetHosts(%+v) = %v, want %q", tc.req, err, tc.want)
		}
	}
}

// TestWriteAll: a batch with one stale compare-and-set stores every other
// write (the batch is refused whole, then written one by one), and a key
// deleted before can be created again.
func TestWriteAll(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	kv := s.kv[bucketFacts]
	rev, err := kv.Put(ctx, "k1", []byte("old"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "gone", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	ops := []kvOp{
		{bucket: bucketFacts, key: "k1", value: []byte("new"), rev: rev},
		{bucket: bucketFacts, key: "k2", value: []byte("2")},
		{bucket: bucketFacts, key: "k1", value: []byte("stale"), rev: rev}, // k1 moved on: refused
		{bucket: bucketFacts, key: "gone", value: []byte("again")},
	}
	errs := s.writeAll(ctx, ops)
	for i, wantErr := range []bool{false, false, true, false} {
		if (errs[i] != nil) != wantErr {
			t.Errorf("op %d (%s): err %v, want error %v", i, ops[i].key, errs[i], wantErr)
		}
	}
	for k, want := range map[string]string{"k1": "new", "k2": "2", "gone": "again"} {
		if e, err := kv.Get(ctx, k); err != nil || string(e.Value()) != want {
			t.Errorf("%s = %v %v, want %s", k, e, err, want)
		}
	}
	// Without a conflict, one batch stores everything.
	ops = ops[:0]
	for i := range 2500 {
		ops = append(ops, kvOp{bucket: bucketFacts, key: fmt.Sprintf("b%d", i), value: []byte("v")})
	}
	for i, err := range s.writeAll(ctx, ops) {
		if err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
}
