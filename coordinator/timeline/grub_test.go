package timeline

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

// sb is one event of the shim → GRUB chain. File names there have
// underscores (revocations_sku.efi), which step's detail syntax turns into
// spaces, so these are built as events directly.
type sb struct {
	at   float64
	kind string
	d    map[string]string
}

func sbEvents(parts ...[]sb) []proto.Event {
	var out []proto.Event
	for _, p := range parts {
		for _, s := range p {
			out = append(out, proto.Event{V: 1, ID: fmt.Sprint("sb", len(out)), Time: t0.Add(time.Duration(s.at * float64(time.Second))),
				Site: "lab", Edge: "edge1", MAC: mac, Kind: s.kind, Detail: s.d})
		}
	}
	return out
}

// fromSteps turns step lists (DHCP, iPXE) into sb events.
func fromSteps(steps ...step) []sb {
	var out []sb
	for _, ev := range events(steps...) {
		out = append(out, sb{ev.Time.Sub(t0).Seconds(), ev.Kind, ev.Detail})
	}
	return out
}

// uefiDora is OVMF's DHCP exchange; loader true: the edge answered with a
// shim-grub loader's shim (edge/dhcp BootWith's decision), false: a plain
// bootx64.efi as dnsmasq serves it (SECUREBOOT-FACTS.md).
func uefiDora(at float64, xid, ip string, loader bool) []sb {
	d := "known host; uefi x64: loader debian (shim-grub): loaders/debian/shimx64.efi"
	if !loader {
		d = "known host; uefi x64: bootx64.efi"
	}
	ev := func(t float64, kind string, withIP bool) sb {
		m := map[string]string{"xid": xid, "arch": "7", "decision": d}
		if withIP {
			m["ip"] = ip
		}
		return sb{t, kind, m}
	}
	return []sb{ev(at, proto.EventDHCPDiscover, false), ev(at+0.01, proto.EventDHCPOffer, true),
		ev(at+1, proto.EventDHCPRequest, true), ev(at+1.01, proto.EventDHCPAck, true)}
}

func sbSent(at float64, file string, bytes int) []sb {
	return []sb{
		{at, proto.EventTFTPStart, map[string]string{"file": file}},
		{at + 0.05, proto.EventTFTPDone, map[string]string{"file": file, "bytes": fmt.Sprint(bytes), "duration_ms": "50"}},
	}
}

// sbProbed is OVMF's boot file download: a tsize probe it aborts, then
// the whole file.
func sbProbed(at float64, file string, bytes int) []sb {
	return append([]sb{
		{at, proto.EventTFTPStart, map[string]string{"file": file}},
		{at + 0.02, proto.EventTFTPDone, map[string]string{"file": file, "bytes": "0", "probe": "true"}},
	}, sbSent(at+0.05, file, bytes)...)
}

// sbMissing is a request the edge refused as it records it (no bytes).
func sbMissing(at float64, file string) []sb {
	return []sb{
		{at, proto.EventTFTPStart, map[string]string{"file": file}},
		{at + 0.01, proto.EventTFTPError, map[string]string{"file": file, "error": "tftp: open " + file + ": file does not exist"}},
	}
}

// shimStage is the chain up to GRUB's image, in the order of
// SECUREBOOT-FACTS.md: shim (probe, then whole), shim's three optional
// files, grubx64.efi from shim's directory.
func shimStage(at float64, dir string) []sb {
	return slices.Concat(
		sbProbed(at, dir+"bootx64.efi", 955584),
		sbMissing(at+0.3, dir+"revocations_sku.efi"),
		sbMissing(at+0.35, dir+"revocations_sbat.efi"),
		sbMissing(at+0.4, dir+"shim_certificate_0.efi"),
		sbSent(at+0.5, dir+"grubx64.efi", 2646528),
	)
}

