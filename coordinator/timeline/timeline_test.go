package timeline

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

var t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

const mac = "52:54:00:12:34:56"

// step is one hand-written event: seconds after t0, kind, detail as k=v pairs
// ("_" for a space, "~" for "_"; mac=… sets the event's MAC instead, for
// another NIC).
type step struct {
	at     float64
	kind   string
	detail string
}

func events(steps ...step) []proto.Event {
	var out []proto.Event
	for i, s := range steps {
		d := map[string]string{}
		m := mac
		for _, kv := range strings.Fields(s.detail) {
			k, v, _ := strings.Cut(kv, "=")
			if k == "mac" {
				m = v
				continue
			}
			d[k] = strings.ReplaceAll(strings.ReplaceAll(v, "_", " "), "~", "_")
		}
		out = append(out, proto.Event{V: 1, ID: fmt.Sprint("ev", i), Time: t0.Add(time.Duration(s.at * float64(time.Second))),
			Site: "lab", Edge: "edge1", MAC: m, Kind: s.kind, Detail: d})
	}
	return out
}

// dora is a DHCP exchange that got an address.
func dora(at float64, xid string) []step {
	return []step{
		{at, proto.EventDHCPDiscover, "xid=" + xid + " decision=known_host"},
		{at + 0.01, proto.EventDHCPOffer, "xid=" + xid + " ip=10.0.0.20"},
		{at + 1, proto.EventDHCPRequest, "xid=" + xid + " ip=10.0.0.20"},
		{at + 1.01, proto.EventDHCPAck, "xid=" + xid + " ip=10.0.0.20"},
	}
}

// ipxeDora is iPXE's DHCP exchange in full mode, with the decision the edge
// records for it (edge/dhcp BootFor's iPXE row) and the ACK 1 s after the
// DISCOVER.
func ipxeDora(at float64, xid string) []step {
	const d = " decision=known_host;_ipxe:_script_over_http:_http://10.0.0.1:8080/boot.ipxe"
	return []step{
		{at, proto.EventDHCPDiscover, "xid=" + xid + " arch=0" + d},
		{at + 0.01, proto.EventDHCPOffer, "xid=" + xid + " ip=10.0.0.20 arch=0" + d},
		{at + 1, proto.EventDHCPRequest, "xid=" + xid + " ip=10.0.0.20 arch=0" + d},
		{at + 1.01, proto.EventDHCPAck, "xid=" + xid + " ip=10.0.0.20 arch=0" + d},
	}
}

