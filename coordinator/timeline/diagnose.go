package timeline

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// Diagnosis levels.
const (
	LevelProblem = "problem" // the boot stopped or stalled here
	LevelInfo    = "info"    // worth knowing, not necessarily wrong
)

// Diagnosis rules, stable identifiers for scripts and the web panel.
const (
	RuleNoRequest       = "no-request"       // OFFERs sent, the client never REQUESTed
	RuleNoOffer         = "no-offer"         // DISCOVERs received, the edge did not answer
	RuleSTP             = "stp-portfast"     // DISCOVERs resume ~30 s after each link drop
	RuleTFTPStalled     = "tftp-stalled"     // a TFTP transfer started and never ended
	RuleTFTPFailed      = "tftp-failed"      // a TFTP transfer ended in an error
	RuleNoArtifact      = "no-artifact"      // a boot script was served, no artifact was requested
	RuleScriptRetry     = "script-retry"     // the script told iPXE to wait and ask again
	RuleArtifactAborted = "artifact-aborted" // an artifact transfer stopped midway
	RuleArtifactFailed  = "artifact-failed"  // an artifact request was answered with an error
	RuleNAK             = "dhcp-nak"
	RuleDecline         = "dhcp-decline"
	RuleIgnored         = "ignored" // the edge ignores this machine (unknown host, policy, DHCP off)
	RuleLocal           = "local-boot"
	RuleExit            = "script-exit"
	RuleIPv6Wait        = "ipv6-wait"       // iPXE waited for IPv6 router advertisements before asking for its script
	RuleGRUBNotServed   = "grub-not-served" // GRUB asked over TFTP for a file this site does not serve
	RuleKernelRefused   = "kernel-refused"  // GRUB downloaded the kernel and asked for nothing more: Secure Boot refused it
	RuleGRUBNoConfig    = "grub-no-config"  // shim fetched GRUB, GRUB never asked for grub.cfg
)

// Diagnosis is one recognised pattern in a boot.
type Diagnosis struct {
	Rule  string    `json:"rule"`
	Level string    `json:"level"`
	At    time.Time `json:"at"` // the event where it shows
	Text  string    `json:"text"`
}

// STP timing: a port running classic 802.1D spanning tree listens and learns
// for 2 x 15 s after every link change before it forwards, so the first
// DISCOVER the edge sees comes about 30 s after the link came back.
const (
	stpMin = 20 * time.Second
	stpMax = 45 * time.Second
	// stpFreshSecs: a DISCOVER whose secs field is below this comes from
	// a client that has just begun asking (RFC 2131 clients count seconds
	// there, iPXE its transmissions times 4: either way at most a few
	// seconds of asking), so no blocked port held back its earlier ones.
	stpFreshSecs = 10
)

// ipv6WaitMin: iPXE configures a NIC with DHCP and IPv6 autoconfiguration
// side by side and fetches nothing until both are done. On a segment with no
// router advertisements the IPv6 side gives up only after about 16 s (seen
// with Debian's iPXE under QEMU, once per iPXE instance in a chain). DHCP
// takes 1-4 s of that, so the edge sees iPXE's ACK and then, 12-15 s later,
// the script request with nothing in between. With adverts iPXE asks for its
// script within a second or two of the ACK, even in a software-emulated
// guest. 8 s is far from both: a slow guest does not reach it, and a wait that
// DHCP retransmissions partly overlapped still does.
const ipv6WaitMin = 8 * time.Second

// Diagnose returns the known patterns that show in one boot, in time order.
// Rules that need a step to be over (a transfer without its end) hold back
// while b.InProgress.
func Diagnose(b Boot) []Diagnosis {
	var ds []Diagnosis
	ds = append(ds, dhcpTail(b)...)
	ds = append(ds, stp(b)...)
	ds = append(ds, tftp(b)...)
	ds = append(ds, script(b)...)
	ds = append(ds, kernelRefused(b)...)
	ds = append(ds, grubNoConfig(b)...)
	ds = append(ds, artifacts(b)...)
	ds = append(ds, dhcpInfo(b)...)
	ds = append(ds, shimNoGRUB(b)...)
	// Last: a gap another rule already explains is not called an IPv6 wait.
	ds = append(ds, ipv6Wait(b, ds)...)
	sortDiagnoses(ds)
	return ds
}

