package e2e

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// bootLimit bounds every wait for a VM: a deadline, not a timing assertion.
const bootLimit = 180 * time.Second

// startRef builds the reference environment (StartReference) for a test:
// dnsmasq for DHCP and TFTP, and with dc.EnableRA for IPv6 router
// advertisements too; Go's file server for HTTP.
func startRef(t *testing.T, dc DnsmasqConfig, script func(base string, r *http.Request) string) *Reference {
	t.Helper()
	RequireRoot(t)
	if testing.Short() {
		t.Skip("short mode: VM boots take tens of seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	assets, err := EnsureAssets(ctx, CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	return StartReference(t, LogDir(t), assets, dc, script)
}

// TestReferenceBoot proves the harness against reference servers (dnsmasq
// for DHCP+TFTP, Go's file server for HTTP) and logs each boot's wall time,
// the baseline fleetboot is compared with.
func TestReferenceBoot(t *testing.T) {
	t.Parallel()
	// Chain through undionly.kpxe even though QEMU's ROM is already iPXE:
	// the ROM's netdev uses the native virtio driver, undionly's the UNDI one.
	undionly := func(base string, r *http.Request) string {
		return "#!ipxe\niseq ${net0/chip} undionly || chain tftp://10.77.0.1/undionly.kpxe\n" +
			strings.TrimPrefix(PlainScript(base, r), "#!ipxe\n")
	}
	cases := []struct {
		name   string
		fw     Firmware
		noROM  bool
		dhcp   DnsmasqConfig
		script func(string, *http.Request) string
		// wantTFTP is a boot file dnsmasq must log as sent over TFTP.
		wantTFTP string
	}{
		// dnsmasq's own router advertisements (enable-ra) end iPXE's IPv6
		// wait, as they do for dnsmasq's users.
		{name: "bios-ipxe-rom", fw: BIOS, dhcp: DnsmasqConfig{NoPXEDHCP: true, EnableRA: true}, script: PlainScript},
		// The one reference boot with no advertisements on the segment:
		// it still boots, after iPXE's IPv6 wait, the time its TIMING line
		// shows next to bios-ipxe-rom's.
		{name: "bios-ipxe-rom-no-ra", fw: BIOS, dhcp: DnsmasqConfig{NoPXEDHCP: true}, script: PlainScript},
		{name: "bios-undionly", fw: BIOS, dhcp: DnsmasqConfig{NoPXEDHCP: true, EnableRA: true}, script: undionly, wantTFTP: "undionly.kpxe"},
		{name: "uefi-snponly", fw: UEFI, noROM: true, dhcp: DnsmasqConfig{NoPXEDHCP: true, EnableRA: true, EFIFile: "snponly.efi"}, script: PlainScript, wantTFTP: "snponly.efi"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := startRef(t, tc.dhcp, tc.script)
			vm := e.Net.StartVM(t, e.Dir, VMConfig{Firmware: tc.fw, NoROM: tc.noROM})
			m, err := vm.WaitMarker(bootLimit)
			if err != nil {
				t.Fatal(err)
			}
			if err := vm.CheckMarker(m, "console=ttyS0", "fleetboot.ref=1", "fleetboot.mac="+vm.Config.MAC); err != nil {
				t.Error(err)
			}
			t.Logf("TIMING reference %s: power-on to marker %.1fs", tc.name, m.Elapsed.Seconds())
			reqs := e.HTTP.Lines()
			for _, want := range []string{"GET /boot.ipxe 200", "GET /vmlinuz 200", "GET /initrd.gz 200"} {
				if !strings.Contains(reqs, want) {
					t.Errorf("http log lacks %q:\n%s", want, reqs)
				}
			}
			if tc.wantTFTP != "" && !regexp.MustCompile(`sent \S*`+regexp.QuoteMeta(tc.wantTFTP)).MatchString(e.DHCP.Output()) {
				t.Errorf("dnsmasq did not send %s over TFTP:\n%s", tc.wantTFTP, lastLines(e.DHCP.Output(), 40))
			}
		})
	}
}

// TestReferenceDHCPChain checks the harness's DHCP and TFTP clients against
// dnsmasq: a classic BIOS PXE request gets undionly.kpxe, which TFTP serves
// byte for byte, and iPXE's second request gets the HTTP script.
func TestReferenceDHCPChain(t *testing.T) {
	t.Parallel()
	e := startRef(t, DnsmasqConfig{BIOSFile: "undionly.kpxe", EFIFile: "snponly.efi", NoPing: true}, PlainScript)
	cli := e.Net.AddHost(t, "cli", "10.77.0.50", "")
	checkPXEChain(t, cli, RefServer, e.Base+"/boot.ipxe", nil)
}