func cat(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func tftpOK(at float64) []step {
	return []step{
		{at, proto.EventTFTPStart, "file=ipxe.efi"},
		{at + 0.1, proto.EventTFTPDone, "file=ipxe.efi bytes=0 probe=true"},
		{at + 0.2, proto.EventTFTPStart, "file=ipxe.efi"},
		{at + 0.5, proto.EventTFTPDone, "file=ipxe.efi bytes=1048576 duration_ms=300"},
	}
}

func scriptBoot(at float64) []step {
	return []step{{at, proto.EventScript, "decision=boot image=debian12 reason=host_boots_image_debian12"}}
}

func artifactsOK(at float64) []step {
	return []step{
		{at, proto.EventArtifactStart, "file=vmlinuz size=8000000 cache=hit"},
		{at + 1, proto.EventArtifactEnd, "file=vmlinuz status=complete bytes=8000000 http_status=200"},
		{at + 1.1, proto.EventArtifactStart, "file=initrd.img size=40000000 cache=miss"},
		{at + 5, proto.EventArtifactEnd, "file=initrd.img status=complete bytes=40000000 http_status=200"},
	}
}

// refusedTFTP is a TFTP request the edge refused: no bytes, a reason.
func refusedTFTP(at float64, file string) []step {
	file = strings.ReplaceAll(file, "_", "~")
	return []step{
		{at, proto.EventTFTPStart, "file=" + file},
		{at + 0.25, proto.EventTFTPError, "file=" + file + " error=tftp:_open_" + file + ":_file_does_not_exist"},
	}
}

// refusedOnly is a refused TFTP request as the edge records it: the
// tftp.error alone, no tftp.start (a refusal's error may be held back by
// the edge's aggregator, and a start without it would read as stalled).
func refusedOnly(at float64, file string) []step {
	file = strings.ReplaceAll(file, "_", "~")
	return []step{{at, proto.EventTFTPError, "file=" + file + " error=tftp:_open_" + file + ":_file_does_not_exist"}}
}

func tftpSent(at float64, file string) []step {
	return []step{
		{at, proto.EventTFTPStart, "file=" + file},
		{at + 0.5, proto.EventTFTPDone, "file=" + file + " bytes=1048576 duration_ms=500"},
	}
}

// shimToGRUB is the Secure Boot chain up to GRUB running, in the order
// SECUREBOOT-FACTS.md observed: shim (after the firmware's tsize probe), its
// revocation and certificate probes, GRUB, GRUB's module lists.
func shimToGRUB(at float64) []step {
	return cat(dora(at, "0x01"),
		[]step{{at + 2, proto.EventTFTPStart, "file=bootx64.efi"}, {at + 2.1, proto.EventTFTPDone, "file=bootx64.efi bytes=0 probe=true"}},
		tftpSent(at+2.2, "bootx64.efi"),
		refusedTFTP(at+2.75, "revocations_sku.efi"), refusedTFTP(at+2.75, "revocations_sbat.efi"), refusedTFTP(at+2.75, "shim_certificate_0.efi"),
		tftpSent(at+3, "grubx64.efi"),
		refusedTFTP(at+4, "/grub/x86_64-efi/command.lst"), refusedTFTP(at+4, "/grub/x86_64-efi/fs.lst"),
		refusedTFTP(at+4, "/grub/x86_64-efi/crypto.lst"), refusedTFTP(at+4, "/grub/x86_64-efi/terminal.lst"),
		refusedTFTP(at+4.5, "/grub/grub.cfg-01-52-54-00-12-34-56"),
	)
}

// grubConfig is the edge serving GRUB its config over TFTP.
func grubConfig(at float64) []step {
	return []step{
		{at, proto.EventTFTPStart, "file=/grub/grub.cfg"},
		{at + 0.25, proto.EventScript, "decision=boot image=debian12 format=grub via=tftp"},
		{at + 0.5, proto.EventTFTPDone, "file=grub/grub.cfg bytes=900"},
	}
}

// secureBoot is a complete boot through shim and GRUB, kernel and initrd
// over TFTP from the edge's cache.
func secureBoot() []step {
	return cat(shimToGRUB(0), grubConfig(5),
		tftpSent(6, "/artifacts/debian12/vmlinuz"), tftpSent(11, "/artifacts/debian12/initrd.img"),
		[]step{{200, proto.EventCallbackDone, "forwarded=true"}})
}

// healthy is a complete UEFI boot: PXE ROM DHCP, iPXE over TFTP, iPXE DHCP,
// script, kernel and initrd, installer callback.
func healthy() []step {
	return cat(dora(0, "0x01"), tftpOK(2), dora(4, "0x02"), scriptBoot(5.5), artifactsOK(6),
		[]step{{200, proto.EventCallbackDone, "forwarded=true"}})
}

// diag renders diagnoses as "rule@seconds" for compact comparisons.
func diag(boots []Boot) [][]string {
	var out [][]string
	for _, b := range boots {
		row := []string{}
		for _, d := range b.Diagnoses {
			row = append(row, fmt.Sprintf("%s@%g", d.Rule, d.At.Sub(t0).Seconds()))
		}
		out = append(out, row)
	}
	return out
}

func TestBuildDiagnoses(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
		now   time.Time // zero: all boots over
		want  [][]string
	}{
		{name: "healthy boot, no diagnosis", steps: healthy(), want: [][]string{{}}},
		{
			name: "offers never reach the client",
			steps: []step{
				{0, proto.EventDHCPDiscover, "xid=0x0a decision=known_host"}, {0.01, proto.EventDHCPOffer, "xid=0x0a"},
				{4, proto.EventDHCPDiscover, "xid=0x0a decision=known_host"}, {4.01, proto.EventDHCPOffer, "xid=0x0a"},
				{12, proto.EventDHCPDiscover, "xid=0x0a decision=known_host"}, {12.01, proto.EventDHCPOffer, "xid=0x0a"},
				{28, proto.EventDHCPDiscover, "xid=0x0a decision=known_host"}, {28.01, proto.EventDHCPOffer, "xid=0x0a"},
			},
			want: [][]string{{RuleNoRequest + "@0"}},
		},
		{
			name: "iPXE's offers never arrive after a good PXE stage",
			steps: cat(dora(0, "0x01"), tftpOK(2), []step{
				{4, proto.EventDHCPDiscover, "xid=0x02 decision=known_host"}, {4.01, proto.EventDHCPOffer, "xid=0x02"},
				{5, proto.EventDHCPDiscover, "xid=0x02 decision=known_host"}, {5.01, proto.EventDHCPOffer, "xid=0x02"},
			}),
			want: [][]string{{RuleNoRequest + "@4"}},
		},
		{
			name: "a single fresh DISCOVER is a boot in progress",
			steps: []step{
				{0, proto.EventDHCPDiscover, "xid=0x0a decision=known_host"}, {0.01, proto.EventDHCPOffer, "xid=0x0a"},
			},
			now:  t0.Add(2 * time.Second),
			want: [][]string{{}},
		},
		{
			name: "the edge answers no DISCOVER",
			steps: []step{
				{0, proto.EventDHCPDiscover, "xid=0x0a decision=proxy;_known_host;_no_boot_file"},
				{4, proto.EventDHCPDiscover, "xid=0x0a decision=proxy;_known_host;_no_boot_file"},
			},
			want: [][]string{{RuleNoOffer + "@0"}},
		},
		{
			name:  "spanning tree: DISCOVERs 30 s after each handover (FOG seed)",
			steps: cat(dora(0, "0x01"), tftpOK(2), dora(32.5, "0x02"), scriptBoot(34), artifactsOK(35)),
			want:  [][]string{{RuleSTP + "@32.5"}},
		},
		{
			name: "spanning tree: bursts of DISCOVERs about 30 s apart",
			steps: []step{
				{0, proto.EventDHCPDiscover, "xid=0x01 decision=known_host"}, {0.01, proto.EventDHCPOffer, "xid=0x01"},
				{1, proto.EventDHCPRequest, "xid=0x01"}, {1.01, proto.EventDHCPAck, "xid=0x01"},
				{30, proto.EventDHCPDiscover, "xid=0x02 decision=known_host"}, {30.01, proto.EventDHCPOffer, "xid=0x02"},
				{31, proto.EventDHCPRequest, "xid=0x02"}, {31.01, proto.EventDHCPAck, "xid=0x02"},
				{60, proto.EventDHCPDiscover, "xid=0x03 decision=known_host"}, {60.01, proto.EventDHCPOffer, "xid=0x03"},
				{61, proto.EventDHCPRequest, "xid=0x03"}, {61.01, proto.EventDHCPAck, "xid=0x03"},
			},
			want: [][]string{{RuleSTP + "@30"}},
		},
		{
			name:  "spanning tree: the kernel's DISCOVER 30 s after the artifacts",
			steps: cat(healthy()[:len(healthy())-1], dora(41, "0x03")),
			want:  [][]string{{}, {RuleSTP + "@41"}},
		},
		{
			name:  "spanning tree: its DISCOVER 30 s after its own script request",
			steps: cat(dora(0, "0x01"), []step{{1.5, proto.EventScript, "decision=boot image=debian12 ip=10.0.0.20"}}, dora(31.5, "0x02"), scriptBoot(33), artifactsOK(34)),
			want:  [][]string{{RuleSTP + "@31.5"}},
		},
		{
			name:  "a script asked for from another address (an operator's curl) is no handover",
			steps: cat(dora(0, "0x01"), []step{{1.5, proto.EventScript, "decision=boot image=debian12 ip=10.0.0.99"}}, dora(31.5, "0x02"), scriptBoot(33), artifactsOK(34)),
			want:  [][]string{{}},
		},
		{
			name:  "spanning tree: the kernel's DISCOVER 30 s after the artifacts, asking for 28 s",
			steps: cat(healthy()[:len(healthy())-1], []step{{41, proto.EventDHCPDiscover, "xid=0x03 secs=28"}}, dora(41.5, "0x03")[1:]),
			want:  [][]string{{}, {RuleSTP + "@41"}},
		},
		{
			// dracut's dhclient in a LiveOS under TCG: the kernel and the
			// initramfs take half a minute before their first DISCOVER.
			name:  "a slow kernel's first DISCOVER 30 s after the artifacts is not spanning tree",
			steps: cat(healthy()[:len(healthy())-1], []step{{41, proto.EventDHCPDiscover, "xid=0x03 secs=0"}}, dora(41.5, "0x03")[1:]),
			want:  [][]string{{}, {}},
		},
		{
			name: "iPXE's first DISCOVER 30 s after a handover (secs is its transmission count) is not spanning tree",
			steps: cat(dora(0, "0x01"), tftpOK(2), []step{{32.5, proto.EventDHCPDiscover, "xid=0x02 secs=4"}}, dora(33, "0x02")[1:],
				scriptBoot(34), artifactsOK(35)),
			want: [][]string{{}},
		},
		{
			name: "a client's own retransmission 30 s later is not spanning tree",
			steps: []step{
				{0, proto.EventDHCPDiscover, "xid=0x01 decision=known_host"},
				{30, proto.EventDHCPDiscover, "xid=0x01 decision=known_host"},
				{30.01, proto.EventDHCPOffer, "xid=0x01"}, {31, proto.EventDHCPRequest, "xid=0x01"}, {31.01, proto.EventDHCPAck, "xid=0x01"},
				{60, proto.EventDHCPDiscover, "xid=0x02 decision=known_host"},
				{60.01, proto.EventDHCPOffer, "xid=0x02"}, {61, proto.EventDHCPRequest, "xid=0x02"}, {61.01, proto.EventDHCPAck, "xid=0x02"},
			},
			want: [][]string{{}},
		},
		{
			name:  "TFTP started, never finished",
			steps: cat(dora(0, "0x01"), []step{{2, proto.EventTFTPStart, "file=/ipxe.efi"}}),
			want:  [][]string{{RuleTFTPStalled + "@2"}},
		},
		{
			name:  "TFTP started a moment ago is in progress",
			steps: cat(dora(0, "0x01"), []step{{2, proto.EventTFTPStart, "file=ipxe.efi"}}),
			now:   t0.Add(5 * time.Second),
			want:  [][]string{{}},
		},
		{
			name: "TFTP transfer timed out",
			steps: cat(dora(0, "0x01"), []step{{2, proto.EventTFTPStart, "file=ipxe.efi"},
				{12, proto.EventTFTPError, "file=ipxe.efi bytes=65536 error=timeout_waiting_for_ACK"}}),
			want: [][]string{{RuleTFTPFailed + "@12"}},
		},
		{
			name:  "script served, no artifact requested",
			steps: cat(dora(0, "0x01"), tftpOK(2), dora(4, "0x02"), scriptBoot(5.5)),
			want:  [][]string{{RuleNoArtifact + "@5.5"}},
		},
		{
			name: "artifact transfer aborted midway",
			steps: cat(dora(0, "0x01"), tftpOK(2), dora(4, "0x02"), scriptBoot(5.5), []step{
				{6, proto.EventArtifactStart, "file=vmlinuz size=8000000 cache=hit"},
				{7, proto.EventArtifactEnd, "file=vmlinuz status=complete bytes=8000000 http_status=200"},
				{7.1, proto.EventArtifactStart, "file=initrd.img size=40000000 cache=miss"},
				{9, proto.EventArtifactEnd, "file=initrd.img status=aborted bytes=1200000 http_status=200"},
			}),
			want: [][]string{{RuleArtifactAborted + "@9"}},
		},
		{
			name: "artifact short without a status (older edge)",
			steps: cat(scriptBoot(0), []step{
				{1, proto.EventArtifactStart, "file=vmlinuz size=8000000"},
				{2, proto.EventArtifactEnd, "file=vmlinuz bytes=100"},
			}),
			want: [][]string{{RuleArtifactAborted + "@2"}},
		},
		{
			name: "artifact started, never ended",
			steps: cat(scriptBoot(0), []step{
				{1, proto.EventArtifactStart, "file=vmlinuz size=8000000 cache=miss"},
			}),
			want: [][]string{{RuleArtifactAborted + "@1"}},
		},
		{
			name: "artifact answered with an error",
			steps: cat(scriptBoot(0), []step{
				{1, proto.EventArtifactStart, "file=vmlinuz size=8000000 cache=miss"},
				{2, proto.EventArtifactEnd, "file=vmlinuz status=aborted bytes=0 http_status=502 error=store_unreachable"},
			}),
			want: [][]string{{RuleArtifactFailed + "@2"}},
		},
		{
			name: "NAK and DECLINE are informative",
			steps: []step{
				{0, proto.EventDHCPRequest, "xid=0x01 ip=10.0.0.9"},
				{0.01, proto.EventDHCPNak, "xid=0x01 decision=requested_address_not_ours"},
				{1, proto.EventDHCPDiscover, "xid=0x02 decision=known_host"}, {1.01, proto.EventDHCPOffer, "xid=0x02 ip=10.0.0.20"},
				{2, proto.EventDHCPRequest, "xid=0x02 ip=10.0.0.20"}, {2.01, proto.EventDHCPAck, "xid=0x02 ip=10.0.0.20"},
				{3, proto.EventDHCPDecline, "xid=0x02 ip=10.0.0.20 decision=address_in_use_by_another_machine"},
			},
			want: [][]string{{RuleNAK + "@0.01", RuleDecline + "@3"}},
		},
		{
			name: "unknown host ignored by policy",
			steps: []step{
				{0, proto.EventDHCPDiscover, "xid=0x01 decision=ignored:_unknown_MAC,_site_policy_ignore"},
				{4, proto.EventDHCPDiscover, "xid=0x01 decision=ignored:_unknown_MAC,_site_policy_ignore"},
			},
			want: [][]string{{RuleIgnored + "@0"}},
		},
		{
			name:  "host state local exits to disk",
			steps: cat(dora(0, "0x01"), tftpOK(2), dora(4, "0x02"), []step{{5.5, proto.EventScript, "decision=local reason=host_state_is_local"}}),
			want:  [][]string{{RuleLocal + "@5.5"}},
		},
		// iPXE's IPv6 wait (QEMU-PXE-FACTS.md): without router
		// advertisements iPXE fetches nothing until about 16 s after it
		// began configuring the NIC; its DHCP exchange is the first 1-4 s
		// of that, so the script comes 12-15 s after the ACK.
		{
			name: "IPv6 wait: QEMU's BIOS iPXE ROM, script 15 s after the ACK",
			// The ROM is iPXE, so the edge sends it the script at once; with
			// adverts the boot reaches userspace in about 9 s.
			steps: cat(ipxeDora(0, "0x01"), scriptBoot(16), artifactsOK(16.5)),
			want:  [][]string{{RuleIPv6Wait + "@16"}},
		},
		{
			name:  "IPv6 wait: UEFI PXE, ipxe.efi over TFTP, iPXE's script 14 s after its ACK",
			steps: cat(dora(0, "0x01"), tftpOK(2), ipxeDora(4, "0x02"), scriptBoot(19), artifactsOK(19.5)),
			want:  [][]string{{RuleIPv6Wait + "@19"}},
		},
		{
			name: "IPv6 wait in proxy mode: iPXE's proxy OFFER, the site's server ACKs",
			steps: cat([]step{
				{0, proto.EventDHCPDiscover, "xid=0x01 arch=0 decision=proxy;_known_host;_ipxe:_script_over_http:_http://10.0.0.1:8080/boot.ipxe"},
				{0.01, proto.EventDHCPOffer, "xid=0x01 arch=0 decision=proxy;_known_host;_ipxe:_script_over_http:_http://10.0.0.1:8080/boot.ipxe"},
			}, []step{{16, proto.EventScript, "decision=boot image=debian12 reason=host_boots_image_debian12 format=ipxe"}}, artifactsOK(16.5)),
			want: [][]string{{RuleIPv6Wait + "@16"}},
		},
		{
			name:  "no IPv6 wait: iPXE asks for its script 0.5 s after the ACK (adverts on the segment)",
			steps: cat(dora(0, "0x01"), tftpOK(2), ipxeDora(4, "0x02"), scriptBoot(5.5), artifactsOK(6)),
			want:  [][]string{{}},
		},
		{
			name:  "no IPv6 wait: a slow guest's 6 s between ACK and script is under the threshold",
			steps: cat(ipxeDora(0, "0x01"), scriptBoot(7), artifactsOK(7.5)),
			want:  [][]string{{}},
		},
		{
			name: "no IPv6 wait: a ProxyDHCP wait before the REQUEST hid most of it",
			// An edge that does not send no-pxedhcp: iPXE waits ~10 s for
			// ProxyDHCP offers, and the IPv6 wait runs out alongside.
			steps: cat([]step{
				{0, proto.EventDHCPDiscover, "xid=0x01 decision=known_host;_ipxe:_script_over_http"},
				{0.01, proto.EventDHCPOffer, "xid=0x01 ip=10.0.0.20 decision=known_host;_ipxe:_script_over_http"},
				{11, proto.EventDHCPRequest, "xid=0x01 ip=10.0.0.20 decision=known_host;_ipxe:_script_over_http"},
				{11.01, proto.EventDHCPAck, "xid=0x01 ip=10.0.0.20 decision=known_host;_ipxe:_script_over_http"},
			}, scriptBoot(16), artifactsOK(16.5)),
			want: [][]string{{}},
		},
		{
			name: "no IPv6 wait: spanning tree held the port while iPXE waited",
			// The IPv6 wait runs out during the 30 s the port is blocked;
			// the late DISCOVER is the diagnosis, the script follows at once.
			steps: cat(dora(0, "0x01"), tftpOK(2), ipxeDora(32.5, "0x02"), scriptBoot(34), artifactsOK(35)),
			want:  [][]string{{RuleSTP + "@32.5"}},
		},
		{
			name: "no IPv6 wait: something else from the MAC between the ACK and the script",
			steps: cat(ipxeDora(0, "0x01"), []step{
				{3, proto.EventDHCPDecline, "xid=0x01 ip=10.0.0.20"},
			}, ipxeDora(13, "0x02"), scriptBoot(15), artifactsOK(15.5)),
			want: [][]string{{RuleDecline + "@3"}},
		},
		{
			name: "no IPv6 wait: a problem already diagnosed on the machine's other NIC inside the gap",
			steps: cat(ipxeDora(0, "0x01"), []step{
				{4, proto.EventTFTPStart, "mac=52:54:00:12:34:57 file=ipxe.efi"},
				{9, proto.EventTFTPError, "mac=52:54:00:12:34:57 file=ipxe.efi bytes=0 error=timeout_waiting_for_ACK"},
			}, scriptBoot(16), artifactsOK(16.5)),
			want: [][]string{{RuleTFTPFailed + "@9"}},
		},
		{
			name: "no IPv6 wait: GRUB's late grub.cfg request",
			steps: cat(dora(0, "0x01"), []step{
				{15, proto.EventScript, "decision=boot image=debian12 format=grub"},
			}, artifactsOK(16)),
			want: [][]string{{}},
		},
		{
			name:  "no IPv6 wait: a DHCP exchange that is not iPXE's (no script follows)",
			steps: cat(dora(0, "0x01"), []step{{12, proto.EventTFTPStart, "file=ipxe.efi"}, {12.5, proto.EventTFTPDone, "file=ipxe.efi bytes=1048576"}}),
			want:  [][]string{{}},
		},
		{name: "Secure Boot chain, kernel and initrd over TFTP: no diagnosis", steps: secureBoot(), want: [][]string{{}}},
		{
			name:  "GRUB fetched a file this site does not serve: its embedded config names /vmlinuz",
			steps: cat(shimToGRUB(0), refusedTFTP(6, "/vmlinuz")),
			want:  [][]string{{RuleGRUBNotServed + "@6.25"}},
		},
		{
			name:  "GRUB fetched a file this site does not serve: an image not assigned here",
			steps: cat(shimToGRUB(0), grubConfig(5), refusedTFTP(6, "/artifacts/stray/vmlinuz")),
			want:  [][]string{{RuleGRUBNotServed + "@6.25"}},
		},
		{
			name:  "GRUB fetched a file this site does not serve: insmod http",
			steps: cat(shimToGRUB(0), refusedTFTP(5, "/grub/x86_64-efi/http.mod"), grubConfig(6)),
			want:  [][]string{{RuleGRUBNotServed + "@5.25", RuleNoArtifact + "@6.25"}},
		},
		{
			name:  "GRUB config over TFTP, GRUB asked for no kernel",
			steps: cat(shimToGRUB(0), grubConfig(5)),
			want:  [][]string{{RuleNoArtifact + "@5.25"}},
		},
		{
			name:  "Secure Boot refused the kernel: downloaded over TFTP, nothing followed",
			steps: cat(shimToGRUB(0), grubConfig(5), tftpSent(6, "/artifacts/debian12/vmlinuz")),
			want:  [][]string{{RuleKernelRefused + "@6.5"}},
		},
		{
			name: "Secure Boot refused the kernel: GRUB with http, downloaded over HTTP",
			steps: cat(dora(0, "0x01"), []step{
				{5, proto.EventScript, "decision=boot image=debian12 format=grub"},
				{6, proto.EventArtifactStart, "file=vmlinuz size=8000000 cache=hit"},
				{7, proto.EventArtifactEnd, "file=vmlinuz status=complete bytes=8000000 http_status=200"},
			}),
			want: [][]string{{RuleKernelRefused + "@7"}},
		},
		{
			name:  "kernel refused, but the boot may still be running",
			steps: cat(shimToGRUB(0), grubConfig(5), tftpSent(6, "/artifacts/debian12/vmlinuz")),
			now:   t0.Add(10 * time.Second),
			want:  [][]string{{}},
		},
		{
			name: "kernel transfer broke: a TFTP failure, not a refusal",
			steps: cat(shimToGRUB(0), grubConfig(5), []step{
				{6, proto.EventTFTPStart, "file=/artifacts/debian12/vmlinuz"},
				{9, proto.EventTFTPError, "file=artifacts/debian12/vmlinuz bytes=65536 error=timeout_waiting_for_ACK"},
			}),
			want: [][]string{{RuleTFTPFailed + "@9"}},
		},
		{
			name: "shim fetched GRUB, GRUB never asked for grub.cfg",
			steps: cat(dora(0, "0x01"), tftpSent(2, "loaders/shim-debian/shimx64.efi"),
				refusedTFTP(2.75, "loaders/shim-debian/revocations_sku.efi"), tftpSent(3, "loaders/shim-debian/grubx64.efi")),
			want: [][]string{{RuleGRUBNoConfig + "@3.5"}},
		},
		{
			// The edge records a refused name as its tftp.error alone (no
			// tftp.start): the error is the request.
			name:  "GRUB's kernel request refused (tftp.error alone): not served, and it did ask",
			steps: cat(shimToGRUB(0), grubConfig(5), refusedOnly(6, "/artifacts/stray/vmlinuz")),
			want:  [][]string{{RuleGRUBNotServed + "@6"}},
		},
		{
			name: "GRUB's grub.cfg request refused (tftp.error alone): not served, and it did ask",
			steps: cat(dora(0, "0x01"), tftpSent(2, "loaders/shim-debian/bootx64.efi"),
				tftpSent(3, "loaders/shim-debian/grubx64.efi"), refusedOnly(4, "/grub/grub.cfg")),
			want: [][]string{{RuleGRUBNotServed + "@4"}},
		},
		{
			name: "shim fetched GRUB a moment ago: the boot may still be running",
			steps: cat(dora(0, "0x01"), tftpSent(2, "loaders/shim-debian/shimx64.efi"),
				tftpSent(3, "loaders/shim-debian/grubx64.efi")),
			now:  t0.Add(5 * time.Second),
			want: [][]string{{}},
		},
		{
			name:  "a file refused before any GRUB runs is a failed TFTP request",
			steps: cat(dora(0, "0x01"), refusedTFTP(2, "undionly.kpxe")),
			want:  [][]string{{RuleTFTPFailed + "@2.25"}},
		},
		{
			name:  "image not yet at the edge",
			steps: cat(dora(0, "0x01"), []step{{2, proto.EventScript, "decision=missing image=debian12 reason=image_debian12_is_not_known_at_this_edge"}}),
			want:  [][]string{{RuleScriptRetry + "@2"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			boots := Build(events(tt.steps...), Options{Now: tt.now})
			if diff := cmp.Diff(tt.want, diag(boots)); diff != "" {
				t.Errorf("diagnoses (-want +got):\n%s", diff)
				for _, b := range boots {
					for _, d := range b.Diagnoses {
						t.Logf("%s: %s", d.Rule, d.Text)
					}
				}
			}
		})
	}
}

// TestGRUBNotServedText: the diagnosis names the file, the edge's reason
// and where such a request comes from.
func TestGRUBNotServedText(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"/vmlinuz", "GRUB fetched /vmlinuz, a file this site does not serve (tftp: open /vmlinuz: file does not exist): the config GRUB read was not rendered by this edge"},
		{"/grub/x86_64-efi/http.mod", "GRUB tried to load a module (insmod); Debian's signed GRUB cannot load modules under Secure Boot"},
		{"/artifacts/stray/vmlinuz", "the config names an image this site does not boot"},
	} {
		boots := Build(events(cat(shimToGRUB(0), refusedTFTP(6, tc.file))...), Options{})
		if len(boots) != 1 || len(boots[0].Diagnoses) != 1 || !strings.Contains(boots[0].Diagnoses[0].Text, tc.want) {
			for _, b := range boots {
				for _, d := range b.Diagnoses {
					t.Logf("%s: %s", d.Rule, d.Text)
				}
			}
			t.Errorf("%s: want one diagnosis saying %q", tc.file, tc.want)
		}
	}
}

