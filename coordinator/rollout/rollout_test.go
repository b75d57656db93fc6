package rollout_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

func spec(name string) proto.RolloutSpec {
	return proto.RolloutSpec{V: proto.Version, Name: name, Selector: "labels.role=web", Image: "web@2", Canary: 1, Batch: "2", BootTimeout: 600}
}

// TestCanaryThenBatches: the canary goes alone; batch 1 starts only once
// it booted, batch 2 once every host of batch 1 is done, site by site. A
// boot proves itself by fetching the target's kernel and initrd (by
// digest: revision 1's files prove nothing), or by its done callback.
// Every host is set once, through the audited host set.
func TestCanaryThenBatches(t *testing.T) {
	f := newFixture(t, "console=ttyS0", map[string]int{"lab": 3, "dc": 2})
	e := f.engine("c1")
	s := spec("web7")
	s.Sites = []string{"lab", "dc"}
	r := f.start(s)
	wantBatches := map[string]int{macOf("lab", 0): 0, macOf("lab", 1): 1, macOf("lab", 2): 1, macOf("dc", 0): 2, macOf("dc", 1): 2}
	for _, h := range r.Hosts {
		if h.Batch != wantBatches[h.MAC] || h.Previous != "web@1" || h.State != proto.RolloutHostWaiting {
			t.Errorf("host %s planned %+v, want batch %d, previous web@1, waiting", h.MAC, h, wantBatches[h.MAC])
		}
	}
	canary := macOf("lab", 0)
	r = f.until("the canary assigned", func(r proto.Rollout) bool {
		return stateOf(r, canary).State == proto.RolloutHostAssigned && !stateOf(r, canary).HostVersion.IsZero()
	}, "web7", e)
	if got := f.host(canary).Image; got != "web@2" {
		t.Fatalf("canary's image %q, want web@2", got)
	}
	if n := hostsIn(r, proto.RolloutHostWaiting); n != 4 {
		t.Fatalf("%d hosts waiting while the canary boots, want 4: %+v", n, r.Hosts)
	}
	// A boot of the old revision proves nothing; the new one does.
	f.boot(canary, kernel1, initrd1, 100)
	e.Tick(context.Background())
	if st := stateOf(f.get("web7"), canary); st.State != proto.RolloutHostBooting {
		t.Fatalf("canary after a boot of the old revision: %+v, want booting", st)
	}
	f.boot(canary, kernel2, initrd2, 200)
	r = f.until("batch 1 assigned", func(r proto.Rollout) bool {
		return stateOf(r, macOf("lab", 1)).State == proto.RolloutHostAssigned && stateOf(r, macOf("lab", 2)).State == proto.RolloutHostAssigned
	}, "web7", e)
	if st := stateOf(r, canary); st.State != proto.RolloutHostDone || st.Proof != proto.RolloutProofKernel {
		t.Fatalf("canary %+v, want done by kernel", st)
	}
	for _, m := range []string{macOf("dc", 0), macOf("dc", 1)} {
		if stateOf(r, m).State != proto.RolloutHostWaiting || f.host(m).Image != "web@1" {
			t.Fatalf("batch 2 host %s touched before batch 1 is over: %+v", m, stateOf(r, m))
		}
	}
	// One of batch 1 calls back, the other boots: only then batch 2.
	f.done(macOf("lab", 1))
	f.until("lab-1 done by callback", func(r proto.Rollout) bool { return stateOf(r, macOf("lab", 1)).State == proto.RolloutHostDone }, "web7", e)
	if st := stateOf(f.get("web7"), macOf("dc", 0)); st.State != proto.RolloutHostWaiting {
		t.Fatalf("batch 2 started with batch 1 in flight: %+v", st)
	}
	f.boot(macOf("lab", 2), kernel2, initrd2, 200)
	f.until("batch 2 assigned", func(r proto.Rollout) bool { return stateOf(r, macOf("dc", 1)).State == proto.RolloutHostAssigned }, "web7", e)
	f.done(macOf("dc", 0))
	f.done(macOf("dc", 1))
	r = f.until("the rollout done", func(r proto.Rollout) bool { return r.State == proto.RolloutDone }, "web7", e)
	if st := stateOf(r, macOf("lab", 1)); st.Proof != proto.RolloutProofCallback {
		t.Errorf("lab-1 proof %q, want callback", st.Proof)
	}
	// Each batch was assigned after the one before was over.
	overAt := map[int]time.Time{}
	for _, h := range r.Hosts {
		if h.Since.After(overAt[h.Batch]) {
			overAt[h.Batch] = h.Since
		}
	}
	for _, h := range r.Hosts {
		if h.Batch > 0 && h.Assigned.Before(overAt[h.Batch-1]) {
			t.Errorf("host %s of batch %d assigned at %s, before batch %d was over (%s)", h.MAC, h.Batch, h.Assigned, h.Batch-1, overAt[h.Batch-1])
		}
	}
	sets := f.hostSets()
	for _, h := range r.Hosts {
		if sets[h.MAC] != 1 || f.host(h.MAC).Image != "web@2" {
			t.Errorf("host %s: set %d times, image %s; want once, web@2", h.MAC, sets[h.MAC], f.host(h.MAC).Image)
		}
	}
	if r.Driver != "c1" {
		t.Errorf("driver %q, want c1", r.Driver)
	}
	// The rollout's steps are in the canary's timeline: assigned, done.
	if got := f.timelineKinds(canary, proto.RolloutEventEdge); got != "rollout:assigned rollout:done" {
		t.Errorf("the canary's rollout events: %q", got)
	}
}

