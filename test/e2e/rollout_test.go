package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/waitfor"
)

// rolloutVMs is how many VMs the rollout test moves: a canary and two more.
const rolloutVMs = 3

// webCmdline is every web revision's command line: the initramfs reports
// done with the callback URL after its marker, as an installer would; the
// broken revision's kernel panics first and never does. no_timer_check, as
// cloud images have it: under TCG on a loaded machine the kernel's check
// of the IO-APIC timer can fail and panic ("IO-APIC + timer doesn't
// work"), three VMs starting at once on two shared cores did.
const webCmdline = "console=ttyS0 panic=-1 no_timer_check fleetboot.mac={{mac}} fleetboot.image=web fleetboot.done={{callback}}"

// TestRollout (issue 17, item 3): three VMs, each behind its own IPMI BMC
// (ipmi_sim, which starts and kills the VM's QEMU), labelled role=web and
// booted on web@1. A rollout to web@2 with one canary power-cycles the
// canary through its BMC, waits until it proved it booted the new revision,
// then does the others one by one. A rollout to the broken web@3 halts
// after its canary fails, leaving the other two untouched, and its rollback
// brings the canary back to web@2, which it boots. A third rollout goes on
// where it was after the coordinator is killed in its middle.
func TestRollout(t *testing.T) {
	e := startFleetboot(t, fbOptions{dhcpMode: "full", images: []string{}})
	revs, err := EnsureRevisions(CacheDir(), filepath.Dir(e.assets.Kernel))
	if err != nil {
		t.Fatal(err)
	}
	// web@1 and web@2 are good, web@3 is broken; web@3 is current, so
	// hosts pin their revision and the rollouts name theirs.
	for i, initrd := range []string{revs.Good[0], revs.Good[1], revs.Broken} {
		e.cli(t, "image", "add", "web", "--kernel", e.assets.Kernel, "--initrd", initrd, "--cmdline", webCmdline)
		if im := e.image(t, fmt.Sprintf("web@%d", i+1)); !slices.ContainsFunc(im.Artifacts, func(a proto.Artifact) bool {
			return a.Role == proto.RoleInitrd && a.Name == filepath.Base(initrd)
		}) {
			t.Fatalf("web@%d is not the revision just added: %+v", i+1, im)
		}
	}

	vms := make([]*bmcVM, rolloutVMs)
	for i := range vms {
		mac := RandomMAC()
		e.setHost(t, mac, "--image", "web@1", "--site", site)
		e.cli(t, "host", "label", mac, "role=web")
		vms[i] = e.startBMCVM(t, fmt.Sprintf("web%d", i+1), mac)
		e.enroll(t, vms[i])
	}
	// A host the selector does not pick (no BMC, no VM): never touched.
	other := RandomMAC()
	e.setHost(t, other, "--image", "web@1", "--site", site)
	e.cli(t, "host", "label", other, "role=db")

	// All three boot web@1, in parallel.
	for _, v := range vms {
		e.power(t, v, "on", "--pxe")
	}
	for _, v := range vms {
		v.waitCount(t, revMarker(1, v.mac), 1)
	}
	// Each reports done and powers itself off: a rollout finds them off,
	// with no callback of this boot still on its way.
	for _, v := range vms {
		e.waitPower(t, v, "off")
	}

	// Each step starts from where the one before left the VMs.
	ok := true
	ok = ok && t.Run("a-canary-then-batches", func(t *testing.T) {
		before := consoles(t, vms)
		start := time.Now()
		e.cli(t, "rollout", "start", "r1", "--selector", "labels.role=web", "--image", "web@2",
			"--canary", "1", "--batch", "1", "--max-failed", "0", "--boot-timeout", "5m", "--power", "cycle")
		ro := e.waitRollout(t, "r1", proto.RolloutDone, 15*time.Minute)
		waited := time.Since(start)
		last := lastDone(ro)
		t.Logf("TIMING rollout r1 (%d VMs, canary 1, batch 1, power cycle, TCG): start → last host done %.1fs (status --wait returned after %.1fs)",
			rolloutVMs, last.Sub(start).Seconds(), waited.Seconds())

		byMAC := rolloutHosts(t, ro, vms)
		if len(ro.Hosts) != rolloutVMs {
			t.Errorf("rollout has %d hosts, want the %d labelled role=web: %+v", len(ro.Hosts), rolloutVMs, ro.Hosts)
		}
		for _, v := range vms {
			h := byMAC[v.mac]
			// Proved by its done callback: web's command line asks for one.
			if h.State != proto.RolloutHostDone || h.Proof != proto.RolloutProofCallback || h.Previous != "web@1" {
				t.Errorf("%s: %+v, want done by callback, previous web@1", v.name, h)
			}
			if got := e.hostImage(t, v.mac); got != "web@2" {
				t.Errorf("%s: host image %s after the rollout, want web@2", v.name, got)
			}
			// Booted web@2 once, through its BMC, with the next boot from PXE
			// (done may be the kernel's download: the marker follows).
			v.waitSince(t, before[v.mac], revMarker(2, v.mac), 1)
			if n := v.countSince(t, before[v.mac], revMarker(2, v.mac)); n != 1 {
				t.Errorf("%s: web@2's marker %d times since the rollout started, want 1", v.name, n)
			}
			if n := countCalls(v.actions(t, start), "set boot pxe"); n != 1 {
				t.Errorf("%s: next boot set to PXE %d times by the rollout, want 1: %v", v.name, n, v.actions(t, start))
			}
		}
		checkBatchOrder(t, ro, vms, start)
		checkUntouched(t, e, other, "web@1")
	})

	ok = ok && t.Run("b-broken-revision-halts-and-rolls-back", func(t *testing.T) {
		before := consoles(t, vms)
		start := time.Now()
		e.cli(t, "rollout", "start", "r2", "--selector", "labels.role=web", "--image", "web@3",
			"--canary", "1", "--batch", "1", "--max-failed", "0", "--boot-timeout", "2m", "--power", "cycle")
		ro := e.waitRollout(t, "r2", proto.RolloutHalted, 10*time.Minute)
		t.Logf("TIMING rollout r2 (broken web@3): start → halted %.1fs", ro.Updated.Sub(start).Seconds())
		if ro.Reason == "" {
			t.Errorf("halted rollout gives no reason: %+v", ro)
		}
		t.Logf("fleetboot rollout status r2:\n%s", e.cli(t, "rollout", "status", "r2"))
		byMAC := rolloutHosts(t, ro, vms)
		var canary *bmcVM
		for _, v := range vms {
			if byMAC[v.mac].Batch == 0 {
				canary = v
			}
		}
		if canary == nil {
			t.Fatalf("no canary (batch 0) in %+v", ro.Hosts)
		}
		if h := byMAC[canary.mac]; h.State != proto.RolloutHostFailed || h.Diagnosis == "" || h.Previous != "web@2" {
			t.Errorf("canary %s: %+v, want failed with a diagnosis, previous web@2", canary.name, h)
		} else {
			t.Logf("canary %s failed: %s", canary.name, h.Diagnosis)
		}
		// It did boot web@3: the broken init ran and the kernel panicked.
		if canary.countSince(t, before[canary.mac], panicRE) == 0 {
			t.Errorf("canary %s: no kernel panic of web@3 on its console", canary.name)
		}
		for _, v := range vms {
			if v == canary {
				continue
			}
			if h := byMAC[v.mac]; h.State != proto.RolloutHostWaiting {
				t.Errorf("%s: %+v, want waiting (untouched)", v.name, h)
			}
		}

		e.cli(t, "rollout", "rollback", "r2")
		ro = e.waitRollout(t, "r2", proto.RolloutRolledBack, 10*time.Minute)
		if h := rolloutHosts(t, ro, vms)[canary.mac]; h.State != proto.RolloutHostRolledBack {
			t.Errorf("canary %s after rollback: %+v, want rolled-back", canary.name, h)
		}
		if got := e.hostImage(t, canary.mac); got != "web@2" {
			t.Errorf("canary %s: host image %s after rollback, want web@2", canary.name, got)
		}
		// The rollback cycled it back into web@2, which it boots.
		canary.waitSince(t, before[canary.mac], revMarker(2, canary.mac), 1)
		if n := canary.countSince(t, before[canary.mac], revMarker(2, canary.mac)); n != 1 {
			t.Errorf("canary %s: web@2's marker %d times since r2 started, want 1 (after the rollback)", canary.name, n)
		}

		// The other two were never touched: still on web@2, their BMCs
		// never asked to do anything, no new boot on their consoles.
		for _, v := range vms {
			if v == canary {
				continue
			}
			if got := e.hostImage(t, v.mac); got != "web@2" {
				t.Errorf("%s: host image %s, want web@2 (untouched)", v.name, got)
			}
			if acts := v.actions(t, start); len(acts) > 0 {
				t.Errorf("%s: its BMC was driven during r2: %v", v.name, acts)
			}
			if c := v.Console(t); len(c) != len(before[v.mac]) {
				t.Errorf("%s: console grew during r2 (a boot?):\n%s", v.name, lastLines(c[len(before[v.mac]):], 20))
			}
		}
		checkUntouched(t, e, other, "web@1")
	})

	ok = ok && t.Run("c-coordinator-restart", func(t *testing.T) {
		// A second coordinator on the first one's NATS server: one
		// JetStream, as the coordinators of a cluster share one. Both run
		// a rollout driver; the rollout's lease lets one drive.
		peerArgs := []string{"coordinator", "--data", filepath.Join(e.dir, "coordinator-peer"), "--nats-url", natsURL,
			"--insecure", "--store", e.minio.StoreURL("fleetboot"), "--http-listen", ""}
		coords := []*Proc{e.coord, e.startPeer(t, "coordinator-peer", peerArgs)}

		before := consoles(t, vms)
		start := time.Now()
		e.cli(t, "rollout", "start", "r3", "--selector", "labels.role=web", "--image", "web@1",
			"--canary", "1", "--batch", "2", "--max-failed", "0", "--boot-timeout", "5m", "--power", "cycle")
		// Killed once the canary is on its way: assigned and power-cycled
		// (recorded), its boot under way.
		var at proto.Rollout
		waitfor.Within(t, 5*time.Minute, "r3's canary power-cycled", func() error {
			ro, err := e.rollout("r3")
			if err != nil {
				return err
			}
			for _, h := range ro.Hosts {
				if h.Batch == 0 && (h.State == proto.RolloutHostPowerCycled || h.State == proto.RolloutHostBooting) {
					at = ro
					return nil
				}
			}
			return fmt.Errorf("hosts %s", hostStates(ro))
		})
		// One of the two drove it until now, the other did nothing.
		if got := leaseTakers(coords, "r3"); len(got) != 1 {
			t.Errorf("%d coordinators took r3's lease (%v), want 1", len(got), got)
		}
		// Every coordinator down (the one with the NATS server last), as
		// in a power loss, then both up again on their data.
		for _, p := range slices.Backward(coords) {
			p.Kill()
		}
		t.Logf("coordinators killed (SIGKILL) with r3 at %s", hostStates(at))
		e.startCoordinator(t, "coordinator-restarted")
		restarted := []*Proc{e.coord, e.startPeer(t, "coordinator-peer-restarted", peerArgs)}

		ro := e.waitRollout(t, "r3", proto.RolloutDone, 15*time.Minute)
		t.Logf("TIMING rollout r3 (canary 1, batch 2, coordinators killed and restarted): start → last host done %.1fs",
			lastDone(ro).Sub(start).Seconds())
		if got := leaseTakers(restarted, "r3"); len(got) != 1 {
			t.Errorf("after the restart %d coordinators took r3's lease (%v), want 1", len(got), got)
		}
		all := append(coords, restarted...)
		for _, v := range vms {
			h := rolloutHosts(t, ro, vms)[v.mac]
			if h.State != proto.RolloutHostDone || h.Proof != proto.RolloutProofCallback {
				t.Errorf("%s: %+v, want done by callback", v.name, h)
			}
			if got := e.hostImage(t, v.mac); got != "web@1" {
				t.Errorf("%s: host image %s, want web@1", v.name, got)
			}
			// Where it was: nothing done twice across the restart, nothing
			// done by both coordinators.
			if n := countLines(all, regexp.MustCompile(`msg="rollout host assigned" .*rollout=r3 .*mac=`+v.mac)); n != 1 {
				t.Errorf("%s: assigned %d times by the coordinators, want 1", v.name, n)
			}
			v.waitSince(t, before[v.mac], revMarker(1, v.mac), 1)
			if n := v.countSince(t, before[v.mac], revMarker(1, v.mac)); n != 1 {
				t.Errorf("%s: web@1's marker %d times since r3 started, want 1", v.name, n)
			}
			if n := countCalls(v.actions(t, start), "set boot pxe"); n != 1 {
				t.Errorf("%s: next boot set to PXE %d times during r3, want 1: %v", v.name, n, v.actions(t, start))
			}
		}
		checkBatchOrder(t, ro, vms, start)
	})

	if !ok {
		return
	}
	var all []proto.Rollout
	if err := json.Unmarshal([]byte(e.cli(t, "rollout", "ls", "-o", "json")), &all); err != nil {
		t.Fatalf("rollout ls -o json: %v", err)
	}
	var got []string
	for _, ro := range all {
		got = append(got, ro.Name+":"+ro.State)
	}
	slices.Sort(got)
	if want := []string{"r1:done", "r2:rolled-back", "r3:done"}; !slices.Equal(got, want) {
		t.Errorf("rollout ls: %v, want %v", got, want)
	}
	checkPasswordAbsent(t, e)
}

