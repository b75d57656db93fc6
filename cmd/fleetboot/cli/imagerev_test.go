package cli_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/fleetboot/fleetboot/proto"
)

// image add of new content makes a revision; history lists them with the
// current one marked; rollback goes back; a pinned host stays; bad input is
// one line and changes nothing.
func TestImageRevisionsCLI(t *testing.T) {
	url := startCoordinator(t, "dir://"+t.TempDir())
	env := []string{"FLEETBOOT_NATS=" + url}
	dir := t.TempDir()
	initrd := writeFile(t, dir, "initrd.img", "initrd")
	for i, content := range []string{"kernel one", "kernel two"} {
		k := writeFile(t, dir, "vmlinuz", content)
		if r := run(t, env, "image", "add", "web", "--kernel", k, "--initrd", initrd); r.code != 0 {
			t.Fatalf("image add %d: %d %s", i, r.code, r.stderr)
		}
	}
	if r := run(t, env, "site", "add", "lab", "--subnet", "10.0.0.0/24"); r.code != 0 {
		t.Fatalf("site add: %s", r.stderr)
	}
	if r := run(t, env, "host", "set", "52:54:00:00:00:01", "--image", "web@1"); r.code != 0 {
		t.Fatalf("pin web@1: %s", r.stderr)
	}
	r := run(t, env, "image", "history", "web")
	if r.code != 0 || !strings.Contains(r.stdout, "web@1") || !regexpLine(r.stdout, `^\*\s+web@2 `) {
		t.Fatalf("history: %d %q %s; want web@1 and web@2 marked current", r.code, r.stdout, r.stderr)
	}
	if r := run(t, env, "image", "rollback", "web"); r.code != 0 || !strings.Contains(r.stdout, "web now at revision 1") {
		t.Fatalf("rollback: %d %q %s", r.code, r.stdout, r.stderr)
	}
	r = run(t, env, "image", "show", "web", "-o", "json")
	var im proto.Image
	if err := json.Unmarshal([]byte(r.stdout), &im); err != nil || im.Revision != 1 {
		t.Fatalf("after rollback: %+v %v", im, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"image", "rollback", "web"}, "no revision before 1"},
		{[]string{"image", "rm", "web@1"}, "is the current revision"},
		{[]string{"image", "rm", "web"}, "used by 1 host"},
		{[]string{"image", "rm", "web@x"}, "invalid image revision"},
		{[]string{"image", "history", "web@1"}, "invalid image name"},
		{[]string{"host", "set", "52:54:00:00:00:02", "--image", "web@7"}, "not found"},
		{[]string{"host", "power", "52:54:00:00:00:01", "reboot"}, "invalid power action"},
		{[]string{"host", "power", "52:54:00:00:00:01", "on"}, "has no BMC"},
		{[]string{"host", "bmc", "52:54:00:00:00:01", "--ipmi", "10.0.0.9", "--user", "admin"}, "--password-file is required"},
		{[]string{"host", "bmc", "52:54:00:00:00:01", "--ipmi", "10.0.0.9:99999", "--user", "admin", "--password-file", initrd}, "bad port"},
		{[]string{"host", "bmc", "52:54:00:00:00:01", "--ipmi", "10.0.0.9", "--user", "admin", "--password-file", initrd}, "no edge of site lab has published a curve key"},
	} {
		r := run(t, env, c.args...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Errorf("%s: %d %q; want one error line with %q", strings.Join(c.args, " "), r.code, r.stderr, c.want)
		}
	}
}

// regexpLine reports whether some line of s matches re.
func regexpLine(s, re string) bool {
	return regexp.MustCompile(`(?m)` + re).MatchString(s)
}
