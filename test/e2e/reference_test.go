package e2e

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// bootLimit bounds every wait for a VM: a deadline, not a timing assertion.
const bootLimit = 180 * time.Second

// refEnv is one reference run: a network with a server host running dnsmasq
// and a Go HTTP server that serves the boot assets.
type refEnv struct {
	net    *Network
	srv    *Host
	dir    string
	assets Assets
	http   *RequestLog
	base   string
	dhcp   *Proc
}

const refCmdline = "console=ttyS0 panic=-1 fleetboot.ref=1"

// startRef builds the reference environment. script renders boot.ipxe for
// the request (the VM's MAC is in the query).
func startRef(t *testing.T, dc DnsmasqConfig, ra bool, script func(base string, r *http.Request) string) *refEnv {
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
	e := &refEnv{dir: LogDir(t), assets: assets}
	e.net = NewNetwork(t, "10.77.0.0/24")
	e.srv = e.net.AddHost(t, "srv", "10.77.0.1", "")
	if ra {
		rtr := e.net.AddHost(t, "rtr", "10.77.0.254", "fd77::fe/64")
		StartRouterAdverts(t, rtr, e.dir)
	}
	mux := http.NewServeMux()
	var base string
	mux.HandleFunc("GET /boot.ipxe", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, script(base, r))
	})
	mux.HandleFunc("GET /vmlinuz", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, assets.Kernel) })
	mux.HandleFunc("GET /initrd.gz", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, assets.Initrd) })
	mux.HandleFunc("GET /live.iso", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, assets.ISO) })
	e.http = NewRequestLog(mux)
	base = ServeHTTP(t, e.srv, "10.77.0.1:8080", e.http)
	e.base = base
	dc.Iface = e.srv.Iface
	dc.RangeStart, dc.RangeEnd = "10.77.0.100", "10.77.0.200"
	if dc.IPXEURL == "" {
		dc.IPXEURL = base + "/boot.ipxe"
	}
	e.dhcp = StartDnsmasq(t, e.srv, e.dir, dc)
	return e
}

func plainScript(base string, _ *http.Request) string {
	return BootScript(base, "vmlinuz", "initrd.gz", refCmdline+" fleetboot.mac=${net0/mac}")
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
			strings.TrimPrefix(plainScript(base, r), "#!ipxe\n")
	}
	cases := []struct {
		name   string
		fw     Firmware
		noROM  bool
		dhcp   DnsmasqConfig
		ra     bool
		script func(string, *http.Request) string
		// wantTFTP is a boot file dnsmasq must log as sent over TFTP.
		wantTFTP string
	}{
		{name: "bios-ipxe-rom", fw: BIOS, dhcp: DnsmasqConfig{NoPXEDHCP: true}, ra: true, script: plainScript},
		{name: "bios-ipxe-rom-no-ra", fw: BIOS, dhcp: DnsmasqConfig{NoPXEDHCP: true}, script: plainScript},
		{name: "bios-undionly", fw: BIOS, dhcp: DnsmasqConfig{NoPXEDHCP: true}, ra: true, script: undionly, wantTFTP: "undionly.kpxe"},
		{name: "uefi-snponly", fw: UEFI, noROM: true, dhcp: DnsmasqConfig{NoPXEDHCP: true, EFIFile: "snponly.efi"}, ra: true, script: plainScript, wantTFTP: "snponly.efi"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := startRef(t, tc.dhcp, tc.ra, tc.script)
			vm := e.net.StartVM(t, e.dir, VMConfig{Firmware: tc.fw, NoROM: tc.noROM})
			m, err := vm.WaitMarker(bootLimit)
			if err != nil {
				t.Fatal(err)
			}
			if err := vm.CheckMarker(m, "console=ttyS0", "fleetboot.ref=1", "fleetboot.mac="+vm.Config.MAC); err != nil {
				t.Error(err)
			}
			t.Logf("TIMING reference %s: power-on to marker %.1fs", tc.name, m.Elapsed.Seconds())
			reqs := e.http.Lines()
			for _, want := range []string{"GET /boot.ipxe 200", "GET /vmlinuz 200", "GET /initrd.gz 200"} {
				if !strings.Contains(reqs, want) {
					t.Errorf("http log lacks %q:\n%s", want, reqs)
				}
			}
			if tc.wantTFTP != "" && !regexp.MustCompile(`sent \S*`+regexp.QuoteMeta(tc.wantTFTP)).MatchString(e.dhcp.Output()) {
				t.Errorf("dnsmasq did not send %s over TFTP:\n%s", tc.wantTFTP, lastLines(e.dhcp.Output(), 40))
			}
		})
	}
}

// TestReferenceDHCPChain checks the harness's DHCP and TFTP clients against
// dnsmasq: a classic BIOS PXE request gets undionly.kpxe, which TFTP serves
// byte for byte, and iPXE's second request gets the HTTP script.
func TestReferenceDHCPChain(t *testing.T) {
	t.Parallel()
	e := startRef(t, DnsmasqConfig{BIOSFile: "undionly.kpxe", EFIFile: "snponly.efi", NoPing: true}, false, plainScript)
	cli := e.net.AddHost(t, "cli", "10.77.0.50", "")
	checkPXEChain(t, cli, "10.77.0.1", e.base+"/boot.ipxe", nil)
}
