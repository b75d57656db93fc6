package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// TestFleetbootCoordinatorDown is issue 7's promise to branch offices, with
// the built binary: the coordinator (and the NATS server it embeds) stops
// mid-run and the edge keeps booting the machines it knows — over DHCP,
// TFTP and HTTP — also after a restart of its own, from its snapshot. When
// the coordinator comes back, the events of the outage arrive, once each and
// in the order the edge recorded them.
//
// This edge gives UEFI clients snponly.efi, the other iPXE build (TestFleetboot
// boots the default, ipxe.efi), and drains for 2 s on stop: with NATS down
// its events wait on disk, not in the drain.
func TestFleetbootCoordinatorDown(t *testing.T) {
	t.Parallel()
	e := startFleetboot(t, fbOptions{dhcpMode: "full", images: []string{"img-a"},
		edgeArgs: []string{"--efi-boot-file", "snponly.efi", "--drain", "2s"}})
	macUEFI, macBIOS := RandomMAC(), RandomMAC()
	e.setHost(t, macUEFI, "--image", "img-a", "--site", site)
	e.setHost(t, macBIOS, "--image", "img-a", "--site", site)
	// Without the coordinator the edge cannot learn where the artifact store
	// is, so what it serves must be in its cache: the assignment prefetches it.
	e.waitCached(t, "img-a")

	stopped := time.Now()
	e.coord.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.edge.WaitFor(ctx, regexp.MustCompile(`NATS disconnected`)); err != nil {
		t.Fatalf("edge did not notice the coordinator stopped: %v", err)
	}

	// The edge alone, with DHCP, TFTP and HTTP: a UEFI machine (OVMF's PXE
	// client) boots through snponly.efi.
	{
		_, m := e.boot(t, VMConfig{MAC: macUEFI, Firmware: UEFI, NoROM: true, Name: "uefi-coordinator-down"}, "img-a")
		if !regexp.MustCompile(`(^| )initrd=\S+`).MatchString(m.Cmdline) {
			t.Errorf("cmdline %q has no initrd= added by the edge", m.Cmdline)
		}
		lines := e.edgeLines(macUEFI)
		for _, re := range []*regexp.Regexp{
			regexp.MustCompile(`msg="dhcp: ack".*arch=7 .*file=snponly\.efi`),
			regexp.MustCompile(`msg=script .*decision=boot image=img-a`),
		} {
			if !slices.ContainsFunc(lines, re.MatchString) {
				t.Errorf("edge log for %s lacks %s:\n%s", macUEFI, re, strings.Join(lines, "\n"))
			}
		}
		if findLine(e.edge.Output(), regexp.MustCompile(`msg=sent .*component=tftp .*file=snponly\.efi `)) == "" {
			t.Errorf("edge log has no TFTP transfer of snponly.efi")
		}
	}

	// The edge restarts with the coordinator still down: it serves the
	// machines of its snapshot. Processes are started on this test's t, not
	// a subtest's, so they live as long as the deployment.
	{
		e.edge.Stop()
		// The snapshot the restarted edge serves from holds both machines.
		e.checkSnapshot(t, macUEFI, macBIOS)
		e.startEdge(t, "edge-2", regexp.MustCompile(`state loaded from snapshot.* hosts=2 `))
		e.boot(t, VMConfig{MAC: macBIOS, Firmware: BIOS, Name: "bios-edge-restarted"}, "img-a")
		lines := strings.Split(e.edge.Output(), "\n")
		for _, re := range []*regexp.Regexp{
			regexp.MustCompile(`msg="dhcp: ack".*mac=` + macBIOS),
			regexp.MustCompile(`msg=script .*mac=` + macBIOS + `.*decision=boot image=img-a`),
		} {
			if !slices.ContainsFunc(lines, re.MatchString) {
				t.Errorf("restarted edge's log lacks %s", re)
			}
		}
		if findLine(e.edge.Output(), regexp.MustCompile(`state in sync`)) != "" {
			t.Errorf("restarted edge says it synced while the coordinator is down")
		}
	}

	// The coordinator is back: the events of the outage arrive.
	{
		e.startCoordinator(t, "coordinator-2")
		// A last event, recorded after the outage: the edge sends its
		// buffer in order, so once this one is stored every earlier one
		// has been sent too.
		e.barrier(t, macBIOS)
		for _, c := range []struct {
			mac  string
			want []string
		}{
			{macUEFI, []string{proto.EventDHCPDiscover, proto.EventDHCPOffer, proto.EventDHCPRequest, proto.EventDHCPAck,
				proto.EventTFTPStart, proto.EventTFTPDone, proto.EventScript, proto.EventArtifactStart, proto.EventArtifactEnd}},
			{macBIOS, []string{proto.EventDHCPDiscover, proto.EventDHCPOffer, proto.EventDHCPRequest, proto.EventDHCPAck,
				proto.EventScript, proto.EventArtifactStart, proto.EventArtifactEnd}},
		} {
			events, err := e.events(c.mac)
			if err != nil {
				t.Fatal(err)
			}
			checkOnceInOrder(t, c.mac, events)
			var during []proto.Event
			for _, ev := range events {
				if ev.Time.After(stopped) && ev.Detail["platform"] != probePlatform && ev.Detail["platform"] != barrierPlatform {
					during = append(during, ev)
				}
			}
			seen := map[string]bool{}
			for _, ev := range during {
				seen[ev.Kind] = true
				if ev.Site != site || ev.Edge != edgeName {
					t.Errorf("event site/edge %s/%s, want %s/%s: %+v", ev.Site, ev.Edge, site, edgeName, ev)
				}
			}
			if missing := slices.DeleteFunc(slices.Clone(c.want), func(k string) bool { return seen[k] }); len(missing) > 0 {
				t.Errorf("%s: events of the outage lack %v; got %v", c.mac, missing, kindsOf(during))
			}
			t.Logf("%s: %d events stored, %d of them recorded during the outage: %v", c.mac, len(events), len(during), kindsOf(during))
		}
		e.checkTFTP(t, macUEFI, "snponly.efi")
		// The edge advertised with the coordinator down, also after its
		// restart from the snapshot (the site's mode comes from it).
		e.checkNoIPv6Wait(t, macUEFI)
		e.checkNoIPv6Wait(t, macBIOS)
	}
}

