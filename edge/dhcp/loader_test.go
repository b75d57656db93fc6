package dhcp

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/fleetboot/fleetboot/proto"
)

func testLoaderFile(fw, role, name string) proto.LoaderFile {
	return proto.LoaderFile{Firmware: fw, Artifact: proto.Artifact{Role: role, Name: name}}
}

// TestBootWithLoader: the boot file by client architecture, loader kind
// and whose loader it is (host's, site's, none).
func TestBootWithLoader(t *testing.T) {
	loaders := map[string]proto.Loader{
		"shim": {Name: "shim", Kind: proto.LoaderShimGrub, Files: []proto.LoaderFile{
			testLoaderFile(proto.FirmwareX64, proto.RoleShim, "bootx64.efi"),
			testLoaderFile(proto.FirmwareX64, proto.RoleGrub, "grubx64.efi"),
		}},
		"ipxe-snp": {Name: "ipxe-snp", Kind: proto.LoaderIPXE, Files: []proto.LoaderFile{
			testLoaderFile(proto.FirmwareBIOS, proto.RoleIPXE, "ipxe.pxe"),
			testLoaderFile(proto.FirmwareX64, proto.RoleIPXE, "snponly.efi"),
		}},
		"grub-arm": {Name: "grub-arm", Kind: proto.LoaderGrub, Files: []proto.LoaderFile{
			testLoaderFile(proto.FirmwareARM64, proto.RoleGrub, "grubnetaa64.efi"),
		}},
		"ipxe-bios": {Name: "ipxe-bios", Kind: proto.LoaderIPXE, Files: []proto.LoaderFile{
			testLoaderFile(proto.FirmwareBIOS, proto.RoleIPXE, "ipxe.pxe"),
		}},
	}
	pxe := func(arch uint16) Machine { return Machine{Arch: arch, HasArch: true, IsPXE: true} }
	httpBoot := Machine{Arch: ArchEFIx64HTTP, HasArch: true, IsHTTPClient: true}
	files := BootFiles{}
	const base = "http://10.0.0.1:8080"
	tests := []struct {
		name       string
		m          Machine
		host, site string // loader names; host "" = the site's
		known      bool
		wantFile   string
		wantTFTP   bool
		wantFallbk bool
	}{
		{"bios, no loader", pxe(ArchBIOS), "", "", true, "undionly.kpxe", true, false},
		{"x64, no loader", pxe(ArchEFIx64), "", "", true, "ipxe.efi", true, false},
		{"arm64, no loader", pxe(ArchEFIarm64), "", "", true, "ipxe-arm64.efi", true, false},
		{"x64, host shim", pxe(ArchEFIx64), "shim", "", true, "loaders/shim/bootx64.efi", true, false},
		{"arch 9, host shim", pxe(ArchEFIBC), "shim", "", true, "loaders/shim/bootx64.efi", true, false},
		{"x64, site shim", pxe(ArchEFIx64), "", "shim", true, "loaders/shim/bootx64.efi", true, false},
		{"x64, unknown MAC, site shim", pxe(ArchEFIx64), "", "shim", false, "loaders/shim/bootx64.efi", true, false},
		{"x64, host ipxe-snp over site shim", pxe(ArchEFIx64), "ipxe-snp", "shim", true, "loaders/ipxe-snp/snponly.efi", true, false},
		{"bios, host ipxe-snp", pxe(ArchBIOS), "ipxe-snp", "", true, "loaders/ipxe-snp/ipxe.pxe", true, false},
		{"bios, site shim: no bios file", pxe(ArchBIOS), "", "shim", true, "undionly.kpxe", true, true},
		{"arm64, site shim: no arm64 file", pxe(ArchEFIarm64), "", "shim", true, "ipxe-arm64.efi", true, true},
		{"arm64, host grub-arm", pxe(ArchEFIarm64), "grub-arm", "", true, "loaders/grub-arm/grubnetaa64.efi", true, false},
		{"x64, host grub-arm: no x64 file", pxe(ArchEFIx64), "grub-arm", "", true, "ipxe.efi", true, true},
		{"ipxe client, host shim: still the script", Machine{Arch: ArchEFIx64, HasArch: true, IsIPXE: true}, "shim", "", true, base + "/boot.ipxe", false, false},
		{"uefi http boot, no loader: ipxe over http", httpBoot, "", "", true, base + "/ipxe.efi", false, false},
		{"uefi http boot, host shim: ipxe over http", httpBoot, "shim", "", true, base + "/ipxe.efi", false, true},
		{"uefi http boot, site grub-arm: ipxe over http", httpBoot, "", "grub-arm", true, base + "/ipxe.efi", false, true},
		{"uefi http boot, host ipxe-snp: its x64 file over http", httpBoot, "ipxe-snp", "", true, base + "/loaders/ipxe-snp/snponly.efi", false, false},
		{"uefi http boot, site ipxe-snp, unknown MAC", httpBoot, "", "ipxe-snp", false, base + "/loaders/ipxe-snp/snponly.efi", false, false},
		{"uefi http boot, host ipxe-bios: no x64 file", httpBoot, "ipxe-bios", "", true, base + "/ipxe.efi", false, true},
		{"arch 16 without HTTPClient, host ipxe-snp: nothing", Machine{Arch: ArchEFIx64HTTP, HasArch: true}, "ipxe-snp", "", true, "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := LoaderFor(proto.Host{Loader: tt.host}, tt.known, proto.Site{Loader: tt.site})
			var l *proto.Loader
			if found, ok := loaders[name]; ok {
				l = &found
			}
			b, fallback := BootWith(tt.m, l, files, base)
			got := []any{b.File, b.TFTP, fallback}
			want := []any{tt.wantFile, tt.wantTFTP, tt.wantFallbk}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("file, tftp, fallback (-want +got):\n%s\nreason: %s", diff, b.Reason)
			}
		})
	}
}

