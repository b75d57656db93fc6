package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
)

// NewDHCPClient opens a DHCPv4 client (raw socket) on the host's eth0, in
// its namespace. hw, if set, is the client MAC to use instead of eth0's.
func NewDHCPClient(h *Host, hw net.HardwareAddr, timeout time.Duration) (*nclient4.Client, error) {
	var c *nclient4.Client
	err := InNS(h.NS, func() error {
		opts := []nclient4.ClientOpt{nclient4.WithTimeout(timeout), nclient4.WithRetry(2)}
		if hw != nil {
			opts = append(opts, nclient4.WithHWAddr(hw))
		}
		var err error
		c, err = nclient4.New(h.Iface, opts...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("e2e: dhcp client in %s: %w", h.NS, err)
	}
	return c, nil
}

// PXERequest returns the modifiers that make a request look like a PXE ROM
// of client architecture arch (0 BIOS, 7 UEFI x64), and with ipxe like iPXE
// asking again (user class "iPXE" and an option 175), as in the requests
// QEMU's firmware sends.
func PXERequest(arch iana.Arch, ipxe bool) []dhcpv4.Modifier {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("PXEClient:Arch:%05d:UNDI:002001", uint16(arch)))),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 2, 1}),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionBootfileName, dhcpv4.OptionTFTPServerName, dhcpv4.OptionVendorSpecificInformation),
	}
	if ipxe {
		mods = append(mods,
			dhcpv4.WithUserClass("iPXE", false),
			// 175: iPXE encapsulated options; 19.1 = HTTP, 17.1 = PXE ext.
			dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{19, 1, 1, 17, 1, 1}))
	}
	return mods
}

// BootFile is the boot file of a reply: option 67 when present, else the
// legacy header field.
func BootFile(m *dhcpv4.DHCPv4) string {
	if f := m.BootFileNameOption(); f != "" {
		return f
	}
	return m.BootFileName
}

// TFTPGet fetches file from server with tftp-hpa inside the host's namespace
// and returns its contents.
func TFTPGet(ctx context.Context, h *Host, server, file string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "e2e-tftp-")
	if err != nil {
		return nil, fmt.Errorf("e2e: tftp: %w", err)
	}
	defer os.RemoveAll(dir)
	dst := filepath.Join(dir, "out")
	cmd := h.Command(ctx, "tftp", "-m", "binary", server, "-c", "get", file, dst)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("e2e: tftp get %s from %s: %w: %s", file, server, err, out)
	}
	// tftp-hpa exits 0 on some errors and says so on its output.
	if bytes.Contains(out, []byte("Error")) || bytes.Contains(out, []byte("Transfer timed out")) {
		return nil, fmt.Errorf("e2e: tftp get %s from %s: %s", file, server, out)
	}
	return os.ReadFile(dst)
}
