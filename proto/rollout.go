package proto

import "time"

// Rollouts. A rollout moves the hosts a selector picks to one image
// revision in stages: canaries first, then batches, site by site, power-
// cycling each through its BMC and waiting for it to prove it booted the
// new revision. Its whole state is one KV value under its name in
// BucketRollouts, written by compare-and-set, so a coordinator that takes
// over after a restart continues from the last step recorded; the driver
// lease (RolloutLease) keeps two coordinators from driving one rollout.

// BucketRollouts holds key: rollout name -> Rollout.
const BucketRollouts = "rollouts"

// Rollout API endpoints (under APIPrefix).
const (
	APIRolloutStart    = "rollout.start"    // RolloutSpec -> Rollout
	APIRolloutList     = "rollout.list"     // ListRequest -> []Rollout
	APIRolloutGet      = "rollout.get"      // NameRequest -> Rollout
	APIRolloutPause    = "rollout.pause"    // NameRequest -> Rollout
	APIRolloutResume   = "rollout.resume"   // NameRequest -> Rollout
	APIRolloutAbort    = "rollout.abort"    // NameRequest -> Rollout
	APIRolloutRollback = "rollout.rollback" // NameRequest -> Rollout
)

// States of a rollout.
const (
	RolloutRunning     = "running"      // the driver is moving hosts
	RolloutPaused      = "paused"       // by an operator; hosts already booting are still watched
	RolloutHalted      = "halted"       // by itself: failures passed MaxFailed; untouched hosts stay untouched
	RolloutAborted     = "aborted"      // by an operator; nothing more is started
	RolloutDone        = "done"         // every host done
	RolloutRollingBack = "rolling-back" // failed and done hosts going back to their previous image
	RolloutRolledBack  = "rolled-back"
)

// States of one host in a rollout, in the order a host goes through them.
const (
	RolloutHostWaiting     = "waiting"      // not touched yet
	RolloutHostAssigned    = "assigned"     // its image set to the target revision
	RolloutHostPowerCycled = "power-cycled" // its BMC told to cycle it (with --power cycle)
	RolloutHostBooting     = "booting"      // a boot of it was seen after the assignment
	RolloutHostDone        = "done"         // the done callback, or its boot reached the new revision's kernel
	RolloutHostFailed      = "failed"       // boot timeout, or a diagnosed failure; Diagnosis says which
	RolloutHostRolledBack  = "rolled-back"  // back on Previous
)

// EventRollout is a rollout's step on a host, recorded in the host's
// timeline by the coordinator driving it: detail rollout, action
// ("assigned", "done", "failed", "rolled-back"), image, and proof or
// diagnosis. The coordinator publishes it as edge RolloutEventEdge, a name
// no edge can have (an edge name starts with a letter or digit), so no
// edge's permissions let it forge one.
const EventRollout = "rollout"

// RolloutEventEdge is the edge token of EventRollout subjects.
const RolloutEventEdge = "_coordinator"

// Power actions a rollout can take on each host it assigns.
const (
	RolloutPowerNone  = ""      // the operator (or the machine's own reboot) starts the boot
	RolloutPowerCycle = "cycle" // power cycle through the host's BMC, next boot PXE
)

// RolloutSpec is what `rollout start` asks for.
type RolloutSpec struct {
	V           int      `json:"v"`
	Name        string   `json:"name"`
	Selector    string   `json:"selector"`        // shared/selector syntax over labels and facts
	Image       string   `json:"image"`           // target: NAME@N (a bare NAME is pinned to its current revision at start)
	Sites       []string `json:"sites,omitempty"` // only these sites, in this order; empty = every site, by name
	Canary      int      `json:"canary"`          // hosts done first, one site, before any batch
	Batch       string   `json:"batch"`           // hosts per batch: "10%" of the selection or a count "5"
	MaxFailed   int      `json:"max_failed"`      // halt when failed hosts exceed this
	BootTimeout int      `json:"boot_timeout_s"`  // seconds from assignment (or power cycle) to done
	Power       string   `json:"power,omitempty"` // RolloutPowerNone or RolloutPowerCycle
}

// RolloutHost is one host's place in a rollout.
type RolloutHost struct {
	MAC       string    `json:"mac"`
	Site      string    `json:"site"`
	Batch     int       `json:"batch"`    // 0 = canary, then 1, 2, …
	Previous  string    `json:"previous"` // image ref before the rollout (what rollback restores)
	State     string    `json:"state"`
	Since     time.Time `json:"since"`               // entered State
	Diagnosis string    `json:"diagnosis,omitempty"` // why failed: the timeline's diagnosis or "no boot within 15m"
	// Proof says what proved a done host booted: RolloutProofCallback or
	// RolloutProofKernel.
	Proof string `json:"proof,omitempty"`
	// Assigned is when the driver assigned the target (the boot timeout
	// runs from it); HostVersion is the host record's Updated after the
	// assignment: a done callback counts only for that version or a later
	// one. EventSeq is the EVENTS stream's last sequence just before the
	// assignment: only events after it can prove or fail this boot.
	Assigned    time.Time `json:"assigned,omitzero"`
	HostVersion time.Time `json:"host_version,omitzero"`
	EventSeq    uint64    `json:"event_seq,omitempty"`
	// Undo marks a host rollback moves back to Previous.
	Undo bool `json:"undo,omitempty"`
}

// What proved a host done.
const (
	RolloutProofCallback = "callback" // the host's done callback (host.done) after the assignment
	RolloutProofKernel   = "kernel"   // its boot fetched the target revision's kernel and initrds whole
	RolloutProofAlready  = "already"  // it was on the target revision when the rollout started
)

// RolloutActive tells the states in which a rollout still holds its hosts:
// no other rollout may take them.
func RolloutActive(state string) bool {
	return state == RolloutRunning || state == RolloutPaused || state == RolloutRollingBack
}

// Rollout is a rollout's whole state, as stored and as shown.
type Rollout struct {
	RolloutSpec
	State   string        `json:"state"`
	Reason  string        `json:"reason,omitempty"` // why halted, paused or aborted (and by whom)
	Hosts   []RolloutHost `json:"hosts"`
	Created time.Time     `json:"created"`
	Updated time.Time     `json:"updated"`
	Driver  string        `json:"driver,omitempty"` // the coordinator driving it now
}