// progress reports whether an event shows the client got past DISCOVER.
func progress(kind string) bool {
	switch kind {
	case proto.EventDHCPDiscover, proto.EventDHCPOffer, proto.EventDHCPRelease:
		return false
	}
	return true
}

func ignored(ev proto.Event) (string, bool) {
	return strings.CutPrefix(ev.Detail["decision"], "ignored: ")
}

// dhcpTail looks at what follows the boot's last sign of progress: only
// DISCOVERs and OFFERs there means the client asked and never took an offer.
func dhcpTail(b Boot) []Diagnosis {
	start := 0
	for i, s := range b.Steps {
		if progress(s.Event.Kind) {
			start = i + 1
		}
	}
	var discovers, offers, answerable int
	var first, lastDecision = time.Time{}, ""
	for _, s := range b.Steps[start:] {
		switch s.Event.Kind {
		case proto.EventDHCPDiscover:
			if discovers == 0 {
				first = s.Event.Time
			}
			discovers++
			if _, ok := ignored(s.Event); !ok {
				answerable++
				lastDecision = s.Event.Detail["decision"]
			}
		case proto.EventDHCPOffer:
			offers++
		}
	}
	// One DISCOVER with its OFFER a moment ago is a boot in full swing; a
	// repeated DISCOVER means the client did not get (or take) the offer.
	if discovers == 0 || (b.InProgress && discovers < 2) {
		return nil
	}
	switch {
	case offers > 0:
		return []Diagnosis{{Rule: RuleNoRequest, Level: LevelProblem, At: first, Text: fmt.Sprintf(
			"%d DISCOVER(s) answered with %d OFFER(s) but no REQUEST: the offers are not reaching the client (firewall, DHCP relay/helper address or VLAN between the edge and the machine)",
			discovers, offers)}}
	case answerable > 0:
		return []Diagnosis{{Rule: RuleNoOffer, Level: LevelProblem, At: first, Text: fmt.Sprintf(
			"%d DISCOVER(s) and the edge sent no OFFER (%s)", discovers, lastDecision)}}
	}
	return nil // all ignored: dhcpInfo says why
}

// stp finds DISCOVERs that come 20-45 s after the previous event: the link
// dropped (PXE ROM hands over to iPXE, iPXE to the kernel) and the switch
// port stayed blocked for spanning tree's listening and learning.
func stp(b Boot) []Diagnosis {
	var gaps []string
	handover := false
	var at time.Time
	note := func(t time.Time, d time.Duration, afterHandover bool) {
		if len(gaps) == 0 {
			at = t
		}
		gaps = append(gaps, d.Round(time.Second).String())
		handover = handover || afterHandover
	}
	acked := map[string]bool{} // addresses the edge gave this machine so far
	for i, s := range b.Steps {
		ev := s.Event
		if ev.Kind == proto.EventDHCPAck && ev.Detail["ip"] != "" {
			acked[ev.Detail["ip"]] = true
		}
		if ev.Kind != proto.EventDHCPDiscover {
			continue
		}
		if freshDiscover(ev) {
			// Late because the client started late (a kernel and its
			// initramfs booting for half a minute before their DHCP, as
			// a LiveOS's dracut under emulation), not held back.
			continue
		}
		if i == 0 {
			// A boot split off after the previous one loaded its kernel.
			if b.Since >= stpMin && b.Since <= stpMax {
				note(ev.Time, b.Since, true)
			}
			continue
		}
		prev := b.Steps[i-1].Event
		if prev.Kind == proto.EventDHCPDiscover && prev.Detail["xid"] != "" && prev.Detail["xid"] == ev.Detail["xid"] {
			continue // a retransmission on the client's own back-off schedule
		}
		if s.Delta >= stpMin && s.Delta <= stpMax {
			note(ev.Time, s.Delta, isHandover(prev) && fromMachine(prev, acked))
		}
	}
	// One late DISCOVER after a handover is the signature; without a
	// handover it takes two to rule out a client that was simply slow.
	if len(gaps) >= 2 || (len(gaps) == 1 && handover) {
		return []Diagnosis{{Rule: RuleSTP, Level: LevelProblem, At: at, Text: fmt.Sprintf(
			"DISCOVERs resumed about 30 s after link drops (%s): the switch port runs spanning tree without portfast; enable portfast / RSTP edge port on the machine's port",
			strings.Join(gaps, ", "))}}
	}
	return nil
}

