package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetboot/fleetboot/proto"
)

// report sends a discovery report as the discover helper's edge relays it.
func report(t *testing.T, url, mac string, facts proto.Facts) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	raw, _ := json.Marshal(facts)
	body, _ := json.Marshal(proto.FactsRequest{V: proto.Version, MAC: mac, Site: "lab", Facts: raw})
	msg, err := nc.Request(proto.APISubject(proto.APIHostFacts), body, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rep proto.Reply
	if err := json.Unmarshal(msg.Data, &rep); err != nil || rep.Error != "" {
		t.Fatalf("report of %s: %s %v", mac, rep.Error, err)
	}
}

// TestCLIDiscoveryAndPolicies walks the rack flow through the CLI: machines
// report from the discovery system, wait discovered, a policy claims the
// one it matches, and explain says which policy decided and why the others
// did not.
func TestCLIDiscoveryAndPolicies(t *testing.T) {
	url := startCoordinator(t, "dir://"+t.TempDir())
	env := []string{"FLEETBOOT_NATS=" + url}
	files := t.TempDir()
	kernel := writeFile(t, files, "vmlinuz", "kernel bytes")
	initrd := writeFile(t, files, "initrd.img", "initrd bytes")
	tmpl := writeFile(t, files, "user-data", "#cloud-config\nhostname: {{.Hostname}}\n")
	broken := writeFile(t, files, "broken", "#cloud-config\n\nhostname: {{.Hostname\n")
	must := func(args ...string) string {
		t.Helper()
		r := run(t, env, args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
		}
		return r.stdout
	}
	must("image", "add", "disc", "--kernel", kernel, "--initrd", initrd)
	must("image", "add", "debian12", "--kernel", kernel, "--initrd", initrd)
	must("site", "add", "lab", "--subnet", "10.0.0.0/24", "--range", "10.0.0.100-10.0.0.200", "--unknown", "discover", "--discovery-image", "disc")

	big := proto.Facts{V: 1, BootMAC: "52:54:00:aa:00:01", Firmware: "bios", CPUs: 4, MemoryGiB: 64,
		DMI:   proto.DMIFacts{Vendor: "QEMU", Product: "Standard PC"},
		NICs:  []proto.NICFacts{{Name: "ens3", MAC: "52:54:00:aa:00:01", Link: true}, {Name: "ens4", MAC: "52:54:00:aa:00:11"}},
		Disks: []proto.DiskFacts{{Name: "vda", SizeGiB: 20}}}
	small := big
	small.BootMAC, small.MemoryGiB = "52:54:00:aa:00:02", 2
	report(t, url, big.BootMAC, big)
	report(t, url, small.BootMAC, small)

	out := must("host", "ls", "--state", "discovered")
	for _, want := range []string{"52:54:00:aa:00:01  lab   4     64G     vda:20G  2     QEMU Standard PC", "52:54:00:aa:00:02  lab   4     2G"} {
		if !strings.Contains(out, want) {
			t.Errorf("host ls --state discovered:\n%s\nwant a line with %q", out, want)
		}
	}
	out = must("host", "show", "52:54:00:aa:00:01", "--facts")
	for _, want := range []string{"52:54:00:aa:00:01: discovered at site lab, 1 report(s)", `"vendor": "QEMU"`, `"memory_gib": 64`} {
		if !strings.Contains(out, want) {
			t.Errorf("host show --facts:\n%s\nwant %q", out, want)
		}
	}
	// Refusals: one line, nothing stored.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"policy", "add", "x", "--match", "facts.memory_gib>=lots", "--image", "debian12"}, "fleetboot: invalid --match: selector requirement 1: facts.memory_gib>=lots: >= compares numbers, and \"lots\" is not one\n"},
		{[]string{"policy", "add", "x", "--match", "labels.rack=r1"}, "fleetboot: required flag(s) \"image\" not set\n"},
		{[]string{"template", "add", "broken", "--kind", "cloud-init", "--file", broken}, "fleetboot: template broken does not parse: broken:4: unclosed action started at broken:3\n"},
		{[]string{"template", "add", "x", "--kind", "yaml", "--file", tmpl}, "fleetboot: unknown template kind \"yaml\": want one of cloud-init, kickstart, preseed, ignition, script\n"},
		{[]string{"host", "ls", "--state", "waiting"}, "fleetboot: invalid --state \"waiting\": want boot, local or discovered\n"},
	} {
		r := run(t, env, tc.args...)
		if r.code == 0 || r.stderr != tc.want {
			t.Errorf("%v: exit %d, stderr %q\nwant %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	if out := must("policy", "ls"); strings.Count(out, "\n") != 1 {
		t.Errorf("policies after refusals:\n%s", out)
	}
	must("template", "add", "web", "--kind", "cloud-init", "--file", tmpl)
	out = must("policy", "add", "big", "--match", "facts.memory_gib>=32,facts.dmi.vendor=QEMU", "--image", "debian12",
		"--template", "web", "--labels", "role=db,rack=r12", "--max", "1", "--priority", "10")
	if !strings.Contains(out, "claimed 1 waiting machine(s): 52:54:00:aa:00:01") {
		t.Errorf("policy add:\n%s", out)
	}
	out = must("host", "show", "52:54:00:aa:00:01")
	if !strings.Contains(out, "debian12") || !strings.Contains(out, "rack=r12,role=db") {
		t.Errorf("the claimed host:\n%s", out)
	}
	out = must("host", "ls", "--state", "discovered")
	if strings.Contains(out, "52:54:00:aa:00:01") || !strings.Contains(out, "52:54:00:aa:00:02") {
		t.Errorf("discovered after the claim:\n%s", out)
	}
	out = must("explain", "52:54:00:aa:00:01")
	if !strings.Contains(out, "policy    claimed by policy big when it was discovered\n  won big (priority 10): matches facts.memory_gib>=32,facts.dmi.vendor=QEMU") {
		t.Errorf("explain of the claimed host:\n%s", out)
	}
	out = must("explain", "52:54:00:aa:00:02")
	for _, want := range []string{"machine   52:54:00:aa:00:02: discovered at site lab, waiting for a policy",
		"policy    no policy matches", "  no  big (priority 10): facts.memory_gib>=32: is 2", "discover"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain of the waiting machine:\n%s\nwant %q", out, want)
		}
	}
	out = must("policy", "show", "big")
	if !strings.Contains(out, "1/1") || !strings.Contains(out, "claimed 52:54:00:aa:00:01") {
		t.Errorf("policy show:\n%s", out)
	}
	if r := run(t, env, "template", "rm", "web"); r.code == 0 || !strings.Contains(r.stderr, "used by 1 host(s) (52:54:00:aa:00:01)") {
		t.Errorf("template rm of a template in use: %d %s", r.code, r.stderr)
	}
	// host set --template: an unknown one is refused and changes nothing;
	// '' removes it, and the template can go.
	if r := run(t, env, "host", "set", "52:54:00:aa:00:01", "--template", "nope"); r.code == 0 || !strings.Contains(r.stderr, "nope") {
		t.Errorf("host set --template nope: %d %s", r.code, r.stderr)
	}
	if out := must("host", "show", "52:54:00:aa:00:01", "-o", "json"); !strings.Contains(out, `"template": "web"`) {
		t.Errorf("the host's template after a refused change:\n%s", out)
	}
	must("host", "set", "52:54:00:aa:00:01", "--template", "")
	if out := must("host", "show", "52:54:00:aa:00:01", "-o", "json"); strings.Contains(out, `"template"`) {
		t.Errorf("host set --template '' left it:\n%s", out)
	}
	must("host", "set", "52:54:00:aa:00:01", "--template", "web")
	must("host", "set", "52:54:00:aa:00:01", "--template", "")
	must("policy", "disable", "big")
	must("policy", "rm", "big")
	must("template", "rm", "web") // no host and no policy uses it now
}
