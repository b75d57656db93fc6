package timeline

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// Rules of the shim → GRUB (Secure Boot) chain. The order of its requests,
// seen with Debian's shim-signed and grubnetx64 under OVMF
// (../shared/SECUREBOOT-FACTS.md): the boot file (shim) after a size probe;
// shim's revocations_*.efi and shim_certificate_0.efi (missing is fine);
// grubx64.efi from shim's directory; GRUB's x86_64-efi/*.lst (missing is
// fine); <prefix>/grub.cfg; then the kernel and the initrd, in that order.
const (
	RuleShimNoGRUB   = "shim-no-grub"   // shim sent, grubx64.efi never asked for
	RuleGRUBTimeWait = "grub-time-wait" // GRUB's HTTP connection hit the edge's TIME_WAIT from the previous boot
)

// loaderShimGRUB is the shim-grub loader kind as the edge's DHCP decision
// names it ("…: loader NAME (shim-grub): loaders/NAME/FILE").
const loaderShimGRUB = "shim-grub"

// grubTimeWait: Linux keeps a closed TCP connection in TIME_WAIT for 60 s
// (2 x MSL). GRUB 2.06 opens its first connection of a run from source port
// 21550 with an ISN near 100, below where the previous run's connection
// ended, so the edge's kernel does not let it reuse the 4-tuple: GRUB says
// "error: connection timeout" and the HTTP server never sees a request.
const grubTimeWait = 60 * time.Second

// Kinds of fetch a step shows.
const (
	fetchAsked  = iota // a request (TFTP RRQ, HTTP GET, a script or grub.cfg rendered)
	fetchSent          // the whole file went out
	fetchFailed        // the request was refused or the transfer broke
)

// fetch is one file a step shows the client asking for or getting, over
// TFTP or HTTP.
type fetch struct {
	step int       // index in Boot.Steps
	at   time.Time // the step's time
	kind int
	file string // as recorded
	base string // lower-case base name, to compare across transports and directories
	via  string // "tftp" or "http"
}

// fetches lists the files of a boot in step order. Size probes are not
// fetches: the firmware asks for the size, aborts, and asks again.
func fetches(b Boot) []fetch {
	var out []fetch
	for i, s := range b.Steps {
		ev := s.Event
		f := fetch{step: i, at: ev.Time, file: ev.Detail["file"], via: "tftp"}
		switch ev.Kind {
		case proto.EventTFTPStart:
			f.kind = fetchAsked
		case proto.EventTFTPDone:
			if ev.Detail["probe"] == "true" {
				continue
			}
			f.kind = fetchSent
		case proto.EventTFTPError:
			f.kind = fetchFailed
		case proto.EventArtifactStart:
			f.kind, f.via = fetchAsked, "http"
		case proto.EventArtifactEnd:
			f.kind, f.via = fetchFailed, "http"
			if code, _ := strconv.Atoi(ev.Detail["http_status"]); ev.Detail["status"] == "complete" && code < 400 {
				f.kind = fetchSent
			}
		case proto.EventScript, proto.EventScriptUnknown:
			// The rendered grub.cfg (or iPXE script): over TFTP its name is
			// in the TFTP events too; over HTTP this is the only trace.
			f.kind, f.file = fetchAsked, "script"
			if ev.Detail["format"] == "grub" {
				f.file = "grub.cfg"
			}
			if ev.Detail["via"] != "tftp" {
				f.via = "http"
			}
		default:
			continue
		}
		f.base = strings.ToLower(tftpFile(f.file))
		out = append(out, f)
	}
	return out
}

func isGRUBImage(base string) bool {
	return strings.HasPrefix(base, "grub") && strings.HasSuffix(base, ".efi")
}

func isGRUBConfig(base string) bool { return base == "grub.cfg" }

// isGRUBModule: files GRUB asks for on its own (module lists, modules)
// before and besides what grub.cfg names.
func isGRUBModule(base string) bool {
	return strings.HasSuffix(base, ".lst") || strings.HasSuffix(base, ".mod")
}

// shimName is the shim's file (lower-case base name) in this boot: the boot
// file of a DHCP answer for a shim-grub loader ("…(shim-grub):
// loaders/NAME/FILE"), a file sent whose name says shim, or the .efi sent
// just before something asked for GRUB's image. Empty when the boot shows no
// shim.
func shimName(b Boot) string {
	for _, s := range b.Steps {
		ev := s.Event
		if ev.Kind != proto.EventDHCPOffer && ev.Kind != proto.EventDHCPAck {
			continue
		}
		d := ev.Detail["decision"]
		if i := strings.LastIndex(d, "("+loaderShimGRUB+"): "); i >= 0 {
			return strings.ToLower(tftpFile(d[i+len(loaderShimGRUB)+4:]))
		}
	}
	// Otherwise the boot file sent before the first request for GRUB's
	// image (dnsmasq-style bootx64.efi), or a file named shim.
	last := ""
	for _, f := range fetches(b) {
		switch {
		case isGRUBImage(f.base):
			return last
		case f.kind == fetchSent && strings.HasPrefix(f.base, "shim") && strings.HasSuffix(f.base, ".efi"):
			return f.base
		case f.kind == fetchSent && strings.HasSuffix(f.base, ".efi"):
			last = f.base
		}
	}
	return ""
}

