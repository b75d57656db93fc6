package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/insomniacslk/dhcp/iana"
)

// checkPXEChain plays the firmware's DHCP exchanges from a client host: per
// client architecture the first (PXE ROM) reply must name the right iPXE
// build over TFTP, that file must come whole over TFTP, and the request that
// iPXE sends next must get the HTTP script: the chainload loop is broken.
// The iPXE reply must start with ipxeURL (a server may add a query).
// register, if not nil, is called with each client MAC before its exchange
// (fleetboot answers only machines it knows, by default).
func checkPXEChain(t *testing.T, cli *Host, server, ipxeURL string, register func(t *testing.T, mac string)) {
	t.Helper()
	cases := []struct {
		name string
		arch iana.Arch
		ipxe bool
		want []string // acceptable boot files
	}{
		{name: "bios-pxe", arch: iana.INTEL_X86PC, want: []string{"undionly.kpxe"}},
		{name: "uefi-x64-pxe", arch: iana.EFI_X86_64, want: []string{"snponly.efi", "ipxe.efi"}},
		{name: "bios-ipxe", arch: iana.INTEL_X86PC, ipxe: true},
		{name: "uefi-x64-ipxe", arch: iana.EFI_X86_64, ipxe: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mac := RandomMAC()
			hw, err := net.ParseMAC(mac)
			if err != nil {
				t.Fatal(err)
			}
			if register != nil {
				register(t, mac)
			}
			c, err := NewDHCPClient(cli, hw, 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			lease, err := c.Request(ctx, PXERequest(tc.arch, tc.ipxe)...)
			if err != nil {
				t.Fatalf("DORA: %v", err)
			}
			got := BootFile(lease.ACK)
			if tc.ipxe {
				if !strings.HasPrefix(got, ipxeURL) {
					t.Errorf("iPXE's boot file %q does not start with %q: the chainload loop is not broken", got, ipxeURL)
				}
				return
			}
			if !slices.Contains(tc.want, filepath.Base(got)) {
				t.Errorf("boot file %q, want one of %v", got, tc.want)
			}
			next := lease.ACK.ServerIPAddr.String()
			if next != server {
				t.Errorf("next-server: %s", cmp.Diff(server, next))
			}
			data, err := TFTPGet(ctx, cli, next, got)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join(IPXEDir, filepath.Base(got)))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, want) {
				t.Errorf("TFTP %s: got %d bytes, want the %d bytes of %s", got, len(data), len(want), filepath.Join(IPXEDir, filepath.Base(got)))
			}
		})
	}
}