// startPeer starts another coordinator and waits until its API serves.
// Like the first, it runs until the deployment's test ends.
func (e *fbEnv) startPeer(t *testing.T, name string, args []string) *Proc {
	t.Helper()
	p := StartProc(e.t, e.dir, name, e.command(args...))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := p.WaitFor(ctx, regexp.MustCompile(`msg="coordinator API serving"`)); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}

// leaseTakers are the coordinators (of procs) that logged taking the
// rollout's driver lease.
func leaseTakers(procs []*Proc, rollout string) []string {
	var out []string
	re := regexp.MustCompile(`msg="rollout lease taken( over)?" .*rollout=` + regexp.QuoteMeta(rollout) + `\b`)
	for _, p := range procs {
		if re.MatchString(p.Output()) {
			out = append(out, p.Name)
		}
	}
	return out
}

// countLines counts the lines of the processes' output matching re.
func countLines(procs []*Proc, re *regexp.Regexp) int {
	n := 0
	for _, p := range procs {
		n += len(re.FindAllStringIndex(p.Output(), -1))
	}
	return n
}

// rollout is `fleetboot rollout status NAME -o json`.
func (e *fbEnv) rollout(name string) (proto.Rollout, error) {
	var ro proto.Rollout
	out, err := e.command("rollout", "status", name, "-o", "json").Output()
	if err != nil {
		return ro, fmt.Errorf("rollout status %s: %w", name, err)
	}
	if err := json.Unmarshal(out, &ro); err != nil {
		return ro, fmt.Errorf("rollout status %s -o json: %w: %s", name, err, out)
	}
	return ro, nil
}

