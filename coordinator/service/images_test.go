package service

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

// TestAddImageSeveralInitrds: an image may carry several initrds (early
// microcode first, then the initrd), kept in the operator's order; a second
// kernel or ISO is still refused.
func TestAddImageSeveralInitrds(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	ucode := proto.Artifact{Role: proto.RoleInitrd, Name: "amd-ucode.img", Key: "sha256/" + sha('c'), Size: 5, SHA256: sha('c')}
	im := testImage("ucode")
	im.Artifacts = []proto.Artifact{im.Artifacts[0], ucode, im.Artifacts[1]}
	saved, err := s.AddImage(ctx, im)
	if err != nil {
		t.Fatalf("image with microcode and initrd: %v", err)
	}
	got, err := s.GetImage(ctx, "ucode")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(saved.Artifacts, got.Artifacts); diff != "" || got.Artifacts[1].Name != "amd-ucode.img" {
		t.Errorf("stored artifacts (-saved +got):\n%s\n%+v", diff, got.Artifacts)
	}
	for _, role := range []string{proto.RoleKernel, proto.RoleISO} {
		bad := testImage("two-" + role)
		for _, name := range []string{"extra1", "extra2"} {
			bad.Artifacts = append(bad.Artifacts, proto.Artifact{Role: role, Name: name, Key: "sha256/" + sha('d'), Size: 5, SHA256: sha('d')})
		}
		_, err := s.AddImage(ctx, bad)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "two "+role+" artifacts") {
			t.Errorf("image with two more %s artifacts: err = %v", role, err)
		}
	}
}