// TestHandlerFollowsLoader: the handler takes the loader from its source,
// names the loader's file in the reply, and logs a fallback once per
// loader and architecture however often the machine asks.
func TestHandlerFollowsLoader(t *testing.T) {
	shim := proto.Loader{Name: "shim", Kind: proto.LoaderShimGrub, Files: []proto.LoaderFile{
		testLoaderFile(proto.FirmwareX64, proto.RoleShim, "bootx64.efi"),
		testLoaderFile(proto.FirmwareX64, proto.RoleGrub, "grubx64.efi"),
	}}
	host := proto.Host{MAC: knownMAC, Site: "lab", State: proto.StateBoot, Loader: "shim"}
	f := newFixture(t, testSite(proto.DHCPFull, proto.UnknownIgnore), "", nil, host)
	f.st.PutLoader(shim)
	var logs bytes.Buffer
	f.h.cfg.Loaders = f.st
	f.h.log = slog.New(slog.NewTextHandler(&logs, nil))

	tests := []struct {
		name string
		mods []dhcpv4.Modifier
		want string
	}{
		{"uefi x64: shim", pxe(7), "loaders/shim/bootx64.efi"},
		{"bios: no bios file, default", pxe(0), "undionly.kpxe"},
		{"bios again", pxe(0), "undionly.kpxe"},
	}
	for _, tt := range tests {
		got := viewOf(f.handle(t, pkt(t, dhcpv4.MessageTypeDiscover, knownMAC, tt.mods...), 67))
		if got.File != tt.want || got.Opt67 != tt.want {
			t.Errorf("%s: file %q, option 67 %q; want %q", tt.name, got.File, got.Opt67, tt.want)
		}
	}
	if n := strings.Count(logs.String(), "loader not used for this client"); n != 1 {
		t.Errorf("fallback logged %d times, want once:\n%s", n, logs.String())
	}
}

// TestHandlerHTTPBootLoader: a UEFI HTTP boot client whose host names an
// ipxe loader is offered the loader's x64 file as an http URL, with the
// HTTPClient echo OVMF needs and the edge as the server; one whose host
// names a shim-grub loader gets iPXE over HTTP, and the log says why.
func TestHandlerHTTPBootLoader(t *testing.T) {
	const shimMAC = "02:00:00:00:00:42"
	ipxe := proto.Loader{Name: "ipxe-snp", Kind: proto.LoaderIPXE, Files: []proto.LoaderFile{
		testLoaderFile(proto.FirmwareX64, proto.RoleIPXE, "snponly.efi"),
	}}
	shim := proto.Loader{Name: "shim", Kind: proto.LoaderShimGrub, Files: []proto.LoaderFile{
		testLoaderFile(proto.FirmwareX64, proto.RoleShim, "bootx64.efi"),
		testLoaderFile(proto.FirmwareX64, proto.RoleGrub, "grubx64.efi"),
	}}
	f := newFixture(t, testSite(proto.DHCPFull, proto.UnknownIgnore), "", nil,
		proto.Host{MAC: knownMAC, Site: "lab", State: proto.StateBoot, Loader: ipxe.Name},
		proto.Host{MAC: shimMAC, Site: "lab", State: proto.StateBoot, Loader: shim.Name})
	f.st.PutLoader(ipxe)
	f.st.PutLoader(shim)
	var logs bytes.Buffer
	f.h.cfg.Loaders = f.st
	f.h.log = slog.New(slog.NewTextHandler(&logs, nil))

	tests := []struct {
		name, mac string
		mods      []dhcpv4.Modifier
		want      *view
	}{
		{"ipxe loader", knownMAC, httpClient(), &view{File: httpBase + "/loaders/ipxe-snp/snponly.efi", Opt60: "HTTPClient", SIAddr: edgeIP}},
		{"shim-grub loader: ipxe over http", shimMAC, httpClient(), &view{File: httpBase + "/ipxe.efi", Opt60: "HTTPClient", SIAddr: edgeIP}},
		{"ipxe loader, iPXE itself: the script", knownMAC, append(httpClient(), ipxeUserClass), &view{File: httpBase + "/boot.ipxe", Opt60: "HTTPClient", SIAddr: edgeIP}},
	}
	for _, tt := range tests {
		r := viewOf(f.handle(t, pkt(t, dhcpv4.MessageTypeDiscover, tt.mac, tt.mods...), 67))
		if r == nil {
			t.Fatalf("%s: no reply", tt.name)
		}
		if r.Opt67 != r.File {
			t.Errorf("%s: option 67 %q differs from file %q", tt.name, r.Opt67, r.File)
		}
		got := &view{File: r.File, Opt60: r.Opt60, SIAddr: r.SIAddr}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
	if !strings.Contains(logs.String(), "loader shim (shim-grub) is not for UEFI HTTP boot, Debian's signed GRUB has no http module") {
		t.Errorf("the shim-grub fallback is not logged with its reason:\n%s", logs.String())
	}
}