// waitRollout waits with `rollout status NAME --wait STATE` (the CLI's own
// wait, as an operator's script would) and fails unless the rollout ends
// in state.
func (e *fbEnv) waitRollout(t *testing.T, name, state string, limit time.Duration) proto.Rollout {
	t.Helper()
	out, err := e.command("rollout", "status", name, "--wait", state, "--timeout", limit.String(), "-o", "json").CombinedOutput()
	ro, gerr := e.rollout(name)
	if err != nil || gerr != nil || ro.State != state {
		t.Fatalf("rollout %s: waited for %s: %v\n%s\nnow: %s (%s), %v; hosts %s", name, state, err, out, ro.State, ro.Reason, gerr, hostStates(ro))
	}
	return ro
}

// hostImage is the image a host is set to now.
func (e *fbEnv) hostImage(t *testing.T, mac string) string {
	t.Helper()
	var h proto.Host
	if err := json.Unmarshal([]byte(e.cli(t, "host", "show", mac, "-o", "json")), &h); err != nil {
		t.Fatalf("host show %s -o json: %v", mac, err)
	}
	return h.Image
}

// checkUntouched asserts a host no rollout selected keeps its image.
func checkUntouched(t *testing.T, e *fbEnv, mac, image string) {
	t.Helper()
	if got := e.hostImage(t, mac); got != image {
		t.Errorf("host %s, which no selector picked, is on %s now, want %s", mac, got, image)
	}
}