// TestHaltLeavesWaitingHostsUntouched: failures up to --max-failed are
// borne; one more halts the rollout, with the timeline's diagnosis, and
// the hosts it never reached keep their KV entry as it was.
func TestHaltLeavesWaitingHostsUntouched(t *testing.T) {
	f := newFixture(t, "console=ttyS0 fleetboot.done={{callback}}", map[string]int{"lab": 4})
	e := f.engine("c1")
	s := spec("halt")
	s.Canary, s.Batch, s.MaxFailed = 0, "1", 1
	untouched := map[string]uint64{macOf("lab", 2): f.hostEntry(macOf("lab", 2)), macOf("lab", 3): f.hostEntry(macOf("lab", 3))}
	f.start(s)
	// Host 0: the script is served, no kernel is ever asked for.
	stall := func(mac string) {
		f.publish(mac,
			proto.Event{Kind: proto.EventDHCPAck, Detail: map[string]string{"xid": "9", "ip": "10.0.0.9"}},
			proto.Event{Kind: proto.EventScript, Detail: map[string]string{"decision": "boot", "image": "web@2"}})
	}
	f.until("host 0 assigned", func(r proto.Rollout) bool { return !stateOf(r, macOf("lab", 0)).HostVersion.IsZero() }, "halt", e)
	stall(macOf("lab", 0))
	f.until("host 0 booting", func(r proto.Rollout) bool { return stateOf(r, macOf("lab", 0)).State == proto.RolloutHostBooting }, "halt", e)
	f.clock.Add(settle + time.Second) // the boot is over
	r := f.until("host 1 assigned after host 0 failed", func(r proto.Rollout) bool {
		return !stateOf(r, macOf("lab", 1)).HostVersion.IsZero()
	}, "halt", e)
	if st := stateOf(r, macOf("lab", 0)); st.State != proto.RolloutHostFailed || !strings.Contains(st.Diagnosis, "no artifact was requested") {
		t.Fatalf("host 0 %+v, want failed with the no-artifact diagnosis", st)
	}
	if r.State != proto.RolloutRunning {
		t.Fatalf("rollout %s (%s) after 1 failure with --max-failed 1", r.State, r.Reason)
	}
	// Host 1: its kernel and initrd load, but the callback it promises
	// never comes: the boot timeout fails it.
	f.boot(macOf("lab", 1), kernel2, initrd2, 200)
	f.clock.Add(time.Duration(s.BootTimeout+1) * time.Second)
	r = f.until("the rollout halted", func(r proto.Rollout) bool { return r.State == proto.RolloutHalted }, "halt", e)
	if st := stateOf(r, macOf("lab", 1)); st.State != proto.RolloutHostFailed || !strings.Contains(st.Diagnosis, "no done callback") {
		t.Errorf("host 1 %+v, want failed: kernel loaded, no done callback", st)
	}
	if !strings.Contains(r.Reason, "2 host(s) failed, more than --max-failed 1") {
		t.Errorf("reason %q", r.Reason)
	}
	for i := 0; i < 3; i++ { // more ticks change nothing
		e.Tick(context.Background())
	}
	r = f.get("halt")
	for mac, rev := range untouched {
		if st := stateOf(r, mac); st.State != proto.RolloutHostWaiting {
			t.Errorf("host %s %+v, want waiting", mac, st)
		}
		if got := f.hostEntry(mac); got != rev {
			t.Errorf("host %s's KV entry is at revision %d, was %d: touched", mac, got, rev)
		}
	}
}

