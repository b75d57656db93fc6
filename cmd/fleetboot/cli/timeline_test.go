package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/coordinator/timeline"
	"github.com/fleetboot/fleetboot/proto"
)

func TestHostTimeline(t *testing.T) {
	url := startCoordinator(t, "dir://"+t.TempDir())
	ctx := context.Background()
	const host, extra = "52:54:00:00:00:0c", "52:54:00:00:00:0d"
	for _, args := range [][]string{
		{"site", "add", "lab", "--subnet", "10.0.0.0/24", "--range", "10.0.0.100-10.0.0.200"},
		{"host", "set", host, "--site", "lab", "--hostname", "web1", "--extra-mac", extra},
	} {
		if r := runMain(t, ctx, url, args...); r.code != 0 {
			t.Fatalf("%v: code %d stderr %q", args, r.code, r.stderr)
		}
	}
	pub := newPublisher(t, url)
	var evs []proto.Event
	add := func(sec float64, mac, kind, detail string) {
		evs = append(evs, ev(fmt.Sprintf("t%02d", len(evs)), sec, "lab", "edge1", mac, kind, detail))
	}
	dora := func(sec float64, mac, xid string) {
		add(sec, mac, proto.EventDHCPDiscover, "xid="+xid+" arch=efi-x64 decision=known_host")
		add(sec+0.01, mac, proto.EventDHCPOffer, "xid="+xid+" ip=10.0.0.120 decision=known_host")
		add(sec+1, mac, proto.EventDHCPRequest, "xid="+xid+" ip=10.0.0.120 decision=known_host")
		add(sec+1.01, mac, proto.EventDHCPAck, "xid="+xid+" ip=10.0.0.120 decision=known_host")
	}
	// Boot 1, an hour earlier on the second NIC: TFTP never finishes.
	dora(-3600, extra, "0x0101")
	add(-3598, extra, proto.EventTFTPStart, "file=ipxe.efi")
	// Boot 2: spanning tree without portfast. The PXE ROM's exchange and
	// TFTP are quick; iPXE's DISCOVER comes 31 s after the handover.
	dora(0, host, "0x0201")
	add(2, host, proto.EventTFTPStart, "file=ipxe.efi")
	add(2.4, host, proto.EventTFTPDone, "file=ipxe.efi bytes=1048576 duration_ms=400")
	dora(33.4, host, "0x0202")
	add(35, host, proto.EventScript, "decision=boot image=debian12 reason=host_boots_image_debian12")
	add(35.5, host, proto.EventArtifactStart, "file=vmlinuz size=8000000 cache=hit")
	add(36.5, host, proto.EventArtifactEnd, "file=vmlinuz status=complete bytes=8000000 duration_ms=1000 http_status=200")
	add(36.6, host, proto.EventArtifactStart, "file=initrd.img size=40000000 cache=miss")
	add(41, host, proto.EventArtifactEnd, "file=initrd.img status=complete bytes=40000000 duration_ms=4400 http_status=200")
	pub.publish(evs...)
	// Another machine's events are not in this timeline.
	pub.publish(ev("x1", 1, "lab", "edge1", macA, proto.EventDHCPDiscover, "xid=0x9"))

	since := "--since=2025-03-01T00:00:00Z"
	t.Run("table with the spanning tree diagnosis", func(t *testing.T) {
		r := runMain(t, ctx, url, "host", "timeline", "5254.0000.000c", since)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("code %d stderr %q", r.code, r.stderr)
		}
		golden(t, "timeline-stp.txt", r.stdout)
		if !strings.Contains(r.stdout, "\ndiagnosis: DISCOVERs resumed about 30 s after link drops (31s)") {
			t.Errorf("no spanning tree diagnosis in:\n%s", r.stdout)
		}
		if !strings.Contains(r.stdout, "\ndiagnosis: TFTP transfer of ipxe.efi started and never finished") {
			t.Errorf("no TFTP diagnosis for the extra MAC's boot in:\n%s", r.stdout)
		}
	})
	t.Run("json, last boot only", func(t *testing.T) {
		r := runMain(t, ctx, url, "host", "timeline", host, since, "--boots", "1", "-o", "json")
		if r.code != 0 {
			t.Fatalf("code %d stderr %q", r.code, r.stderr)
		}
		var got struct {
			MACs  []string        `json:"macs"`
			Total int             `json:"total_boots"`
			Boots []timeline.Boot `json:"boots"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("%v\n%s", err, r.stdout)
		}
		var rules []string
		for _, d := range got.Boots[0].Diagnoses {
			rules = append(rules, d.Rule)
		}
		want := struct {
			MACs         []string
			Total, Boots int
			Steps        int
			Rules        []string
		}{[]string{host, extra}, 2, 1, 15, []string{timeline.RuleSTP}}
		gotShape := want
		gotShape.MACs, gotShape.Total, gotShape.Boots, gotShape.Steps, gotShape.Rules = got.MACs, got.Total, len(got.Boots), len(got.Boots[0].Steps), rules
		if diff := cmp.Diff(want, gotShape); diff != "" {
			t.Errorf("timeline (-want +got):\n%s", diff)
		}
		golden(t, "timeline-last.json", r.stdout)
	})
	t.Run("unknown MAC ignored by policy", func(t *testing.T) {
		pub.publish(
			ev("u1", 100, "lab", "edge1", macB, proto.EventDHCPDiscover, "xid=0x77 decision=ignored:_unknown_MAC,_site_policy_ignore"),
			ev("u2", 104, "lab", "edge1", macB, proto.EventDHCPDiscover, "xid=0x77 decision=ignored:_unknown_MAC,_site_policy_ignore"),
		)
		r := runMain(t, ctx, url, "host", "timeline", macB, since)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("code %d stderr %q", r.code, r.stderr)
		}
		golden(t, "timeline-unknown.txt", r.stdout)
	})
	t.Run("iPXE's IPv6 wait is a note", func(t *testing.T) {
		// QEMU's BIOS iPXE ROM on a segment without router advertisements:
		// the script comes 15 s after iPXE's ACK.
		const m = "52:54:00:00:00:0e"
		const d = " arch=0 decision=known_host;_ipxe:_script_over_http:_http://10.0.0.1:8080/boot.ipxe"
		pub.publish(
			ev("v1", 200, "lab", "edge1", m, proto.EventDHCPDiscover, "xid=0x88"+d),
			ev("v2", 200.01, "lab", "edge1", m, proto.EventDHCPOffer, "xid=0x88 ip=10.0.0.121"+d),
			ev("v3", 201, "lab", "edge1", m, proto.EventDHCPRequest, "xid=0x88 ip=10.0.0.121"+d),
			ev("v4", 201.01, "lab", "edge1", m, proto.EventDHCPAck, "xid=0x88 ip=10.0.0.121"+d),
			ev("v5", 216, "lab", "edge1", m, proto.EventScript, "decision=boot image=debian12 reason=host_boots_image_debian12 format=ipxe"),
			ev("v6", 216.5, "lab", "edge1", m, proto.EventArtifactStart, "file=vmlinuz size=8000000 cache=hit"),
			ev("v7", 217.5, "lab", "edge1", m, proto.EventArtifactEnd, "file=vmlinuz status=complete bytes=8000000 http_status=200"),
		)
		r := runMain(t, ctx, url, "host", "timeline", m, since)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("code %d stderr %q", r.code, r.stderr)
		}
		want := "\nnote: iPXE waited 15 s for IPv6: no router advertisements on this segment (the edge sends them with --ipv6-ra; is it off, or is the edge not on this segment?)\n"
		if !strings.Contains(r.stdout, want) {
			t.Errorf("no IPv6 wait note %q in:\n%s", want, r.stdout)
		}
	})
	t.Run("no events", func(t *testing.T) {
		r := runMain(t, ctx, url, "host", "timeline", "52:54:00:00:00:99")
		want := "52:54:00:00:00:99 (not a known host): no boot events since "
		if r.code != 0 || !strings.HasPrefix(r.stdout, want) {
			t.Errorf("code %d stdout %q, want prefix %q", r.code, r.stdout, want)
		}
	})
}
