package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

// imageWith is testImage with its own kernel content c.
func imageWith(name string, c byte) proto.Image {
	im := testImage(name)
	im.Artifacts[0].SHA256, im.Artifacts[0].Key = sha(c), "sha256/"+sha(c)
	return im
}

func kernelOf(im proto.Image) string { return im.Artifacts[0].SHA256 }

func historyOf(t *testing.T, s *Service, name string) (current int, revs []int) {
	t.Helper()
	h, err := s.ImageHistory(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range h.Revisions {
		revs = append(revs, r.Revision)
	}
	return h.Current, revs
}

func TestImageRevisions(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.AddImage(ctx, imageWith("web", '1')))
	must(s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:a1", Site: ptr("lab"), Image: ptr("web")}))
	must(s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:a2", Site: ptr("lab"), Image: ptr("web@1")}))
	im, err := s.AddImage(ctx, imageWith("web", '2'))
	if err != nil || im.Revision != 2 {
		t.Fatalf("second add: revision %d, %v; want 2", im.Revision, err)
	}
	// The same content again is no new revision.
	if im, err := s.AddImage(ctx, imageWith("web", '2')); err != nil || im.Revision != 2 {
		t.Fatalf("same content again: revision %d, %v; want 2", im.Revision, err)
	}
	if cur, revs := historyOf(t, s, "web"); cur != 2 || !cmp.Equal(revs, []int{1, 2}) {
		t.Fatalf("history: current %d, revisions %v; want 2 of [1 2]", cur, revs)
	}
	for ref, want := range map[string]string{"web": sha('2'), "web@1": sha('1'), "web@2": sha('2')} {
		im, err := s.GetImage(ctx, ref)
		if err != nil || kernelOf(im) != want {
			t.Errorf("GetImage(%s): kernel %s, %v; want %s", ref, kernelOf(im), err, want)
		}
	}
	// A pinned host stays on its revision.
	if h, _ := s.GetHost(ctx, "52:54:00:00:00:a2"); h.Image != "web@1" {
		t.Errorf("pinned host moved to %q", h.Image)
	}

	im, err = s.RollbackImage(ctx, "web")
	if err != nil || im.Revision != 1 || kernelOf(im) != sha('1') {
		t.Fatalf("rollback: %+v, %v; want revision 1", im, err)
	}
	if got, _ := s.GetImage(ctx, "web"); kernelOf(got) != sha('1') {
		t.Errorf("after rollback web boots %s, want %s", kernelOf(got), sha('1'))
	}
	if _, err := s.RollbackImage(ctx, "web"); !errors.Is(err, ErrConflict) {
		t.Errorf("rollback past the first revision: %v, want a conflict", err)
	}
	// A new add after a rollback takes the next number, never reuses one.
	if im, err := s.AddImage(ctx, imageWith("web", '3')); err != nil || im.Revision != 3 {
		t.Fatalf("add after rollback: revision %d, %v; want 3", im.Revision, err)
	}

	before := snapshot(t, s)
	for _, c := range []struct{ ref, want string }{
		{"web@1", "used by 1 host"},           // pinned by a2
		{"web@3", "is the current revision"},  // current
		{"web", "used by 2 host"},             // followed and pinned
		{"web@9", "not found"},                // no such revision
		{"web@0", "invalid image revision"},   // malformed
		{"web@01", "invalid image revision"},  // not canonical
		{"web@x", "invalid image revision"},   // not a number
		{"Web", "invalid image name"},         // not a name
		{"web@1@2", "invalid image revision"}, // two revisions
	} {
		err := s.RemoveImage(ctx, c.ref)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("RemoveImage(%s) = %v, want an error with %q", c.ref, err, c.want)
		}
	}
	if _, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:a3", Site: ptr("lab"), Image: ptr("web@9")}); !errors.Is(err, ErrNotFound) {
		t.Errorf("host pinned to a missing revision: %v, want not found", err)
	}
	if diff := cmp.Diff(before, snapshot(t, s)); diff != "" {
		t.Errorf("refused changes wrote something (-before +after):\n%s", diff)
	}

	if err := s.RemoveImage(ctx, "web@2"); err != nil {
		t.Fatalf("remove an unused revision: %v", err)
	}
	if cur, revs := historyOf(t, s, "web"); cur != 3 || !cmp.Equal(revs, []int{1, 3}) {
		t.Fatalf("history after rm web@2: current %d, revisions %v; want 3 of [1 3]", cur, revs)
	}
	// Rollback skips the removed revision.
	if im, err := s.RollbackImage(ctx, "web"); err != nil || im.Revision != 1 {
		t.Fatalf("rollback over a removed revision: %d, %v; want 1", im.Revision, err)
	}

	for _, mac := range []string{"52:54:00:00:00:a1", "52:54:00:00:00:a2"} {
		must(s.SetHost(ctx, proto.HostSetRequest{MAC: mac, Image: ptr("deb")}))
	}
	if err := s.RemoveImage(ctx, "web"); err != nil {
		t.Fatalf("remove the unused image: %v", err)
	}
	keys, _, err := listKeyed[proto.Image](ctx, s, proto.BucketImages, ">")
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(keys, []string{"deb", proto.ImageRevisionKey("deb", 1)}) {
		t.Errorf("images bucket after removing web: %v; want only deb and its revision", keys)
	}
	if ims, _ := s.ListImages(ctx); len(ims) != 1 || ims[0].Name != "deb" {
		t.Errorf("image list shows %+v, want deb alone (no revision entries)", ims)
	}
}