// TestBootTimeout: a host nobody boots fails when its boot timeout
// passes, with "no boot within"; a failed canary halts the rollout even
// within the failure budget.
func TestBootTimeout(t *testing.T) {
	f := newFixture(t, "console=ttyS0", map[string]int{"lab": 2})
	e := f.engine("c1")
	s := spec("slow")
	s.BootTimeout, s.MaxFailed = 2, 5
	f.start(s)
	f.until("the canary assigned", func(r proto.Rollout) bool { return !stateOf(r, macOf("lab", 0)).HostVersion.IsZero() }, "slow", e)
	e.Tick(context.Background())
	if st := stateOf(f.get("slow"), macOf("lab", 0)); st.State != proto.RolloutHostAssigned {
		t.Fatalf("canary %+v before its timeout, want assigned", st)
	}
	f.clock.Add(3 * time.Second)
	r := f.until("halted", func(r proto.Rollout) bool { return r.State == proto.RolloutHalted }, "slow", e)
	if st := stateOf(r, macOf("lab", 0)); st.State != proto.RolloutHostFailed || st.Diagnosis != "no boot within 2s" {
		t.Errorf("canary %+v, want failed: no boot within 2s", st)
	}
	if !strings.HasPrefix(r.Reason, "canary "+macOf("lab", 0)+" failed") {
		t.Errorf("reason %q, want the canary's failure", r.Reason)
	}
	if st := stateOf(r, macOf("lab", 1)); st.State != proto.RolloutHostWaiting || f.host(macOf("lab", 1)).Image != "web@1" {
		t.Errorf("host 1 %+v touched", st)
	}
}

// TestPauseResumeAbortRollback drives the operator's actions through the
// API.
func TestPauseResumeAbortRollback(t *testing.T) {
	f := newFixture(t, "console=ttyS0", map[string]int{"lab": 4})
	e := f.engine("c1")
	s := spec("ops")
	s.Batch = "1"
	f.start(s)
	var r proto.Rollout
	f.mustCall(proto.APIRolloutPause, proto.NameRequest{V: proto.Version, Name: "ops"}, &r)
	if r.State != proto.RolloutPaused || !strings.Contains(r.Reason, "paused by") {
		t.Fatalf("after pause: %s (%s)", r.State, r.Reason)
	}
	for range 3 {
		e.Tick(context.Background())
	}
	if n := hostsIn(f.get("ops"), proto.RolloutHostWaiting); n != 4 {
		t.Fatalf("a paused rollout started hosts: %d waiting, want 4", n)
	}
	if err := f.call(proto.APIRolloutPause, proto.NameRequest{V: proto.Version, Name: "ops"}, nil); err == nil || !strings.Contains(err.Error(), "only a running rollout can pause") {
		t.Errorf("pause of a paused rollout: %v", err)
	}
	f.mustCall(proto.APIRolloutResume, proto.NameRequest{V: proto.Version, Name: "ops"}, &r)
	canary := macOf("lab", 0)
	f.until("the canary assigned", func(r proto.Rollout) bool { return !stateOf(r, canary).HostVersion.IsZero() }, "ops", e)
	f.boot(canary, kernel2, initrd2, 200)
	f.until("batch 1 assigned", func(r proto.Rollout) bool { return !stateOf(r, macOf("lab", 1)).HostVersion.IsZero() }, "ops", e)
	f.mustCall(proto.APIRolloutAbort, proto.NameRequest{V: proto.Version, Name: "ops"}, &r)
	if r.State != proto.RolloutAborted {
		t.Fatalf("after abort: %s", r.State)
	}
	// The host already booting is still watched to its end.
	f.boot(macOf("lab", 1), kernel2, initrd2, 200)
	f.until("the aborted rollout's booting host done", func(r proto.Rollout) bool {
		return stateOf(r, macOf("lab", 1)).State == proto.RolloutHostDone
	}, "ops", e)
	for range 3 {
		e.Tick(context.Background())
	}
	r = f.get("ops")
	if n := hostsIn(r, proto.RolloutHostWaiting); n != 2 {
		t.Fatalf("an aborted rollout started hosts: %d waiting, want 2", n)
	}
	if err := f.call(proto.APIRolloutResume, proto.NameRequest{V: proto.Version, Name: "ops"}, nil); err == nil {
		t.Error("an aborted rollout resumed")
	}
	// Rollback: the canary and host 1 (both done) go back to web@1,
	// the waiting ones are not touched.
	untouched := f.hostEntry(macOf("lab", 3))
	f.mustCall(proto.APIRolloutRollback, proto.NameRequest{V: proto.Version, Name: "ops"}, &r)
	if r.State != proto.RolloutRollingBack {
		t.Fatalf("after rollback: %s", r.State)
	}
	r = f.until("rolled back", func(r proto.Rollout) bool { return r.State == proto.RolloutRolledBack }, "ops", e)
	for i, want := range []string{proto.RolloutHostRolledBack, proto.RolloutHostRolledBack, proto.RolloutHostWaiting, proto.RolloutHostWaiting} {
		mac := macOf("lab", i)
		if st := stateOf(r, mac); st.State != want || f.host(mac).Image != "web@1" {
			t.Errorf("host %s %+v on %s, want %s on web@1", mac, st, f.host(mac).Image, want)
		}
	}
	if f.hostEntry(macOf("lab", 3)) != untouched {
		t.Error("rollback touched a waiting host")
	}
	// The hosts are free again: a new rollout may take them.
	f.start(spec("again"))
}