// freshDiscover reports whether the DISCOVER says (the edge records its
// secs field; older edges did not) that its client had only just begun.
func freshDiscover(ev proto.Event) bool {
	secs, err := strconv.Atoi(ev.Detail["secs"])
	return err == nil && secs < stpFreshSecs
}

// isHandover: after these steps the machine starts a new program (iPXE,
// a kernel) that resets the NIC, so its link drops.
func isHandover(ev proto.Event) bool {
	switch ev.Kind {
	case proto.EventTFTPDone:
		return ev.Detail["probe"] != "true"
	case proto.EventArtifactEnd, proto.EventScript:
		return true
	}
	return false
}

// fromMachine: a script can be asked for by anyone for any MAC (an
// operator's curl, a monitoring probe); only one asked from an address the
// edge gave this machine is the machine's own handover. Where the edge
// gave it none (proxy DHCP: another server's lease) it cannot tell, and
// takes the script as the machine's.
func fromMachine(ev proto.Event, acked map[string]bool) bool {
	if ev.Kind != proto.EventScript || len(acked) == 0 || ev.Detail["ip"] == "" {
		return true
	}
	return acked[ev.Detail["ip"]]
}

func tftpFile(name string) string {
	return path.Base(path.Clean("/" + strings.ReplaceAll(name, `\`, "/")))
}

func tftp(b Boot) []Diagnosis {
	var ds []Diagnosis
	matched := make([]bool, len(b.Steps))
	grub := false // a GRUB runs: it was sent, or it read its config
	for i, s := range b.Steps {
		ev := s.Event
		grub = grub || isGRUB(ev)
		switch ev.Kind {
		case proto.EventTFTPError:
			if strings.HasPrefix(ev.Detail["error"], "write refused") {
				continue
			}
			if refused(ev) {
				if proto.HarmlessTFTPMiss(ev.Detail["file"]) {
					continue
				}
				if grub {
					ds = append(ds, Diagnosis{Rule: RuleGRUBNotServed, Level: LevelProblem, At: ev.Time, Text: fmt.Sprintf(
						"GRUB fetched %s, a file this site does not serve (%s)%s", ev.Detail["file"], ev.Detail["error"], grubFileHint(ev.Detail["file"]))})
					continue
				}
			}
			ds = append(ds, Diagnosis{Rule: RuleTFTPFailed, Level: LevelProblem, At: ev.Time, Text: fmt.Sprintf(
				"TFTP transfer of %s failed after %s bytes: %s%s", ev.Detail["file"], orZero(ev.Detail["bytes"]), ev.Detail["error"], tftpHint(ev.Detail["error"]))})
			continue
		case proto.EventTFTPStart:
		default:
			continue
		}
		file := tftpFile(ev.Detail["file"])
		ended := false
		for j := i + 1; j < len(b.Steps); j++ {
			e := b.Steps[j].Event
			if matched[j] || (e.Kind != proto.EventTFTPDone && e.Kind != proto.EventTFTPError) || tftpFile(e.Detail["file"]) != file {
				continue
			}
			matched[j], ended = true, true
			break
		}
		if !ended && !b.InProgress {
			ds = append(ds, Diagnosis{Rule: RuleTFTPStalled, Level: LevelProblem, At: ev.Time, Text: fmt.Sprintf(
				"TFTP transfer of %s started and never finished: a firewall or NAT dropping the data port, an MTU too small for the block size, or a blksize the path cannot carry",
				ev.Detail["file"])})
		}
	}
	return ds
}

// refused reports whether a TFTP error is the edge refusing the request
// (no such file, an artifact not served here) rather than a transfer that
// broke: the edge's TFTP server records a refusal with the file and the
// reason only, a transfer with the bytes it sent.
func refused(ev proto.Event) bool {
	_, sent := ev.Detail["bytes"]
	return !sent
}

// isGRUB: the event shows a GRUB running on the machine: its config was
// served, or a GRUB binary was sent (grubx64.efi, grubnetx64.efi,
// grubaa64.efi ...).
func isGRUB(ev proto.Event) bool {
	switch ev.Kind {
	case proto.EventScript:
		return ev.Detail["format"] == "grub"
	case proto.EventTFTPDone:
		f := tftpFile(ev.Detail["file"])
		return ev.Detail["probe"] != "true" && strings.HasPrefix(f, "grub") && strings.HasSuffix(f, ".efi")
	}
	return false
}

// grubFileHint says where a file GRUB asked for came from.
func grubFileHint(name string) string {
	p := strings.TrimPrefix(path.Clean("/"+name), "/")
	switch {
	case strings.HasSuffix(p, ".mod"):
		return ": GRUB tried to load a module (insmod); Debian's signed GRUB cannot load modules under Secure Boot, so a config must not need one (http.mod above all: kernel and initrd must come over TFTP)"
	case strings.HasPrefix(p, "artifacts/"):
		return ": the config names an image this site does not boot or a file that is not in the image (a config from before the host's image changed, or not rendered by this edge)"
	}
	return ": the config GRUB read was not rendered by this edge (an embedded or hand-written grub.cfg names files by path); this edge serves kernels and initrds as artifacts/<image>/<file>"
}

func tftpHint(err string) string {
	if strings.Contains(strings.ToLower(err), "timeout") || strings.Contains(strings.ToLower(err), "timed out") {
		return " (the client stopped acknowledging: firewall, MTU or blksize)"
	}
	return ""
}

func orZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}

// script looks at the last script the machine was served: what iPXE was
// told to do is where the boot goes next.
func script(b Boot) []Diagnosis {
	last := -1
	for i, s := range b.Steps {
		if s.Event.Kind == proto.EventScript {
			last = i
		}
	}
	if last < 0 {
		return nil
	}
	ev := b.Steps[last].Event
	reason := ev.Detail["reason"]
	switch ev.Detail["decision"] {
	case "boot", "discover":
		for _, s := range b.Steps[last+1:] {
			if isArtifactRequest(s.Event) {
				return nil
			}
		}
		if b.InProgress {
			return nil
		}
		if ev.Detail["format"] == "grub" {
			return []Diagnosis{{Rule: RuleNoArtifact, Level: LevelProblem, At: ev.Time, Text: fmt.Sprintf(
				"GRUB config served (image %s) but GRUB requested no kernel: it could not reach the edge (over TFTP: the edge's address in the config; over HTTP: a GRUB without the http module, such as Debian's signed one)",
				ev.Detail["image"])}}
		}
		return []Diagnosis{{Rule: RuleNoArtifact, Level: LevelProblem, At: ev.Time, Text: fmt.Sprintf(
			"boot script served (image %s) but no artifact was requested: iPXE could not fetch the kernel over HTTP (wrong edge URL, HTTP blocked on the path, or an iPXE without HTTP)",
			ev.Detail["image"])}}
	case "missing", "invalid":
		return []Diagnosis{{Rule: RuleScriptRetry, Level: LevelProblem, At: ev.Time, Text: "the script made iPXE wait and ask again: " + reason}}
	case "local":
		return []Diagnosis{{Rule: RuleLocal, Level: LevelInfo, At: ev.Time, Text: "host state is local: the script exits to the local disk"}}
	case "exit":
		return []Diagnosis{{Rule: RuleExit, Level: LevelInfo, At: ev.Time, Text: "the script exits to the next boot device: " + reason}}
	case "ignore":
		return []Diagnosis{{Rule: RuleIgnored, Level: LevelInfo, At: ev.Time, Text: "the script was refused: " + reason}}
	}
	return nil
}

// kernelRefused finds GRUB's answer to a kernel it may not boot: a config
// rendered here names the kernel first and then the initrds, and GRUB's
// initrd command runs only once a kernel is loaded. Under Secure Boot GRUB
// downloads the whole kernel, checks its signature through shim and, for a
// kernel no trusted key signed, prints "bad shim signature" and asks for
// nothing more. So: after the last GRUB config, one file of the image was
// downloaded in full, and no other was asked for.
func kernelRefused(b Boot) []Diagnosis {
	if b.InProgress {
		return nil
	}
	last := -1
	for i, s := range b.Steps {
		if s.Event.Kind == proto.EventScript && s.Event.Detail["format"] == "grub" {
			last = i
		}
	}
	if last < 0 {
		return nil
	}
	cfg := b.Steps[last].Event
	if d := cfg.Detail["decision"]; d != "boot" && d != "discover" {
		return nil
	}
	requested := map[string]bool{}
	var kernel string
	var at time.Time
	for _, s := range b.Steps[last+1:] {
		ev := s.Event
		if isArtifactRequest(ev) {
			requested[artifactFile(ev)] = true
		}
		if complete(ev) && kernel == "" {
			kernel, at = artifactFile(ev), ev.Time
		}
	}
	if kernel == "" || len(requested) != 1 {
		return nil
	}
	return []Diagnosis{{Rule: RuleKernelRefused, Level: LevelProblem, At: at, Text: fmt.Sprintf(
		"Secure Boot refused the kernel (it was downloaded, nothing followed): GRUB downloaded %s of image %s and asked for nothing more (GRUB says \"bad shim signature\": the kernel is not signed by a key shim trusts; boot the distribution's signed kernel)",
		kernel, cfg.Detail["image"])}}
}

// grubNoConfig finds a GRUB binary sent (shim fetches it from its own
// directory) with no request for grub.cfg after it: GRUB never ran its
// network config. Under Secure Boot that is shim refusing a GRUB no trusted
// key signed; otherwise a GRUB built for another platform or one whose
// embedded prefix is not on the network.
func grubNoConfig(b Boot) []Diagnosis {
	if b.InProgress {
		return nil
	}
	sent := -1
	for i, s := range b.Steps {
		ev := s.Event
		switch {
		case ev.Kind == proto.EventTFTPDone && isGRUB(ev):
			sent = i
		case sent >= 0 && asksGRUBConfig(ev):
			sent = -1 // this GRUB ran
		}
	}
	if sent < 0 {
		return nil
	}
	ev := b.Steps[sent].Event
	return []Diagnosis{{Rule: RuleGRUBNoConfig, Level: LevelProblem, At: ev.Time, Text: fmt.Sprintf(
		"shim fetched GRUB (%s) but GRUB never asked for grub.cfg: under Secure Boot shim refuses a GRUB not signed by a key it trusts (serve Debian's grubnetx64.efi.signed); otherwise the GRUB is for another architecture or a disk GRUB whose prefix is not on the network",
		ev.Detail["file"])}}
}

// asksGRUBConfig: GRUB asked for its configuration (grub.cfg or one of the
// per-MAC and per-IP names it tries first), or one was served to it.
func asksGRUBConfig(ev proto.Event) bool {
	switch ev.Kind {
	case proto.EventScript, proto.EventScriptUnknown:
		return ev.Detail["format"] == "grub"
	case proto.EventTFTPStart, proto.EventTFTPError:
		// The edge records a refused name as its tftp.error alone.
		return strings.HasPrefix(tftpFile(ev.Detail["file"]), "grub.cfg")
	}
	return false
}

// artifactFile is the image's file an artifact event names: the TFTP
// path artifacts/<image>/<file> or the HTTP event's file.
func artifactFile(ev proto.Event) string {
	if strings.HasPrefix(ev.Kind, "tftp.") {
		return tftpFile(ev.Detail["file"])
	}
	return ev.Detail["file"]
}

// complete: an artifact arrived whole, over TFTP or HTTP.
func complete(ev proto.Event) bool {
	switch ev.Kind {
	case proto.EventTFTPDone:
		return ev.Detail["probe"] != "true" && isArtifactRequest(proto.Event{Kind: proto.EventTFTPStart, Detail: ev.Detail})
	case proto.EventArtifactEnd:
		return ev.Detail["status"] == "complete"
	}
	return false
}

// isArtifactRequest: a request for an image's file, over HTTP or (GRUB
// without http) over TFTP as artifacts/<image>/<file>; a refused TFTP
// request is recorded as its tftp.error alone.
func isArtifactRequest(ev proto.Event) bool {
	switch ev.Kind {
	case proto.EventArtifactStart:
		return true
	case proto.EventTFTPStart, proto.EventTFTPError:
		return strings.HasPrefix(strings.TrimPrefix(path.Clean("/"+ev.Detail["file"]), "/"), "artifacts/")
	}
	return false
}

func artifacts(b Boot) []Diagnosis {
	var ds []Diagnosis
	matched := make([]bool, len(b.Steps))
	for i, s := range b.Steps {
		ev := s.Event
		if ev.Kind != proto.EventArtifactStart {
			continue
		}
		file := ev.Detail["file"]
		size, _ := strconv.ParseInt(ev.Detail["size"], 10, 64)
		end := -1
		for j := i + 1; j < len(b.Steps); j++ {
			e := b.Steps[j].Event
			if !matched[j] && e.Kind == proto.EventArtifactEnd && e.Detail["file"] == file {
				matched[j], end = true, j
				break
			}
		}
		if end < 0 {
			if !b.InProgress {
				ds = append(ds, Diagnosis{Rule: RuleArtifactAborted, Level: LevelProblem, At: ev.Time, Text: fmt.Sprintf(
					"transfer of %s started and never ended: the client or the path dropped the connection", file)})
			}
			continue
		}
		e := b.Steps[end].Event
		bytes, _ := strconv.ParseInt(e.Detail["bytes"], 10, 64)
		code, _ := strconv.Atoi(e.Detail["http_status"])
		status := e.Detail["status"]
		switch {
		case code >= 400:
			text := fmt.Sprintf("request for %s answered HTTP %d", file, code)
			if msg := e.Detail["error"]; msg != "" {
				text += ": " + msg
			}
			ds = append(ds, Diagnosis{Rule: RuleArtifactFailed, Level: LevelProblem, At: e.Time, Text: text})
		case status == "aborted" || (status == "" && size > 0 && bytes < size):
			of := ""
			if size > 0 {
				of = fmt.Sprintf(" of %d", size)
			}
			ds = append(ds, Diagnosis{Rule: RuleArtifactAborted, Level: LevelProblem, At: e.Time, Text: fmt.Sprintf(
				"transfer of %s stopped midway after %d%s bytes: the client gave up or the connection broke (link, MTU, a proxy, or a stalled store fetch)",
				file, bytes, of)})
		}
	}
	return ds
}

// ipv6Wait finds iPXE's DHCP reply followed, after ipv6WaitMin or more, by
// its script request with nothing else from that MAC in between: iPXE sat
// waiting for router advertisements (see ipv6WaitMin).
func ipv6Wait(b Boot, others []Diagnosis) []Diagnosis {
	var ds []Diagnosis
	for i, s := range b.Steps {
		reply := s.Event
		if reply.Kind != proto.EventDHCPAck && reply.Kind != proto.EventDHCPOffer {
			continue // an OFFER counts in proxy mode, where the site's server ACKs
		}
		j := nextOfMAC(b.Steps, i)
		if j < 0 {
			continue
		}
		fetch := b.Steps[j].Event
		if (fetch.Kind != proto.EventScript && fetch.Kind != proto.EventScriptUnknown) || !isIPXE(reply, fetch) {
			continue
		}
		wait := fetch.Time.Sub(reply.Time)
		if wait < ipv6WaitMin || diagnosedBetween(others, reply.Time, fetch.Time) {
			continue
		}
		// Info, not a problem: the boot goes on, only later.
		ds = append(ds, Diagnosis{Rule: RuleIPv6Wait, Level: LevelInfo, At: fetch.Time, Text: fmt.Sprintf(
			"iPXE waited %d s for IPv6: no router advertisements on this segment (the edge sends them with --ipv6-ra; is it off, or is the edge not on this segment?)",
			int(wait.Round(time.Second)/time.Second))})
	}
	return ds
}

// nextOfMAC is the index of the first step after i from the same MAC, -1
// when there is none.
func nextOfMAC(steps []Step, i int) int {
	for j := i + 1; j < len(steps); j++ {
		if steps[j].Event.MAC == steps[i].Event.MAC {
			return j
		}
	}
	return -1
}

// isIPXE: the edge's boot-file decision for the reply was iPXE's row
// (edge/dhcp BootFor, "ipxe: script over http"), or the script was rendered
// for iPXE. GRUB asks for grub.cfg on the Secure Boot path and has no such
// wait.
func isIPXE(reply, script proto.Event) bool {
	switch script.Detail["format"] {
	case "grub":
		return false
	case "ipxe":
		return true
	}
	return strings.Contains(reply.Detail["decision"], "ipxe:")
}

// diagnosedBetween reports whether another diagnosis shows strictly between
// from and to.
func diagnosedBetween(ds []Diagnosis, from, to time.Time) bool {
	for _, d := range ds {
		if d.At.After(from) && d.At.Before(to) {
			return true
		}
	}
	return false
}

// dhcpInfo reports NAKs, DECLINEs and messages the edge ignored.
func dhcpInfo(b Boot) []Diagnosis {
	var ds []Diagnosis
	seen := map[string]bool{}
	for _, s := range b.Steps {
		ev := s.Event
		switch ev.Kind {
		case proto.EventDHCPNak:
			ds = append(ds, Diagnosis{Rule: RuleNAK, Level: LevelInfo, At: ev.Time, Text: fmt.Sprintf(
				"DHCP NAK: %s (the client asked for an address this edge will not give it: a stale lease, a moved machine or another DHCP server)", ev.Detail["decision"])})
		case proto.EventDHCPDecline:
			ds = append(ds, Diagnosis{Rule: RuleDecline, Level: LevelInfo, At: ev.Time, Text: fmt.Sprintf(
				"DHCP DECLINE of %s: the client found the address already in use (address conflict)", orDash(ev.Detail["ip"]))})
		case proto.EventDHCPDiscover, proto.EventDHCPRequest:
			reason, ok := ignored(ev)
			if !ok || seen[reason] {
				continue
			}
			seen[reason] = true
			level := LevelInfo
			text := "the edge ignores this machine: " + reason
			if strings.Contains(reason, "unknown MAC") {
				text += " (add it with `fleetboot host set`)"
			} else if !strings.Contains(reason, "dhcp is off") {
				level = LevelProblem // pool exhausted, no matching network
			}
			ds = append(ds, Diagnosis{Rule: RuleIgnored, Level: level, At: ev.Time, Text: text})
		}
	}
	return ds
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