// grubStage: GRUB's module lists (missing), then its grub.cfg rendered
// over TFTP.
func grubStage(at float64) []sb {
	return slices.Concat(
		sbMissing(at, "/grub/x86_64-efi/command.lst"),
		sbMissing(at+0.05, "/grub/x86_64-efi/fs.lst"),
		sbMissing(at+0.1, "/grub/x86_64-efi/crypto.lst"),
		sbMissing(at+0.15, "/grub/x86_64-efi/terminal.lst"),
		[]sb{
			{at + 0.2, proto.EventTFTPStart, map[string]string{"file": "/grub/grub.cfg"}},
			{at + 0.21, proto.EventScript, map[string]string{"decision": "boot", "image": "debian12", "format": "grub", "via": "tftp"}},
			{at + 0.22, proto.EventTFTPDone, map[string]string{"file": "grub/grub.cfg", "bytes": "310", "duration_ms": "10"}},
		},
	)
}

// sbChain is a whole Secure Boot boot to GRUB's config, from power-on.
func sbChain(loader bool) []sb {
	dir := ""
	if loader {
		dir = "loaders/debian/"
	}
	return slices.Concat(uefiDora(0, "0x01", "10.0.0.20", loader), shimStage(7.5, dir), grubStage(9.5))
}

func tftpKernel(at float64) []sb {
	return sbSent(at, "/artifacts/debian12/vmlinuz", 9200000)
}

func tftpInitrd(at float64) []sb {
	return sbSent(at, "/artifacts/debian12/initrd.gz", 2100000)
}

func httpFile(at float64, file string, bytes int) []sb {
	n := fmt.Sprint(bytes)
	return []sb{
		{at, proto.EventArtifactStart, map[string]string{"file": file, "size": n, "cache": "hit"}},
		{at + 1, proto.EventArtifactEnd, map[string]string{"file": file, "status": "complete", "bytes": n, "http_status": "200"}},
	}
}

func callback(at float64) []sb {
	return []sb{{at, proto.EventCallbackDone, map[string]string{"forwarded": "true"}}}
}

// grubHTTPBoot is a GRUB boot (Secure Boot off) that read grub.cfg over
// TFTP and fetched kernel and initrd over HTTP.
func grubHTTPBoot(at float64, xid, ip string) []sb {
	return slices.Concat(uefiDora(at, xid, ip, true), shimStage(at+7.5, "loaders/debian/"), grubStage(at+9.5),
		httpFile(at+10, "vmlinuz", 9200000), httpFile(at+11.5, "initrd.gz", 2100000))
}

// sbRules: the Secure Boot chain's rules (kernel-refused and grub-no-config
// are in diagnose.go), tested here over the request order of
// SECUREBOOT-FACTS.md.
var sbRules = []string{RuleKernelRefused, RuleShimNoGRUB, RuleGRUBNoConfig, RuleGRUBTimeWait}

// sbDiag is diag restricted to the rules of this file, and no-artifact
// (which the TIME_WAIT rule replaces) when noArtifact is set: on main,
// no-artifact does not yet count kernels fetched over TFTP.
func sbDiag(boots []Boot, noArtifact bool) [][]string {
	var out [][]string
	for _, b := range boots {
		row := []string{}
		for _, d := range b.Diagnoses {
			if slices.Contains(sbRules, d.Rule) || (noArtifact && d.Rule == RuleNoArtifact) {
				row = append(row, fmt.Sprintf("%s@%g", d.Rule, d.At.Sub(t0).Seconds()))
			}
		}
		out = append(out, row)
	}
	return out
}

