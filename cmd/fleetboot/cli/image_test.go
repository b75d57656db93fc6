package cli_test

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

// TestImageAddSeveralInitrds: --initrd given twice registers both files as
// initrds, in the order given (early microcode first), which is the order
// the edge's boot configs load them in.
func TestImageAddSeveralInitrds(t *testing.T) {
	url := startCoordinator(t, "dir://"+t.TempDir())
	env := []string{"FLEETBOOT_NATS=" + url}
	dir := t.TempDir()
	kernel := writeFile(t, dir, "vmlinuz", "kernel")
	ucode := writeFile(t, dir, "amd-ucode.img", "microcode")
	initrd := writeFile(t, dir, "initrd.img", "initrd")
	r := run(t, env, "image", "add", "deb", "--kernel", kernel, "--initrd", ucode, "--initrd", initrd)
	if r.code != 0 {
		t.Fatalf("image add: %d %s", r.code, r.stderr)
	}
	r = run(t, env, "image", "show", "deb", "-o", "json")
	if r.code != 0 {
		t.Fatalf("image show: %d %s", r.code, r.stderr)
	}
	var im proto.Image
	if err := json.Unmarshal([]byte(r.stdout), &im); err != nil {
		t.Fatalf("image show: %v\n%s", err, r.stdout)
	}
	var got [][2]string
	for _, a := range im.Artifacts {
		got = append(got, [2]string{a.Role, a.Name})
	}
	want := [][2]string{{"kernel", "vmlinuz"}, {"initrd", "amd-ucode.img"}, {"initrd", "initrd.img"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("artifacts (-want +got):\n%s", diff)
	}
}