// untilNextDiscover is the index of the first DISCOVER after step i (the
// firmware trying again), len(steps) when none: what follows it is another
// attempt, not the client going on.
func untilNextDiscover(steps []Step, i int) int {
	for j := i + 1; j < len(steps); j++ {
		if steps[j].Event.Kind == proto.EventDHCPDiscover {
			return j
		}
	}
	return len(steps)
}

// shimNoGRUB: the shim was sent and nothing after it asked for GRUB. If
// shim asked for its own files (revocations, certificates) it ran and
// could not go on; if it asked for nothing the firmware never started it.
// A boot in progress may still ask.
func shimNoGRUB(b Boot) []Diagnosis {
	if b.InProgress {
		return nil
	}
	fs := fetches(b)
	shim := shimName(b)
	if shim == "" {
		return nil
	}
	sent := -1
	for i, f := range fs {
		switch {
		case f.kind == fetchSent && f.base == shim && sent < 0:
			sent = i
		case sent >= 0 && isGRUBImage(f.base):
			return nil
		}
	}
	if sent < 0 {
		return nil // not sent: tftp-failed or tftp-stalled tells why
	}
	var asked []string
	for _, f := range fs[sent+1:] {
		if f.kind == fetchAsked && f.step < untilNextDiscover(b.Steps, fs[sent].step) {
			asked = append(asked, f.base)
		}
	}
	text := fmt.Sprintf("shim (%s) was sent but never asked for GRUB (grubx64.efi): ", fs[sent].file)
	if len(asked) == 0 {
		text += "the firmware did not start it — under Secure Boot its db does not trust shim's signer (Microsoft UEFI CA 2011), or shim is not signed"
	} else {
		text += fmt.Sprintf("shim ran (it asked for %s) and stopped — it names GRUB grubx64.efi in its own directory; check shim's console for why", strings.Join(asked, ", "))
	}
	ev := b.Steps[fs[sent].step].Event
	return []Diagnosis{{Rule: RuleShimNoGRUB, Level: LevelProblem, At: ev.Time, Text: text}}
}

// grubTimeWaitAfter finds GRUB's HTTP pitfall in boot b given the boot
// before it: b's GRUB read grub.cfg and then fetched nothing over HTTP,
// while the previous boot of the same machine and address had an HTTP
// transfer end less than grubTimeWait before. The edge's kernel drops
// GRUB's SYN without the HTTP server seeing it, so this is inferred from
// timing; the edge has no event for it.
func grubTimeWaitAfter(prev, b Boot) []Diagnosis {
	if b.InProgress {
		return nil
	}
	if a, c := ackIP(prev), ackIP(b); a != "" && c != "" && a != c {
		return nil // another address, another 4-tuple
	}
	fs := fetches(b)
	cfg := -1
	for i, f := range fs {
		if isGRUBConfig(f.base) {
			cfg = i
		}
	}
	if cfg < 0 {
		return nil
	}
	for _, f := range fs[cfg+1:] {
		if !isGRUBModule(f.base) {
			return nil // GRUB went on (a TFTP kernel, or HTTP that connected)
		}
	}
	at := fs[cfg].at
	// The previous boot's GRUB connections: HTTP transfers after its
	// grub.cfg (an iPXE before it has ports of its own).
	var last time.Time
	grub := false
	for _, f := range fetches(prev) {
		grub = grub || isGRUBConfig(f.base)
		if grub && f.via == "http" && f.kind != fetchAsked && f.file != "script" && !isGRUBConfig(f.base) {
			last = f.at
		}
	}
	if last.IsZero() || at.Sub(last) >= grubTimeWait {
		return nil
	}
	return []Diagnosis{{Rule: RuleGRUBTimeWait, Level: LevelProblem, At: at, Text: fmt.Sprintf(
		"GRUB read grub.cfg and never reached the edge over HTTP, %d s after the previous boot's HTTP transfer from the same address ended: GRUB 2.06 reuses TCP source port 21550 with a tiny initial sequence number, which the edge's TIME_WAIT (60 s) for that connection rejects (\"error: connection timeout\" on the console); wait 60 s between boots, give the machine another address, or serve kernel and initrd over TFTP",
		int(at.Sub(last).Round(time.Second)/time.Second))}}
}

// ackIP is the address the boot's last DHCP ACK gave, "" when none shows.
func ackIP(b Boot) string {
	ip := ""
	for _, s := range b.Steps {
		if s.Event.Kind == proto.EventDHCPAck && s.Event.Detail["ip"] != "" {
			ip = s.Event.Detail["ip"]
		}
	}
	return ip
}

// withTimeWait adds the TIME_WAIT diagnosis, which needs the boot before,
// to ds. It replaces no-artifact: that GRUB asked for no kernel is what the
// pitfall explains.
func withTimeWait(ds []Diagnosis, prev, b Boot) []Diagnosis {
	tw := grubTimeWaitAfter(prev, b)
	if len(tw) == 0 {
		return ds
	}
	out := tw
	for _, d := range ds {
		if d.Rule != RuleNoArtifact {
			out = append(out, d)
		}
	}
	sortDiagnoses(out)
	return out
}