func TestShimGRUBDiagnoses(t *testing.T) {
	tests := []struct {
		name string
		evs  []proto.Event
		now  float64 // seconds after t0; 0: every boot is over
		want [][]string
	}{
		// Healthy chains get none of these lines.
		{name: "Secure Boot chain: shim, GRUB, kernel and initrd over TFTP",
			evs: sbEvents(sbChain(true), tftpKernel(9.8), tftpInitrd(15.1)), want: [][]string{{}}},
		{name: "Secure Boot chain with dnsmasq's names (bootx64.efi at the root)",
			evs: sbEvents(sbChain(false), tftpKernel(9.8), tftpInitrd(15.1)), want: [][]string{{}}},
		{name: "Secure Boot chain, the installer calls back",
			evs: sbEvents(sbChain(true), tftpKernel(9.8), tftpInitrd(15.1), callback(200)), want: [][]string{{}}},
		{name: "GRUB with kernel and initrd over HTTP",
			evs: sbEvents(grubHTTPBoot(0, "0x01", "10.0.0.20")), want: [][]string{{}}},
		{name: "iPXE boot", evs: events(healthy()...), want: [][]string{{}}},
		{name: "iPXE sent, nothing after: no shim line",
			evs: events(cat(dora(0, "0x01"), tftpOK(2))...), want: [][]string{{}}},
		{name: "iPXE loads a kernel and stops: not GRUB, no refused-kernel line",
			evs: events(cat(dora(0, "0x01"), tftpOK(2), dora(4, "0x02"), scriptBoot(5.5), artifactsOK(6)[:2])...), want: [][]string{{}}},
		{name: "bootx64.efi sent and nothing after: no sign it is a shim",
			evs: sbEvents(uefiDora(0, "0x01", "10.0.0.20", false), sbProbed(7.5, "bootx64.efi", 955584)), want: [][]string{{}}},

		// 1. Secure Boot refused the kernel.
		{name: "unsigned kernel over TFTP, nothing after",
			evs: sbEvents(sbChain(true), tftpKernel(9.8)), want: [][]string{{RuleKernelRefused + "@9.85"}}},
		{name: "unsigned kernel, dnsmasq's names",
			evs: sbEvents(sbChain(false), tftpKernel(9.8)), want: [][]string{{RuleKernelRefused + "@9.85"}}},
		{name: "unsigned kernel, then the firmware tries again from DHCP",
			evs:  sbEvents(sbChain(true), tftpKernel(9.8), uefiDora(40, "0x02", "10.0.0.20", true)),
			want: [][]string{{RuleKernelRefused + "@9.85"}, {}}},
		{name: "kernel over HTTP, nothing after",
			evs: sbEvents(sbChain(true), httpFile(10, "vmlinuz", 9200000)), want: [][]string{{RuleKernelRefused + "@11"}}},
		{name: "kernel just downloaded: in progress",
			evs: sbEvents(sbChain(true), tftpKernel(9.8)), now: 15, want: [][]string{{}}},
		{name: "kernel, then the initrd asked and refused: not a refused kernel",
			evs:  sbEvents(sbChain(true), tftpKernel(9.8), sbMissing(15.1, "/artifacts/debian12/initrd.gz")),
			want: [][]string{{}}},
		{name: "kernel transfer broke: not a refused kernel",
			evs: sbEvents(sbChain(true), []sb{
				{9.8, proto.EventTFTPStart, map[string]string{"file": "/artifacts/debian12/vmlinuz"}},
				{12, proto.EventTFTPError, map[string]string{"file": "/artifacts/debian12/vmlinuz", "bytes": "4000000", "error": "timeout"}},
			}), want: [][]string{{}}},

		// 2. shim sent, GRUB never asked for (or GRUB never asked for grub.cfg).
		{name: "shim sent, nothing after: the firmware did not start it",
			evs:  sbEvents(uefiDora(0, "0x01", "10.0.0.20", true), sbProbed(7.5, "loaders/debian/shimx64.efi", 955584)),
			want: [][]string{{RuleShimNoGRUB + "@7.6"}}},
		{name: "shim ran (asked for its revocations) and never asked for grubx64.efi",
			evs: sbEvents(uefiDora(0, "0x01", "10.0.0.20", true), sbProbed(7.5, "loaders/debian/shimx64.efi", 955584),
				sbMissing(7.8, "loaders/debian/revocations_sku.efi")),
			want: [][]string{{RuleShimNoGRUB + "@7.6"}}},
		{name: "shim sent a moment ago: in progress",
			evs: sbEvents(uefiDora(0, "0x01", "10.0.0.20", true), sbProbed(7.5, "loaders/debian/shimx64.efi", 955584)),
			now: 9, want: [][]string{{}}},
		{name: "GRUB sent, nothing after",
			evs:  sbEvents(uefiDora(0, "0x01", "10.0.0.20", true), shimStage(7.5, "loaders/debian/")),
			want: [][]string{{RuleGRUBNoConfig + "@8.05"}}},
		{name: "GRUB sent with dnsmasq's names, nothing after",
			evs:  sbEvents(uefiDora(0, "0x01", "10.0.0.20", false), shimStage(7.5, "")),
			want: [][]string{{RuleGRUBNoConfig + "@8.05"}}},
		{name: "GRUB ran (asked for its .lst files) and never for grub.cfg",
			evs:  sbEvents(uefiDora(0, "0x01", "10.0.0.20", true), shimStage(7.5, "loaders/debian/"), grubStage(9.5)[:8]),
			want: [][]string{{RuleGRUBNoConfig + "@8.05"}}},
		{name: "GRUB asked for grub.cfg and it was refused: it did ask",
			evs: sbEvents(uefiDora(0, "0x01", "10.0.0.20", false), shimStage(7.5, ""), grubStage(9.5)[:8],
				sbMissing(9.7, "/grub/grub.cfg")),
			want: [][]string{{}}},
		{name: "GRUB sent a moment ago: in progress",
			evs: sbEvents(uefiDora(0, "0x01", "10.0.0.20", true), shimStage(7.5, "loaders/debian/")), now: 9,
			want: [][]string{{}}},

		// 3. GRUB's TIME_WAIT pitfall.
		{name: "second GRUB boot 20 s after the first one's HTTP transfers: TIME_WAIT",
			evs: sbEvents(grubHTTPBoot(0, "0x01", "10.0.0.20"), uefiDora(32.5, "0x02", "10.0.0.20", true),
				shimStage(40, "loaders/debian/"), grubStage(42)),
			want: [][]string{{}, {RuleGRUBTimeWait + "@42.22"}}},
		{name: "second GRUB boot 90 s later: not TIME_WAIT",
			evs: sbEvents(grubHTTPBoot(0, "0x01", "10.0.0.20"), uefiDora(100, "0x02", "10.0.0.20", true),
				shimStage(107.5, "loaders/debian/"), grubStage(109.5)),
			want: [][]string{{}, {RuleNoArtifact + "@109.71"}}},
		{name: "second GRUB boot from another address: not TIME_WAIT",
			evs: sbEvents(grubHTTPBoot(0, "0x01", "10.0.0.20"), uefiDora(32.5, "0x02", "10.0.0.21", true),
				shimStage(40, "loaders/debian/"), grubStage(42)),
			want: [][]string{{}, {RuleNoArtifact + "@42.21"}}},
		{name: "second GRUB boot that got its kernel: not TIME_WAIT",
			evs: sbEvents(grubHTTPBoot(0, "0x01", "10.0.0.20"), uefiDora(32.5, "0x02", "10.0.0.20", true),
				shimStage(40, "loaders/debian/"), grubStage(42), httpFile(42.5, "vmlinuz", 9200000), httpFile(44, "initrd.gz", 2100000)),
			want: [][]string{{}, {}}},
		{name: "previous boot was iPXE over HTTP: not GRUB's port, not TIME_WAIT",
			evs: slices.Concat(events(healthy()[:len(healthy())-1]...), sbEvents(uefiDora(30, "0x03", "10.0.0.20", true),
				shimStage(37.5, "loaders/debian/"), grubStage(39.5))),
			want: [][]string{{}, {RuleNoArtifact + "@39.71"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{}
			if tt.now > 0 {
				opts.Now = t0.Add(time.Duration(tt.now * float64(time.Second)))
			}
			got := sbDiag(Build(tt.evs, opts), strings.Contains(tt.name, "TIME_WAIT"))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("diagnoses (-want +got):\n%s", diff)
			}
		})
	}
}

