package dhcp

import (
	"encoding/hex"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/fleetboot/fleetboot/proto"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// goldenRequests builds DISCOVERs laid out as real firmware sends them (the
// option sets and order of iPXE 1.0.0+ (Debian 2019) in QEMU's NIC ROM, OVMF's
// PXE client and OVMF's HTTP boot client). They are written to testdata with
// -update and read back from there, so the files are the fixtures.
func goldenRequests(t *testing.T) map[string]*dhcpv4.DHCPv4 {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	guid := []byte{0, 0x8f, 0x2a, 0x1c, 0x55, 0x0b, 0x6e, 0x4d, 0x11, 0x9a, 0x70, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	gen := func(code uint8, v []byte) dhcpv4.Modifier {
		return dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(code), v))
	}
	build := func(xid [4]byte, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		p, err := dhcpv4.New(append([]dhcpv4.Modifier{
			dhcpv4.WithTransactionID(xid), dhcpv4.WithHwAddr(mac), dhcpv4.WithBroadcast(true),
			dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover),
		}, mods...)...)
		if err != nil {
			t.Fatal(err)
		}
		p.NumSeconds = 4
		return p
	}
	return map[string]*dhcpv4.DHCPv4{
		"ipxe-bios-discover": build([4]byte{0x7b, 0x1c, 0x45, 0x3e},
			gen(57, []byte{0x05, 0xc0}),
			gen(93, []byte{0, 0}),
			gen(94, []byte{1, 2, 1}),
			gen(60, []byte("PXEClient:Arch:00000:UNDI:002001")),
			gen(77, []byte("iPXE")),
			gen(55, []byte{1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132, 133, 134, 135, 175, 203}),
			gen(175, []byte{0xb1, 0x05, 0x01, 0x80, 0x86, 0x10, 0x0e, 0xeb, 0x03, 0x01, 0x00, 0x00, 0x17, 0x01, 0x01, 0x22, 0x01, 0x01, 0x13, 0x01, 0x01, 0x11, 0x01, 0x01, 0x27, 0x01, 0x01, 0x19, 0x01, 0x01, 0x10, 0x01, 0x02, 0x21, 0x01, 0x01, 0x15, 0x01, 0x01, 0x18, 0x01, 0x01, 0x12, 0x01, 0x01}),
			gen(61, append([]byte{1}, mac...)),
			gen(97, guid),
		),
		"ovmf-pxe-discover": build([4]byte{0x2c, 0x90, 0x13, 0x07},
			gen(57, []byte{0x05, 0xc0}),
			gen(55, []byte{1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135}),
			gen(97, guid),
			gen(94, []byte{1, 3, 0x10}),
			gen(93, []byte{0, 7}),
			gen(60, []byte("PXEClient:Arch:00007:UNDI:003016")),
		),
		"uefi-http-discover": build([4]byte{0x51, 0x0e, 0xa2, 0x99},
			gen(57, []byte{0x05, 0xc0}),
			gen(55, []byte{1, 3, 6, 15, 43, 60, 66, 67, 97}),
			gen(97, guid),
			gen(94, []byte{1, 3, 0x10}),
			gen(93, []byte{0, 16}),
			gen(60, []byte("HTTPClient:Arch:00016:UNDI:003001")),
		),
	}
}

func TestGolden(t *testing.T) {
	reqs := goldenRequests(t)
	cases := []struct{ req, mode string }{
		{"ipxe-bios-discover", proto.DHCPFull},
		{"ipxe-bios-discover", proto.DHCPProxy},
		{"ovmf-pxe-discover", proto.DHCPFull},
		{"ovmf-pxe-discover", proto.DHCPProxy},
		{"uefi-http-discover", proto.DHCPFull},
	}
	for _, tc := range cases {
		t.Run(tc.req+"/"+tc.mode, func(t *testing.T) {
			reqFile := filepath.Join("testdata", tc.req+".hex")
			if *update {
				writeFile(t, reqFile, hexLines(reqs[tc.req].ToBytes()))
			}
			raw := readHex(t, reqFile)
			req, err := dhcpv4.FromBytes(raw)
			if err != nil {
				t.Fatalf("%s: %v", reqFile, err)
			}
			f := newFixture(t, testSite(tc.mode, proto.UnknownDiscover), "", nil)
			resp := f.handle(t, req, 67)
			if resp == nil {
				t.Fatal("no reply")
			}
			got := resp.Summary() + "\n" + hexLines(resp.ToBytes())
			golden := filepath.Join("testdata", tc.req+"."+tc.mode+".reply.golden")
			if *update {
				writeFile(t, golden, got)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if d := cmp.Diff(string(want), got); d != "" {
				t.Errorf("reply differs from %s (-want +got):\n%s", golden, d)
			}
		})
	}
}

func hexLines(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b); i += 32 {
		sb.WriteString(hex.EncodeToString(b[i:min(i+32, len(b))]))
		sb.WriteByte('\n')
	}
	return sb.String()
}

func readHex(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	raw, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", ""))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return raw
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