// TestIPv6WaitText: the diagnosis names the wait in whole seconds and says
// what to check.
func TestIPv6WaitText(t *testing.T) {
	boots := Build(events(cat(dora(0, "0x01"), tftpOK(2), ipxeDora(4, "0x02"), scriptBoot(19.2), artifactsOK(19.5))...), Options{})
	want := []Diagnosis{{Rule: RuleIPv6Wait, Level: LevelInfo, At: t0.Add(19200 * time.Millisecond),
		Text: "iPXE waited 14 s for IPv6: no router advertisements on this segment (the edge sends them with --ipv6-ra; is it off, or is the edge not on this segment?)"}}
	if diff := cmp.Diff(want, boots[0].Diagnoses); diff != "" {
		t.Errorf("diagnoses (-want +got):\n%s", diff)
	}
}

func TestGroup(t *testing.T) {
	type bootShape struct {
		Steps  int
		Since  time.Duration
		Deltas []time.Duration
	}
	tests := []struct {
		name  string
		steps []step
		want  []bootShape
	}{
		{
			name: "a silence longer than the gap starts a boot",
			steps: []step{
				{0, proto.EventDHCPDiscover, "xid=1"}, {1, proto.EventDHCPOffer, "xid=1"},
				{1 + 11*60, proto.EventDHCPDiscover, "xid=2"},
			},
			want: []bootShape{
				{Steps: 2, Deltas: []time.Duration{0, time.Second}},
				{Steps: 1, Since: 11 * time.Minute, Deltas: []time.Duration{0}},
			},
		},
		{
			// Seen with QEMU's iPXE ROM: a retransmitted DISCOVER whose
			// conflict probe outlasted the whole exchange is recorded after
			// the kernel started loading. Same xid: the same boot.
			name: "a late copy of the boot's own DISCOVER does not start a boot",
			steps: cat(dora(0, "0x01"), []step{{2, proto.EventArtifactStart, "file=vmlinuz"}},
				[]step{{2.5, proto.EventDHCPDiscover, "xid=0x01"}, {2.5, proto.EventDHCPOffer, "xid=0x01"}, {3, proto.EventArtifactEnd, "file=vmlinuz"}}),
			want: []bootShape{
				{Steps: 8, Deltas: []time.Duration{0, 10 * time.Millisecond, 990 * time.Millisecond, 10 * time.Millisecond, 990 * time.Millisecond, 500 * time.Millisecond, 0, 500 * time.Millisecond}},
			},
		},
		{
			name: "a DISCOVER after an address and artifacts starts a boot",
			steps: cat(dora(0, "0x01"), []step{{2, proto.EventArtifactStart, "file=vmlinuz"}, {3, proto.EventArtifactEnd, "file=vmlinuz"}},
				[]step{{5, proto.EventDHCPDiscover, "xid=0x02"}}),
			want: []bootShape{
				{Steps: 6, Deltas: []time.Duration{0, 10 * time.Millisecond, 990 * time.Millisecond, 10 * time.Millisecond, 990 * time.Millisecond, time.Second}},
				{Steps: 1, Since: 2 * time.Second, Deltas: []time.Duration{0}},
			},
		},
		{
			name:  "a DISCOVER after an address alone (PXE ROM to iPXE) stays in the boot",
			steps: cat(dora(0, "0x01"), []step{{3, proto.EventDHCPDiscover, "xid=0x02"}}),
			want: []bootShape{
				{Steps: 5, Deltas: []time.Duration{0, 10 * time.Millisecond, 990 * time.Millisecond, 10 * time.Millisecond, 1990 * time.Millisecond}},
			},
		},
		{
			name: "events out of order are sorted by time",
			steps: []step{
				{2, proto.EventDHCPOffer, "xid=1"}, {0, proto.EventDHCPDiscover, "xid=1"},
			},
			want: []bootShape{{Steps: 2, Deltas: []time.Duration{0, 2 * time.Second}}},
		},
		{name: "no events, no boots"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []bootShape
			for _, b := range Group(events(tt.steps...), 0) {
				s := bootShape{Steps: len(b.Steps), Since: b.Since}
				for i, st := range b.Steps {
					s.Deltas = append(s.Deltas, st.Delta)
					if i > 0 && st.Event.Time.Before(b.Steps[i-1].Event.Time) {
						t.Errorf("step %d is earlier than step %d", i, i-1)
					}
				}
				if b.Start != b.Steps[0].Event.Time || b.End != b.Steps[len(b.Steps)-1].Event.Time {
					t.Errorf("boot start/end %v/%v do not match its steps", b.Start, b.End)
				}
				got = append(got, s)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("boots (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLast(t *testing.T) {
	boots := Build(events(cat(dora(0, "1"), []step{{1000, proto.EventDHCPDiscover, "xid=2"}}, []step{{2000, proto.EventDHCPDiscover, "xid=3"}})...), Options{})
	tests := []struct {
		name string
		n    int
		want int
	}{
		{"all", 0, 3}, {"fewer", 2, 2}, {"more than there are", 5, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Last(boots, tt.n)
			if len(got) != tt.want || got[len(got)-1].Start != boots[2].Start {
				t.Errorf("Last(%d) = %d boots ending at %v, want %d ending with the latest", tt.n, len(got), got[len(got)-1].Start, tt.want)
			}
		})
	}
}

func TestSummary(t *testing.T) {
	tests := []struct {
		name string
		ev   step
		want string
	}{
		{"dhcp", step{0, proto.EventDHCPAck, "xid=0x01 ip=10.0.0.20 arch=efi-x64 decision=known_host"}, "xid=0x01 ip=10.0.0.20 arch=efi-x64 known host"},
		{"tftp probe", step{0, proto.EventTFTPDone, "file=ipxe.efi bytes=0 probe=true duration_ms=1"}, "ipxe.efi size probe in 1ms"},
		{"tftp done", step{0, proto.EventTFTPDone, "file=ipxe.efi bytes=1024 duration_ms=30"}, "ipxe.efi 1024 bytes in 30ms"},
		{"script", step{0, proto.EventScript, "decision=boot image=debian12 reason=host_boots"}, "boot debian12 (host boots)"},
		{"artifact end", step{0, proto.EventArtifactEnd, "file=vmlinuz status=complete bytes=5 duration_ms=2 http_status=200"}, "vmlinuz complete 5 bytes in 2ms HTTP 200"},
		{"other kinds: sorted k=v", step{0, proto.EventCallbackFacts, "z=1 a=2"}, "a=2 z=1"},
		{"long detail is cut", step{0, proto.EventCallbackFacts, "k=" + strings.Repeat("x", 200)}, "k=" + strings.Repeat("x", 107) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Summary(events(tt.ev)[0])); diff != "" {
				t.Errorf("Summary (-want +got):\n%s", diff)
			}
		})
	}
}

// BenchmarkBuild: a busy machine's day, 100 boots of a full chain.
func BenchmarkBuild(b *testing.B) {
	var evs []proto.Event
	for i := range 100 {
		for _, e := range events(healthy()...) {
			e.Time = e.Time.Add(time.Duration(i) * time.Hour)
			evs = append(evs, e)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if boots := Build(evs, Options{}); len(boots) != 100 {
			b.Fatalf("%d boots, want 100", len(boots))
		}
	}
}
