package rollout

import (
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/fleetboot/fleetboot/coordinator/timeline"
	"github.com/fleetboot/fleetboot/proto"
)

// verdict is what a host's boot shows: a state (unchanged when "") and,
// for a failure, why; for done, what proved it.
type verdict struct {
	state     string
	diagnosis string
	proof     string
}

// judge decides where a host in flight (assigned, power-cycled, booting)
// stands, from its events after the assignment (evs, the host's MACs, any
// order), its last done callback (nil: none) and the target image:
//
//   - done: a done callback for the assigned host record or a later one;
//     or, for a target whose command line carries no {{callback}}, a boot
//     that fetched the target's kernel and every initrd whole (HTTP
//     artifact.end complete, or TFTP done), each recognised by its sha256,
//     not its name: iPXE and GRUB hand over to the kernel only after
//     loading them, so the boot reached the new revision's kernel. A target
//     that promises a callback must make it: a kernel that panics after
//     loading is no done host.
//   - failed: the last boot since the assignment is over (quiet for
//     settle) and the timeline diagnoses a problem in it; or the boot
//     timeout passed since the assignment.
//   - booting: any boot-chain event since the assignment.
func judge(h proto.RolloutHost, target proto.Image, evs []proto.Event, done *doneMark, timeout, settle time.Duration, now time.Time) verdict {
	if done != nil && !h.HostVersion.IsZero() && !done.HostVersion.Before(h.HostVersion) {
		return verdict{state: proto.RolloutHostDone, proof: proto.RolloutProofCallback}
	}
	var chain []proto.Event
	for _, ev := range evs {
		if ev.Kind != proto.EventPower && ev.Kind != proto.EventRollout {
			chain = append(chain, ev)
		}
	}
	reached := reachedKernel(target, chain)
	if reached && !expectsCallback(target) {
		return verdict{state: proto.RolloutHostDone, proof: proto.RolloutProofKernel}
	}
	v := verdict{}
	if len(chain) > 0 {
		v.state = proto.RolloutHostBooting
	}
	if len(chain) > 0 && !reached {
		boots := timeline.Build(chain, timeline.Options{Now: now, Settle: settle})
		if last := boots[len(boots)-1]; !last.InProgress {
			for _, d := range last.Diagnoses {
				if d.Level == timeline.LevelProblem {
					v.state, v.diagnosis = proto.RolloutHostFailed, d.Text // the last problem: where the boot stopped
				}
			}
			if v.state == proto.RolloutHostFailed {
				return v
			}
		}
	}
	if now.Sub(h.Assigned) > timeout {
		v.state = proto.RolloutHostFailed
		switch {
		case reached:
			v.diagnosis = fmt.Sprintf("the boot loaded the new revision's kernel but no done callback came within %s: the kernel or the system it starts did not come up", timeout)
		case len(chain) > 0:
			v.diagnosis = fmt.Sprintf("the boot did not reach the new revision's kernel within %s", timeout)
		default:
			v.diagnosis = fmt.Sprintf("no boot within %s", timeout)
		}
	}
	return v
}

// callbackRE finds the {{callback}} template variable in a command line.
var callbackRE = regexp.MustCompile(`\{\{\s*callback\s*\}\}`)

// expectsCallback: the image's command line hands its system the done
// callback, so that system is expected to call it.
func expectsCallback(im proto.Image) bool { return callbackRE.MatchString(im.Cmdline) }

// reachedKernel: the events hold a whole fetch of every kernel and initrd
// artifact of the image, by digest.
func reachedKernel(im proto.Image, evs []proto.Event) bool {
	need := map[string]int64{} // digest -> size
	for _, a := range im.Artifacts {
		if (a.Role == proto.RoleKernel || a.Role == proto.RoleInitrd) && a.SHA256 != "" {
			need[a.SHA256] = a.Size
		}
	}
	if len(need) == 0 {
		return false
	}
	hasKernel := false
	for _, a := range im.Artifacts {
		hasKernel = hasKernel || a.Role == proto.RoleKernel
	}
	if !hasKernel {
		return false
	}
	for _, ev := range evs {
		size, ok := need[ev.Detail["sha256"]]
		// Every byte sent: a HEAD, a Range or a TFTP size probe is no boot.
		if !ok || ev.Detail["bytes"] != strconv.FormatInt(size, 10) {
			continue
		}
		switch {
		case ev.Kind == proto.EventArtifactEnd && ev.Detail["status"] == "complete":
		case ev.Kind == proto.EventTFTPDone && ev.Detail["probe"] != "true":
		default:
			continue
		}
		sha := ev.Detail["sha256"]
		delete(need, sha)
	}
	return len(need) == 0
}
