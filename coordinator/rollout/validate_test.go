package rollout_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/proto"
)

// TestStartRefusals: every bad start is refused with one clear line and
// the sentinel the API maps to its code, and writes no rollout.
func TestStartRefusals(t *testing.T) {
	f := newFixture(t, "console=ttyS0", map[string]int{"lab": 2, "dc": 1})
	e := f.engine("v")
	taken := spec("taken")
	taken.Selector = "labels.role=web,site=lab"
	f.start(taken) // holds lab's hosts
	other := func(s proto.RolloutSpec) proto.RolloutSpec {
		s.Selector = "site=dc,labels.role=none"
		return s
	}
	cases := []struct {
		name   string
		change func(s *proto.RolloutSpec)
		want   error
		line   string
	}{
		{"bad name", func(s *proto.RolloutSpec) { s.Name = "Bad Name" }, service.ErrInvalid, "invalid rollout name"},
		{"no selector", func(s *proto.RolloutSpec) { s.Selector = "" }, service.ErrInvalid, "--selector is required"},
		{"bad selector", func(s *proto.RolloutSpec) { s.Selector = "labels.role" + "=" }, service.ErrInvalid, "--selector"},
		{"no image", func(s *proto.RolloutSpec) { s.Image = "" }, service.ErrInvalid, "--image is required"},
		{"bad image ref", func(s *proto.RolloutSpec) { s.Image = "web@x" }, service.ErrInvalid, "invalid image revision"},
		{"unknown image", func(s *proto.RolloutSpec) { s.Image = "nope" }, service.ErrNotFound, "image nope"},
		{"unknown revision", func(s *proto.RolloutSpec) { s.Image = "web@9" }, service.ErrNotFound, "web@9"},
		{"negative canary", func(s *proto.RolloutSpec) { s.Canary = -1 }, service.ErrInvalid, "--canary -1"},
		{"batch 0", func(s *proto.RolloutSpec) { s.Batch = "0" }, service.ErrInvalid, `--batch "0"`},
		{"batch 0%", func(s *proto.RolloutSpec) { s.Batch = "0%" }, service.ErrInvalid, `--batch "0%"`},
		{"batch 101%", func(s *proto.RolloutSpec) { s.Batch = "101%" }, service.ErrInvalid, `--batch "101%"`},
		{"batch words", func(s *proto.RolloutSpec) { s.Batch = "half" }, service.ErrInvalid, `--batch "half"`},
		{"negative max-failed", func(s *proto.RolloutSpec) { s.MaxFailed = -1 }, service.ErrInvalid, "--max-failed -1"},
		{"no boot timeout", func(s *proto.RolloutSpec) { s.BootTimeout = 0 }, service.ErrInvalid, "--boot-timeout"},
		{"power off", func(s *proto.RolloutSpec) { s.Power = "off" }, service.ErrInvalid, `--power "off"`},
		{"unknown site", func(s *proto.RolloutSpec) { s.Sites = []string{"mars"} }, service.ErrNotFound, "mars"},
		{"site twice", func(s *proto.RolloutSpec) { s.Sites = []string{"lab", "lab"} }, service.ErrInvalid, "given twice"},
		{"no host matches", func(s *proto.RolloutSpec) { *s = other(*s) }, service.ErrInvalid, "matches no host"},
		{"canaries beyond the first site", func(s *proto.RolloutSpec) { s.Selector, s.Canary = "site=dc", 2 }, service.ErrInvalid, "the first site, dc, has only 1"},
		{"power without BMCs", func(s *proto.RolloutSpec) { s.Power = proto.RolloutPowerCycle }, service.ErrInvalid, "have no BMC"},
		{"name taken", func(s *proto.RolloutSpec) { s.Name = "taken" }, service.ErrConflict, "rollout taken exists"},
		{"hosts in an active rollout", func(s *proto.RolloutSpec) {}, service.ErrConflict, "is in rollout taken (running)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := spec("fresh")
			c.change(&s)
			_, err := e.Start(context.Background(), s)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.line) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err %v, want %v saying %q on one line", err, c.want, c.line)
			}
			if _, err := e.Get(context.Background(), s.Name); s.Name != "taken" && !errors.Is(err, service.ErrNotFound) && !errors.Is(err, service.ErrInvalid) {
				t.Errorf("rollout %s written by a refused start: %v", s.Name, err)
			}
		})
	}
	// A bare name is pinned to its current revision, and an unrelated
	// selection starts. Its host follows web, whose current revision is
	// the target: it is done from the start, and nothing holds it.
	if _, err := f.svc.SetHost(context.Background(), proto.HostSetRequest{V: proto.Version, MAC: macOf("dc", 0), Image: ptr("web")}); err != nil {
		t.Fatal(err)
	}
	s := spec("pinned")
	s.Image, s.Selector, s.Canary = "web", "site=dc", 0
	r, err := e.Start(context.Background(), s)
	if err != nil || r.Image != "web@2" {
		t.Fatalf("start with a bare image name: %v, image %q, want web@2", err, r.Image)
	}
	if h := r.Hosts[0]; h.State != proto.RolloutHostDone || h.Proof != proto.RolloutProofAlready || h.Previous != "web" {
		t.Errorf("a host already on the target: %+v, want done (already), previous web", h)
	}
}