// rolloutHosts are the rollout's hosts by MAC; it fails the test if a VM
// is missing.
func rolloutHosts(t *testing.T, ro proto.Rollout, vms []*bmcVM) map[string]proto.RolloutHost {
	t.Helper()
	out := map[string]proto.RolloutHost{}
	for _, h := range ro.Hosts {
		out[strings.ToLower(h.MAC)] = h
	}
	for _, v := range vms {
		if _, ok := out[v.mac]; !ok {
			t.Fatalf("rollout %s lacks %s (%s): %s", ro.Name, v.name, v.mac, hostStates(ro))
		}
	}
	return out
}

// checkBatchOrder asserts the rollout went batch by batch, canary first:
// no BMC of a later batch was driven before every host of the earlier
// batches was done. The BMC's chassis control stamps its calls, the
// coordinator the hosts' states: one clock, this machine's.
func checkBatchOrder(t *testing.T, ro proto.Rollout, vms []*bmcVM, since time.Time) {
	t.Helper()
	byMAC := rolloutHosts(t, ro, vms)
	canaries := 0
	for _, v := range vms {
		h := byMAC[v.mac]
		if h.Batch == 0 {
			canaries++
		}
		acts := v.actions(t, since)
		if len(acts) == 0 {
			t.Errorf("%s (batch %d): its BMC was never driven", v.name, h.Batch)
			continue
		}
		for _, w := range vms {
			if hw := byMAC[w.mac]; hw.Batch < h.Batch && !hw.Since.Before(acts[0].At) {
				t.Errorf("%s (batch %d) was powered at %s, before %s (batch %d) was done at %s",
					v.name, h.Batch, acts[0].At.Format("15:04:05.000"), w.name, hw.Batch, hw.Since.Format("15:04:05.000"))
			}
		}
	}
	if canaries != 1 {
		t.Errorf("%d canaries (batch 0), want 1: %s", canaries, hostStates(ro))
	}
}

// lastDone is when the rollout's last host was done.
func lastDone(ro proto.Rollout) time.Time {
	var last time.Time
	for _, h := range ro.Hosts {
		if h.State == proto.RolloutHostDone && h.Since.After(last) {
			last = h.Since
		}
	}
	return last
}

// hostStates is a rollout's hosts for messages: MAC batch state (diagnosis).
func hostStates(ro proto.Rollout) string {
	var b strings.Builder
	for _, h := range ro.Hosts {
		fmt.Fprintf(&b, "[%s b%d %s", h.MAC, h.Batch, h.State)
		if h.Diagnosis != "" {
			fmt.Fprintf(&b, " (%s)", h.Diagnosis)
		}
		b.WriteString("] ")
	}
	return b.String()
}

// consoles are the VMs' consoles now, by MAC: what countSince skips.
func consoles(t *testing.T, vms []*bmcVM) map[string]string {
	out := map[string]string{}
	for _, v := range vms {
		out[v.mac] = v.Console(t)
	}
	return out
}

func countCalls(calls []bmcCall, call string) int {
	n := 0
	for _, c := range calls {
		if c.Call == call {
			n++
		}
	}
	return n
}