// barrierPlatform marks the script request that closes an outage.
const barrierPlatform = "e2ebarrier"

// barrier asks the edge for mac's script once more and waits until the event
// of that request is stored by the coordinator.
func (e *fbEnv) barrier(t *testing.T, mac string) {
	t.Helper()
	resp, err := e.srv.HTTPClient(5 * time.Second).Get("http://" + edgeHTTP + "/boot.ipxe?mac=" + mac + "&arch=x86_64&platform=" + barrierPlatform)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("script for %s after the outage: %s", mac, resp.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		events, err := e.eventsWith("--host", mac, "--kind", proto.EventScript)
		if err == nil && slices.ContainsFunc(events, func(ev proto.Event) bool { return ev.Detail["platform"] == barrierPlatform }) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the edge's events never reached the restarted coordinator (last err %v):\n%s", err, lastLines(e.edge.Output(), 30))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// checkOnceInOrder asserts events (as the stream holds them) has no event
// twice and keeps the order the edge recorded: IDs are <buffer epoch>-<seq>,
// the sequence counting every event of the edge's buffer directory.
func checkOnceInOrder(t *testing.T, mac string, events []proto.Event) {
	t.Helper()
	ids := map[string]bool{}
	var epoch string
	var last uint64
	for i, ev := range events {
		if ids[ev.ID] {
			t.Errorf("%s: event %s stored twice: %+v", mac, ev.ID, ev)
		}
		ids[ev.ID] = true
		cut := strings.LastIndex(ev.ID, "-")
		seq, err := strconv.ParseUint(ev.ID[cut+1:], 10, 64)
		if cut < 0 || err != nil {
			t.Errorf("%s: event ID %q is not <epoch>-<seq>", mac, ev.ID)
			continue
		}
		if i == 0 {
			epoch = ev.ID[:cut]
		} else if ev.ID[:cut] != epoch {
			t.Errorf("%s: event %s from another buffer than %s: the edge kept one state dir", mac, ev.ID, epoch)
		} else if seq <= last {
			t.Errorf("%s: event %s stored after %s-%d: out of order", mac, ev.ID, epoch, last)
		}
		last = seq
	}
	if len(ids) != len(events) {
		t.Errorf("%s: %d events, %d distinct IDs", mac, len(events), len(ids))
	}
}

// waitCached waits until the edge has fetched the image's kernel and initrd
// into its cache.
func (e *fbEnv) waitCached(t *testing.T, image string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, a := range e.image(t, image).Artifacts {
		re := regexp.MustCompile(`msg="cache: fetched" .*sha256=` + a.SHA256)
		if _, err := e.edge.WaitFor(ctx, re); err != nil {
			t.Fatalf("edge did not prefetch %s of %s: %v", a.Name, image, err)
		}
	}
}

// checkSnapshot asserts the edge's snapshot on disk holds the MACs.
func (e *fbEnv) checkSnapshot(t *testing.T, macs ...string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(flagValue(e.edgeArgs, "--state-dir"), "state.json"))
	if err != nil {
		t.Fatalf("edge snapshot: %v", err)
	}
	var snap struct {
		Site  *proto.Site  `json:"site"`
		Hosts []proto.Host `json:"hosts"`
	}
	if err := json.Unmarshal(data, &snap); err != nil {
		t.Fatalf("edge snapshot: %v", err)
	}
	if snap.Site == nil || snap.Site.Name != site {
		t.Errorf("edge snapshot has site %+v, want %s", snap.Site, site)
	}
	var got []string
	for _, h := range snap.Hosts {
		got = append(got, h.MAC)
	}
	for _, m := range macs {
		if !slices.Contains(got, m) {
			t.Errorf("edge snapshot lacks %s: hosts %v", m, got)
		}
	}
}