// TestPowerCycle: with --power cycle every assigned host is power-cycled
// through its site's edge, next boot PXE; a host without a BMC refuses the
// start.
func TestPowerCycle(t *testing.T) {
	f := newFixture(t, "console=ttyS0", map[string]int{"lab": 2})
	e := f.engine("c1")
	s := spec("pc")
	s.Power = proto.RolloutPowerCycle
	if err := f.call(proto.APIRolloutStart, s, nil); err == nil || !strings.Contains(err.Error(), "have no BMC") {
		t.Fatalf("start without BMCs: %v", err)
	}
	f.givePower(macOf("lab", 0), macOf("lab", 1))
	f.start(s)
	f.until("the canary assigned", func(r proto.Rollout) bool { return !stateOf(r, macOf("lab", 0)).HostVersion.IsZero() }, "pc", e)
	f.clock.Add(2 * time.Second) // past PowerDelay
	f.until("the canary power-cycled", func(r proto.Rollout) bool {
		return stateOf(r, macOf("lab", 0)).State == proto.RolloutHostPowerCycled
	}, "pc", e)
	req := <-f.power
	if req.MAC != macOf("lab", 0) || req.Action != proto.PowerCycle || !req.PXE {
		t.Errorf("power request %+v, want cycle with PXE of the canary", req)
	}
	f.boot(macOf("lab", 0), kernel2, initrd2, 200)
	f.until("host 1 assigned", func(r proto.Rollout) bool { return !stateOf(r, macOf("lab", 1)).HostVersion.IsZero() }, "pc", e)
}

// TestCoordinatorDiesAndAnotherResumes: the driving coordinator dies
// mid-rollout (its connection gone, its lease left behind); another does
// nothing while the lease is fresh, takes it over once it was not renewed
// for LeaseBeats ticks, and carries on from the recorded state. No host
// is set twice.
func TestCoordinatorDiesAndAnotherResumes(t *testing.T) {
	f := newFixture(t, "console=ttyS0", map[string]int{"lab": 3})
	a, b := f.engine("a"), f.engine("b")
	f.start(spec("dies"))
	canary := macOf("lab", 0)
	f.until("a assigned the canary", func(r proto.Rollout) bool { return !stateOf(r, canary).HostVersion.IsZero() }, "dies", a)
	// a dies here: it never ticks again.
	before := f.get("dies")
	f.boot(canary, kernel2, initrd2, 200)
	b.Tick(context.Background())
	b.Tick(context.Background())
	if r := f.get("dies"); r.Driver != "a" || stateOf(r, canary).State != before.Hosts[0].State {
		t.Fatalf("b drove a rollout whose lease a holds: driver %s, canary %+v", r.Driver, stateOf(r, canary))
	}
	f.clock.Add(3 * tick)
	r := f.until("b took over and started batch 1", func(r proto.Rollout) bool {
		return r.Driver == "b" && !stateOf(r, macOf("lab", 1)).HostVersion.IsZero()
	}, "dies", b)
	if st := stateOf(r, canary); st.State != proto.RolloutHostDone {
		t.Errorf("canary %+v, want done", st)
	}
	// A coordinator that stopped after recording a host as assigned but
	// before setting it: the next driver sets it.
	f.done(macOf("lab", 1))
	f.done(macOf("lab", 2))
	r = f.until("done", func(r proto.Rollout) bool { return r.State == proto.RolloutDone }, "dies", b)
	for mac, n := range f.hostSets() {
		if n != 1 {
			t.Errorf("host %s set %d times, want once", mac, n)
		}
	}
	if len(f.hostSets()) != 3 {
		t.Errorf("host sets %v, want one per host", f.hostSets())
	}
}