// The lines say what the item 8 asks for, with the files.
func TestShimGRUBTexts(t *testing.T) {
	tests := []struct {
		name string
		evs  []proto.Event
		rule string
		want []string
	}{
		{"refused kernel", sbEvents(sbChain(true), tftpKernel(9.8)), RuleKernelRefused,
			[]string{"Secure Boot refused the kernel (it was downloaded, nothing followed)", "vmlinuz of image debian12", "bad shim signature"}},
		{"shim not started", sbEvents(uefiDora(0, "0x01", "10.0.0.20", true), sbProbed(7.5, "loaders/debian/shimx64.efi", 955584)), RuleShimNoGRUB,
			[]string{"shim (loaders/debian/shimx64.efi) was sent but never asked for GRUB", "the firmware did not start it"}},
		{"shim ran", sbEvents(uefiDora(0, "0x01", "10.0.0.20", true), sbProbed(7.5, "loaders/debian/shimx64.efi", 955584),
			sbMissing(7.8, "loaders/debian/revocations_sku.efi")), RuleShimNoGRUB,
			[]string{"shim ran (it asked for revocations_sku.efi)"}},
		{"GRUB silent", sbEvents(uefiDora(0, "0x01", "10.0.0.20", true), shimStage(7.5, "loaders/debian/")), RuleGRUBNoConfig,
			[]string{"shim fetched GRUB (loaders/debian/grubx64.efi) but GRUB never asked for grub.cfg"}},
		{"GRUB ran", sbEvents(uefiDora(0, "0x01", "10.0.0.20", false), shimStage(7.5, ""), grubStage(9.5)[:2]), RuleGRUBNoConfig,
			[]string{"shim fetched GRUB (grubx64.efi) but GRUB never asked for grub.cfg"}},
		{"TIME_WAIT", sbEvents(grubHTTPBoot(0, "0x01", "10.0.0.20"), uefiDora(32.5, "0x02", "10.0.0.20", true),
			shimStage(40, "loaders/debian/"), grubStage(42)), RuleGRUBTimeWait,
			[]string{"30 s after the previous boot's HTTP transfer", "source port 21550", "TIME_WAIT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var text string
			for _, b := range Build(tt.evs, Options{}) {
				for _, d := range b.Diagnoses {
					if d.Rule == tt.rule {
						text = d.Text
					}
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("%s text %q lacks %q", tt.rule, text, w)
				}
			}
		})
	}
}

