package cli_test

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// TestRolloutThroughAnEdge: `rollout start` moves two hosts to a new
// revision, canary first, through a real edge: each "machine" fetches its
// script and the new revision's kernel and initrd from the edge (which
// records the events), then posts its done callback with the token from
// its command line. `rollout status --wait done` sees the rollout through.
func TestRolloutThroughAnEdge(t *testing.T) {
	const m1, m2 = "52:54:00:00:0b:01", "52:54:00:00:0b:02"
	storeDir, url, env := labWithHost(t, "web", m1)
	files := t.TempDir()
	for _, args := range [][]string{
		// Pinned to revision 1: a host that follows the name would move
		// to revision 2 as soon as it is added (it would be on the target
		// already: done from the start).
		{"host", "set", m1, "--image", "web@1"},
		{"host", "set", m2, "--image", "web@1"},
		{"image", "add", "web", "--kernel", writeFile(t, files, "vmlinuz", "kernel two"), "--initrd", writeFile(t, files, "initrd.img", "initrd two"),
			"--cmdline", "console=ttyS0 fleetboot.done={{callback}}"},
	} {
		if r := run(t, env, args...); r.code != 0 {
			t.Fatalf("%v: %s", args, r.stderr)
		}
	}
	base := startLabEdge(t, url, storeDir)
	get := func(u string) string {
		t.Helper()
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	// fetch plays the machine's iPXE once the edge renders it image: the
	// script, then the kernel and initrd it names.
	fetch := func(mac, image string) string {
		t.Helper()
		var script string
		waitfor.True(t, mac+"'s script for "+image, func() bool {
			script = get(base + "/boot.ipxe?mac=" + mac + "&arch=x86_64&platform=efi")
			return strings.Contains(script, "/artifacts/"+image+"/vmlinuz")
		})
		urls := regexp.MustCompile(`http://\S+/artifacts/`+image+`/[a-z.]+(\?mac=[0-9a-f:]+)?`).FindAllString(script, -1)
		if len(urls) != 2 {
			t.Fatalf("artifact URLs %q in the script:\n%s", urls, script)
		}
		for _, u := range urls {
			get(u)
		}
		return script
	}
	// boot is a whole boot of web@2, whose system calls back.
	boot := func(mac string) {
		t.Helper()
		script := fetch(mac, "web@2")
		cb := regexp.MustCompile(`fleetboot\.done=(\S+)`).FindStringSubmatch(script)
		if cb == nil {
			t.Fatalf("no callback in the script:\n%s", script)
		}
		resp, err := http.Post(cb[1], "application/json", strings.NewReader(`{"ok":true}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("done callback of %s: HTTP %d", mac, resp.StatusCode)
		}
	}

	r := run(t, env, "rollout", "start", "web2", "--selector", "site=lab", "--image", "web@2", "--canary", "1", "--batch", "1", "--boot-timeout", "10m")
	if r.code != 0 || !strings.Contains(r.stdout, "rollout web2  running") {
		t.Fatalf("rollout start: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	boot(m1)
	if r := run(t, env, "rollout", "status", "web2", "-o", "json"); r.code != 0 {
		t.Fatalf("status: %s", r.stderr)
	}
	boot(m2)
	r = run(t, env, "rollout", "status", "web2", "--wait", "done,halted", "--timeout", "2m")
	if r.code != 0 || !strings.Contains(r.stdout, "rollout web2  done: 2 done, 0 failed") || strings.Count(r.stdout, "proof: callback") != 2 {
		t.Fatalf("status --wait done: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = run(t, env, "rollout", "status", "web2", "-o", "json")
	var ro proto.Rollout
	if err := json.Unmarshal([]byte(r.stdout), &ro); err != nil {
		t.Fatal(err)
	}
	if ro.Hosts[0].MAC != m1 || ro.Hosts[0].Batch != 0 || !ro.Hosts[1].Assigned.After(ro.Hosts[0].Since) {
		t.Errorf("the canary %+v did not go first: %+v", ro.Hosts[0], ro.Hosts[1])
	}
	// Back to revision 1, whose command line has no callback: the edge's
	// own events of its kernel and initrd, whole, prove each boot.
	if r := run(t, env, "rollout", "start", "back", "--selector", "site=lab", "--image", "web@1", "--canary", "1", "--batch", "1"); r.code != 0 {
		t.Fatalf("rollout start back: %s", r.stderr)
	}
	fetch(m1, "web@1")
	fetch(m2, "web@1")
	r = run(t, env, "rollout", "status", "back", "--wait", "done", "--timeout", "2m")
	if r.code != 0 || strings.Count(r.stdout, "proof: kernel") != 2 {
		t.Fatalf("status --wait done: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Failures are one line, with exit 1.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"rollout", "pause", "web2"}, "fleetboot: rollout web2 is done: only a running rollout can pause"},
		{[]string{"rollout", "status", "nope"}, "fleetboot: rollout nope: not found"},
		{[]string{"rollout", "start", "x", "--selector", "site=lab", "--image", "web", "--batch", "0"}, `fleetboot: --batch "0": want a count of hosts (1 or more) or a percentage such as 10%`},
		{[]string{"rollout", "status", "web2", "--wait", "finished"}, `fleetboot: invalid --wait "finished": want one or more of running, paused, halted, aborted, done, rolling-back, rolled-back`},
	} {
		r := run(t, env, c.args...)
		if r.code != 1 || strings.TrimSpace(r.stderr) != c.want {
			t.Errorf("%v: exit %d, stderr %q, want %q", c.args, r.code, r.stderr, c.want)
		}
	}
}