// TestTwoCoordinatorsNeverBothDrive: two drivers run side by side on the
// same JetStream, in real time; every host is set exactly once and the
// rollout completes.
func TestTwoCoordinatorsNeverBothDrive(t *testing.T) {
	f := newFixture(t, "console=ttyS0", map[string]int{"lab": 4, "dc": 2})
	f.clock = nil
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	engines := []interface{ Run(context.Context) }{f.realEngine("a"), f.realEngine("b")}
	done := make(chan struct{})
	for _, e := range engines {
		go func() {
			e.Run(ctx)
			done <- struct{}{}
		}()
	}
	s := spec("both")
	s.Batch = "2"
	f.start(s)
	seen := map[string]bool{}
	f.until("done", func(r proto.Rollout) bool {
		for _, h := range r.Hosts {
			if !h.HostVersion.IsZero() && !seen[h.MAC] {
				seen[h.MAC] = true
				f.done(h.MAC)
			}
		}
		return r.State == proto.RolloutDone
	}, "both")
	cancel()
	<-done
	<-done
	sets := f.hostSets()
	if len(sets) != 6 {
		t.Errorf("host sets %v, want 6 hosts", sets)
	}
	for mac, n := range sets {
		if n != 1 {
			t.Errorf("host %s set %d times, want once", mac, n)
		}
	}
}

// TestResumeAStepHalfDone: a coordinator stopped between recording a host
// as assigned and setting it (or after setting it, before recording the
// host record's version). The next driver finishes the step, setting the
// host only if it is not on the target yet.
func TestResumeAStepHalfDone(t *testing.T) {
	f := newFixture(t, "console=ttyS0", map[string]int{"lab": 2})
	s := spec("half")
	s.Canary, s.Batch = 0, "2"
	f.start(s)
	kv, err := f.js.KeyValue(context.Background(), proto.BucketRollouts)
	if err != nil {
		t.Fatal(err)
	}
	ent, err := kv.Get(context.Background(), "half")
	if err != nil {
		t.Fatal(err)
	}
	var r proto.Rollout
	if err := json.Unmarshal(ent.Value(), &r); err != nil {
		t.Fatal(err)
	}
	for i := range r.Hosts {
		r.Hosts[i].State, r.Hosts[i].Assigned, r.Hosts[i].Since = proto.RolloutHostAssigned, f.clock.Now(), f.clock.Now()
	}
	data, _ := json.Marshal(r)
	if _, err := kv.Update(context.Background(), "half", data, ent.Revision()); err != nil {
		t.Fatal(err)
	}
	// Host 1 was set before the stop.
	if _, err := f.svc.SetHost(context.Background(), proto.HostSetRequest{V: proto.Version, MAC: macOf("lab", 1), Image: ptr("web@2")}); err != nil {
		t.Fatal(err)
	}
	e := f.engine("next")
	r = f.until("both steps finished", func(r proto.Rollout) bool {
		return !stateOf(r, macOf("lab", 0)).HostVersion.IsZero() && !stateOf(r, macOf("lab", 1)).HostVersion.IsZero()
	}, "half", e)
	for i, want := range []int{1, 0} {
		mac := macOf("lab", i)
		if got := f.hostSets()[mac]; got != want || f.host(mac).Image != "web@2" {
			t.Errorf("host %s set %d times by the rollout (want %d), image %s", mac, got, want, f.host(mac).Image)
		}
		if st := stateOf(r, mac); !st.HostVersion.Equal(f.host(mac).Updated) {
			t.Errorf("host %s recorded version %s, host record's %s", mac, st.HostVersion, f.host(mac).Updated)
		}
	}
}
