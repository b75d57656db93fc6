package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

// factsJSON is a discovery report: memGiB of memory, a 100 GiB disk, DMI vendor QEMU.
func factsJSON(mac string, memGiB float64) json.RawMessage {
	f := proto.Facts{V: 1, BootMAC: mac, Firmware: "bios", CPUs: 2, MemoryGiB: memGiB,
		DMI:   proto.DMIFacts{Vendor: "QEMU", Product: "Standard PC"},
		NICs:  []proto.NICFacts{{Name: "ens3", MAC: mac, Link: true}, {Name: "ens4", MAC: "52:54:00:ff:00:01"}},
		Disks: []proto.DiskFacts{{Name: "vda", SizeGiB: 100}}}
	b, _ := json.Marshal(f)
	return b
}

// discoverAt makes site lab discover unknown machines with image deb.
func discoverAt(t *testing.T, s *Service, site string) {
	t.Helper()
	st, err := s.GetSite(context.Background(), site)
	if err != nil {
		t.Fatal(err)
	}
	st.Unknown, st.DiscoveryImage = proto.UnknownDiscover, "deb"
	if _, err := s.AddSite(context.Background(), st); err != nil {
		t.Fatal(err)
	}
}

func discoveredMACs(t *testing.T, s *Service, site string) []string {
	t.Helper()
	ds, err := s.ListDiscovered(context.Background(), site)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		out = append(out, d.MAC)
	}
	slices.Sort(out)
	return out
}

// TestDiscovery: an edge's report of an unknown MAC is recorded at the
// edge's own site (not the one its body names), only where the site
// discovers, and shows with its facts until a host is made of it.
func TestDiscovery(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	edgeLab := ConfineToSite(ctx, "lab") // as the API confines an edge of site lab
	const m1, m2 = "52:54:00:aa:00:01", "52:54:00:aa:00:02"

	err := s.RecordFacts(edgeLab, proto.FactsRequest{MAC: m1, Facts: factsJSON(m1, 64)})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "site lab does not discover unknown machines") {
		t.Fatalf("report at a site that does not discover: %v", err)
	}
	discoverAt(t, s, "lab")
	if err := s.RecordFacts(edgeLab, proto.FactsRequest{MAC: m1, Site: "dc", Facts: factsJSON(m1, 64)}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordFacts(edgeLab, proto.FactsRequest{MAC: m1, Facts: factsJSON(m1, 64)}); err != nil {
		t.Fatal(err)
	}
	if got := discoveredMACs(t, s, "lab"); !slices.Equal(got, []string{m1}) {
		t.Fatalf("discovered at lab = %v, want [%s]", got, m1)
	}
	if got := discoveredMACs(t, s, "dc"); len(got) != 0 {
		t.Fatalf("the body's site was trusted: discovered at dc = %v", got)
	}
	fr, err := s.FactsOf(ctx, m1)
	if err != nil {
		t.Fatal(err)
	}
	if fr.State != proto.StateDiscovered || fr.Discovered.Site != "lab" || fr.Discovered.Reports != 2 {
		t.Errorf("facts of a discovered machine: %+v", fr)
	}
	var f proto.Facts
	if err := json.Unmarshal(fr.Facts, &f); err != nil || f.DMI.Vendor != "QEMU" || len(f.NICs) != 2 {
		t.Errorf("facts = %s (%v)", fr.Facts, err)
	}
	// Unconfined callers (auth off, an admin) name the site; bad reports change nothing.
	for _, tc := range []struct {
		req  proto.FactsRequest
		want error
	}{
		{proto.FactsRequest{MAC: m2, Facts: factsJSON(m2, 8)}, ErrNotFound},                     // no site at all
		{proto.FactsRequest{MAC: m2, Site: "dc", Facts: factsJSON(m2, 8)}, ErrNotFound},         // dc does not discover
		{proto.FactsRequest{MAC: m2, Site: "lab", Facts: json.RawMessage(`[1,2]`)}, ErrInvalid}, // not an object
		{proto.FactsRequest{MAC: m2, Site: "lab", Facts: json.RawMessage(`{"a":`)}, ErrInvalid}, // not JSON
		{proto.FactsRequest{MAC: "zz", Site: "lab", Facts: factsJSON(m2, 8)}, ErrInvalid},       // no MAC
		{proto.FactsRequest{MAC: m2, Site: "nope", Facts: factsJSON(m2, 8)}, ErrNotFound},       // no such site
		{proto.FactsRequest{MAC: m2, Site: "lab", Facts: json.RawMessage(`"` + strings.Repeat("x", maxFacts) + `"`)}, ErrInvalid},
	} {
		if err := s.RecordFacts(ctx, tc.req); !errors.Is(err, tc.want) {
			t.Errorf("RecordFacts(%s at %q, %.20s): %v, want %v", tc.req.MAC, tc.req.Site, tc.req.Facts, err, tc.want)
		}
	}
	if got := discoveredMACs(t, s, ""); !slices.Equal(got, []string{m1}) {
		t.Fatalf("discovered = %v after refused reports", got)
	}
	// An admin assigning it makes it a host: no longer discovered.
	if _, err := s.SetHost(ctx, proto.HostSetRequest{MAC: m1, Site: ptr("lab"), Image: ptr("deb")}); err != nil {
		t.Fatal(err)
	}
	if got := discoveredMACs(t, s, ""); len(got) != 0 {
		t.Fatalf("discovered = %v after host set", got)
	}
	if fr, err := s.FactsOf(ctx, m1); err != nil || fr.State != proto.StateBoot || fr.Host == nil || len(fr.Facts) == 0 {
		t.Errorf("facts of the new host: %+v, %v", fr, err)
	}
	// The host record carries its facts (the edge renders templates from
	// it), and a later report replaces them there too.
	if h, err := s.GetHost(ctx, m1); err != nil || string(h.Facts) != string(factsJSON(m1, 64)) {
		t.Errorf("host record's facts = %s, %v; want the discovery report", h.Facts, err)
	}
	if err := s.RecordFacts(edgeLab, proto.FactsRequest{MAC: m1, Facts: factsJSON(m1, 128)}); err != nil {
		t.Fatal(err)
	}
	if h, err := s.GetHost(ctx, m1); err != nil || string(h.Facts) != string(factsJSON(m1, 128)) {
		t.Errorf("host record's facts after a new report = %s, %v", h.Facts, err)
	}
}