// An image written before revisions existed (no revision field, and a
// field from some later version) is revision 1: hosts keep booting it, it
// shows in the history, and a rollback after the next add returns to it.
func TestLegacyImageBecomesRevisionOne(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	legacy := imageWith("old", '1')
	raw, _ := json.Marshal(legacy)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	delete(m, "revision")
	m["from_the_future"] = 1
	raw, _ = json.Marshal(m)
	if _, err := s.kv[proto.BucketImages].Put(ctx, "old", raw); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetHost(ctx, proto.HostSetRequest{MAC: "52:54:00:00:00:b1", Site: ptr("lab"), Image: ptr("old@1")}); err != nil {
		t.Fatalf("pin the legacy image's revision 1: %v", err)
	}
	if cur, revs := historyOf(t, s, "old"); cur != 1 || !cmp.Equal(revs, []int{1}) {
		t.Fatalf("legacy history: current %d, %v; want 1 of [1]", cur, revs)
	}
	if im, err := s.AddImage(ctx, imageWith("old", '2')); err != nil || im.Revision != 2 {
		t.Fatalf("add to a legacy image: revision %d, %v; want 2", im.Revision, err)
	}
	if cur, revs := historyOf(t, s, "old"); cur != 2 || !cmp.Equal(revs, []int{1, 2}) {
		t.Fatalf("history: current %d, %v; want 2 of [1 2]", cur, revs)
	}
	if im, err := s.GetImage(ctx, "old@1"); err != nil || kernelOf(im) != sha('1') {
		t.Fatalf("old@1: %v %v", kernelOf(im), err)
	}
	if im, err := s.RollbackImage(ctx, "old"); err != nil || kernelOf(im) != sha('1') {
		t.Fatalf("rollback to the legacy content: %v %v", kernelOf(im), err)
	}
}

// A revision removal and a host pinning that revision, or a rollback making
// it current, on two coordinators at once: exactly one wins, and nothing is
// left pointing at a removed revision.
func TestTwoCoordinatorsRevisionInUse(t *testing.T) {
	a, b := twoCoordinators(t)
	ctx := context.Background()
	for i := range 8 {
		name := fmt.Sprintf("r%d", i)
		for c := byte('1'); c <= '3'; c++ {
			if _, err := a.AddImage(ctx, imageWith(name, c)); err != nil {
				t.Fatal(err)
			}
		}
		mac := fmt.Sprintf("52:54:00:00:01:%02x", i)
		// rm name@1 races a host pinning it.
		errs := race(
			func() error { return a.RemoveImage(ctx, name+"@1") },
			func() error {
				_, err := b.SetHost(ctx, proto.HostSetRequest{MAC: mac, Site: ptr("lab"), Image: ptr(name + "@1")})
				return err
			},
		)
		if won := outcome(t, "rm "+name+"@1 vs pin", errs, ErrConflict, ErrNotFound); won != 1 {
			t.Fatalf("%s@1: rm err %v, pin err %v; want exactly one to win", name, errs[0], errs[1])
		}
		_, revErr := a.GetImage(ctx, name+"@1")
		h, hostErr := a.GetHost(ctx, mac)
		if errs[0] == nil && (revErr == nil || hostErr == nil) {
			t.Errorf("rm won but the revision (%v) or the host (%+v, %v) is there", revErr, h, hostErr)
		}
		if errs[1] == nil && revErr != nil {
			t.Errorf("pin won but the revision is gone: %v", revErr)
		}
		// rm name@2 races a rollback making it current.
		errs = race(
			func() error { return a.RemoveImage(ctx, name+"@2") },
			func() error { _, err := b.RollbackImage(ctx, name); return err },
		)
		if won := outcome(t, "rm "+name+"@2 vs rollback", errs, ErrConflict, ErrNotFound); won < 1 {
			t.Fatalf("%s@2: rm err %v, rollback err %v; want one to win", name, errs[0], errs[1])
		}
		cur, err := a.GetImage(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.GetImage(ctx, proto.ImageRef(name, cur.CurrentRevision())); err != nil {
			t.Errorf("%s is current at revision %d, which is gone: %v", name, cur.CurrentRevision(), err)
		}
	}
}

// TestGetImageOlderRevision: NAME@N is that revision alone, nothing of the
// current one: an older revision without a command line has none.
func TestGetImageOlderRevision(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	im := testImage("plain")
	im.Cmdline = ""
	if _, err := s.AddImage(ctx, im); err != nil {
		t.Fatal(err)
	}
	im.Cmdline, im.Artifacts[0].SHA256 = "console=ttyS0", sha('c')
	im.Artifacts[0].Key = "sha256/" + sha('c')
	if _, err := s.AddImage(ctx, im); err != nil {
		t.Fatal(err)
	}
	old, err := s.GetImage(ctx, "plain@1")
	if err != nil {
		t.Fatal(err)
	}
	if old.Cmdline != "" || old.Revision != 1 || old.Artifacts[0].SHA256 != sha('a') {
		t.Errorf("plain@1 = %+v, want revision 1 with no cmdline", old)
	}
}