// A Secure Boot chain that worked shows no problem at all (the e2e's
// checkTimeline asks the same): shim's and GRUB's expected misses are not
// failures, and nothing here calls a healthy chain stalled.
func TestSecureBootChainNoProblems(t *testing.T) {
	// Two Secure Boot boots in a row are two boots: the kernel came over
	// TFTP, and the next DISCOVER is a reboot.
	if boots := Build(sbEvents(sbChain(true), tftpKernel(9.8), tftpInitrd(15.1), uefiDora(80, "0x02", "10.0.0.20", true)), Options{}); len(boots) != 2 {
		t.Errorf("kernel and initrd over TFTP, then a DISCOVER: %d boots, want 2", len(boots))
	}
	tests := map[string][]proto.Event{
		"loader names":    sbEvents(sbChain(true), tftpKernel(9.8), tftpInitrd(15.1)),
		"dnsmasq names":   sbEvents(sbChain(false), tftpKernel(9.8), tftpInitrd(15.1)),
		"callback":        sbEvents(sbChain(true), tftpKernel(9.8), tftpInitrd(15.1), callback(200)),
		"GRUB over HTTP":  sbEvents(grubHTTPBoot(0, "0x01", "10.0.0.20")),
		"two GRUB boots":  sbEvents(grubHTTPBoot(0, "0x01", "10.0.0.20"), grubHTTPBoot(32.5, "0x02", "10.0.0.20")[4:]),
		"SB boot then SB": sbEvents(sbChain(true), tftpKernel(9.8), tftpInitrd(15.1), uefiDora(80, "0x02", "10.0.0.20", true), shimStage(87.5, "loaders/debian/"), grubStage(89.5), tftpKernel(89.8), tftpInitrd(95.1)),
	}
	for name, evs := range tests {
		t.Run(name, func(t *testing.T) {
			for _, b := range Build(evs, Options{}) {
				for _, d := range b.Diagnoses {
					if d.Level == LevelProblem {
						t.Errorf("problem in a boot that worked: %+v", d)
					}
				}
			}
		})
	}
}