// TestPolicies: the highest-priority enabled policy that matches claims a
// machine when its facts arrive or when the policy is added; a full one is
// skipped; a machine nothing matches waits, and explain says why.
func TestPolicies(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	discoverAt(t, s, "lab")
	if _, err := s.AddImage(ctx, testImage("big")); err != nil {
		t.Fatal(err)
	}
	edge := ConfineToSite(ctx, "lab")
	report := func(mac string, mem float64) {
		t.Helper()
		if err := s.RecordFacts(edge, proto.FactsRequest{MAC: mac, Facts: factsJSON(mac, mem)}); err != nil {
			t.Fatal(err)
		}
	}
	add := func(p proto.Policy) proto.PolicyAddReply {
		t.Helper()
		rep, err := s.AddPolicy(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	// Refused policies write nothing.
	for _, tc := range []struct {
		p    proto.Policy
		want string
	}{
		{proto.Policy{Name: "x", Match: "facts.memory_gib>=lots", Image: "deb"}, `--match: selector requirement 1`},
		{proto.Policy{Name: "x", Match: "labels.rack=r1", Image: "nope"}, "image nope: not found"},
		{proto.Policy{Name: "x", Match: "labels.rack=r1"}, "needs an image"},
		{proto.Policy{Name: "x", Match: "labels.rack=r1", Image: "deb", Max: -1}, "--max -1"},
		{proto.Policy{Name: "x", Match: "labels.rack=r1", Image: "deb", Site: "nope"}, "site nope: not found"},
		{proto.Policy{Name: "x", Match: "labels.rack=r1", Image: "deb", Template: "nope"}, "template nope: not found"},
		{proto.Policy{Name: "x", Match: "labels.rack=r1", Image: "deb", Labels: map[string]string{"a": "b c"}}, `invalid value "b c"`},
		{proto.Policy{Name: "X Y", Match: "labels.rack=r1", Image: "deb"}, "invalid policy name"},
	} {
		if _, err := s.AddPolicy(ctx, tc.p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("AddPolicy(%+v) = %v, want %q", tc.p, err, tc.want)
		}
	}
	if ps, err := s.ListPolicies(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("policies after refusals: %v %v", ps, err)
	}

	report("52:54:00:aa:00:01", 64)
	report("52:54:00:aa:00:02", 8)
	// Both match "qemu"; "big" (priority 10) wins the 64 GiB machine, at most one.
	rep := add(proto.Policy{Name: "qemu", Match: "facts.dmi.vendor=QEMU", Image: "deb", Labels: map[string]string{"role": "small"}, Priority: 1})
	if len(rep.Claimed) != 2 {
		t.Fatalf("policy qemu claimed %v, want both machines", rep.Claimed)
	}
	rep = add(proto.Policy{Name: "big", Match: "facts.memory_gib>=64,facts.disks[0].size_gib>=50", Image: "big", Labels: map[string]string{"role": "db"}, Priority: 10, Max: 1})
	if len(rep.Claimed) != 0 {
		t.Fatalf("policy big claimed %v: they are hosts already", rep.Claimed)
	}
	for _, tc := range []struct {
		mac, policy, image string
		mem                float64
	}{
		{"52:54:00:aa:00:03", "big", "big", 128},  // highest priority
		{"52:54:00:aa:00:04", "qemu", "deb", 128}, // big is full (max 1)
		{"52:54:00:aa:00:05", "qemu", "deb", 4},
	} {
		report(tc.mac, tc.mem)
		h, err := s.GetHost(ctx, tc.mac)
		if err != nil {
			t.Fatalf("%s: not claimed: %v", tc.mac, err)
		}
		if h.Policy != tc.policy || h.Image != tc.image || h.Site != "lab" {
			t.Errorf("%s: claimed by %q with image %q at %s, want %s with %s", tc.mac, h.Policy, h.Image, h.Site, tc.policy, tc.image)
		}
	}
	h, _ := s.GetHost(ctx, "52:54:00:aa:00:03")
	// A claimed machine installs once: its done turns it to local boot.
	if !h.Once || h.State != proto.StateBoot {
		t.Errorf("claimed host: once %v, state %q; want once, boot", h.Once, h.State)
	}
	if done, err := s.InstallDone(ctx, "52:54:00:aa:00:05"); err != nil || done.State != proto.StateLocal {
		t.Errorf("done of a claimed host: state %q, %v; want local", done.State, err)
	}
	if diff := cmp.Diff(map[string]string{"role": "db"}, h.Labels); diff != "" {
		t.Errorf("labels of the claimed host: %s", diff)
	}
	ex, err := s.ExplainPolicies(ctx, "52:54:00:aa:00:04")
	if err != nil {
		t.Fatal(err)
	}
	if ex.Policy != "qemu" || len(ex.Verdicts) != 2 || ex.Verdicts[0].Policy != "big" {
		t.Errorf("explain: %+v", ex)
	}

	// Nothing matches a Dell: it waits, and says why.
	if _, err := s.EnablePolicy(ctx, proto.PolicyEnableRequest{Name: "qemu", Disabled: true}); err != nil {
		t.Fatal(err)
	}
	dell := "52:54:00:aa:00:06"
	f := proto.Facts{V: 1, BootMAC: dell, MemoryGiB: 16, DMI: proto.DMIFacts{Vendor: "Dell Inc."}}
	raw, _ := json.Marshal(f)
	if err := s.RecordFacts(edge, proto.FactsRequest{MAC: dell, Facts: raw}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetHost(ctx, dell); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a machine no policy matches became a host: %v", err)
	}
	ex, err = s.ExplainPolicies(ctx, dell)
	if err != nil {
		t.Fatal(err)
	}
	want := []proto.PolicyVerdict{
		{Policy: "big", Priority: 10, Reason: "facts.memory_gib>=64: is 16"},
		{Policy: "qemu", Priority: 1, Reason: "disabled"},
	}
	if diff := cmp.Diff(want, ex.Verdicts); diff != "" || ex.State != proto.StateDiscovered || ex.Reason != "no policy matches" {
		t.Errorf("explain of a waiting machine: %+v\n%s", ex, diff)
	}
	// A policy added for it claims it at once.
	rep = add(proto.Policy{Name: "dell", Match: `facts.dmi.vendor="Dell Inc."`, Image: "deb", Site: "lab"})
	if !slices.Equal(rep.Claimed, []string{dell}) {
		t.Errorf("policy dell claimed %v", rep.Claimed)
	}
	// Removing a claimed host gives its place back: big may claim again.
	if err := s.RemoveHost(ctx, "52:54:00:aa:00:03"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetPolicy(ctx, "big"); err != nil || len(v.Claimed) != 0 {
		t.Errorf("big after its host was removed: %+v %v", v, err)
	}
	if err := s.RemoveImage(ctx, "big"); err == nil || !strings.Contains(err.Error(), "used by policy big") {
		t.Errorf("image of a policy removed: %v", err)
	}
}

// TestPolicyMaxTwoCoordinators: ten machines report at once through two
// coordinators on a three-node cluster; a policy with --max 1 claims
// exactly one of them, and the nine others stay discovered.
func TestPolicyMaxTwoCoordinators(t *testing.T) {
	a, b := twoCoordinators(t)
	ctx := context.Background()
	discoverAt(t, a, "lab")
	if _, err := a.AddPolicy(ctx, proto.Policy{Name: "one", Match: "facts.memory_gib>=64", Image: "deb", Max: 1}); err != nil {
		t.Fatal(err)
	}
	var fns []func() error
	for i := range 10 {
		svc := []*Service{a, b}[i%2]
		mac := fmt.Sprintf("52:54:00:bb:00:%02x", i)
		fns = append(fns, func() error {
			return svc.RecordFacts(ConfineToSite(ctx, "lab"), proto.FactsRequest{MAC: mac, Facts: factsJSON(mac, 64)})
		})
	}
	for _, err := range race(fns...) {
		if err != nil {
			t.Errorf("report: %v", err)
		}
	}
	hosts, err := b.ListHosts(ctx, "lab")
	if err != nil {
		t.Fatal(err)
	}
	var claimed []string
	for _, h := range hosts {
		if h.Policy == "one" {
			claimed = append(claimed, h.MAC)
		}
	}
	if len(claimed) != 1 {
		t.Fatalf("policy with --max 1 claimed %d machines: %v", len(claimed), claimed)
	}
	v, err := a.GetPolicy(ctx, "one")
	if err != nil || !slices.Equal(v.Claimed, claimed) {
		t.Errorf("policy claims %v (%v), hosts %v", v.Claimed, err, claimed)
	}
	if waiting := discoveredMACs(t, b, "lab"); len(waiting) != 9 || slices.Contains(waiting, claimed[0]) {
		t.Errorf("discovered after the race: %v", waiting)
	}
}
