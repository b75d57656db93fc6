package dhcp

import (
	"fmt"
	"strings"
)

// BootFiles names the bootstrap binaries served over TFTP (and HTTP for UEFI
// HTTP boot). The defaults are the file names of Debian's ipxe package.
type BootFiles struct {
	BIOS   string // arch 0: undionly.kpxe (uses the PXE ROM's UNDI driver)
	EFI64  string // arch 7, 9: ipxe.efi, or snponly.efi to use the firmware's NIC driver
	ARM64  string // arch 11: ipxe-arm64.efi
	Script string // path of the iPXE script on the edge's HTTP server: boot.ipxe
}

func (b BootFiles) withDefaults() BootFiles {
	if b.BIOS == "" {
		b.BIOS = "undionly.kpxe"
	}
	if b.EFI64 == "" {
		b.EFI64 = "ipxe.efi"
	}
	if b.ARM64 == "" {
		b.ARM64 = "ipxe-arm64.efi"
	}
	if b.Script == "" {
		b.Script = "boot.ipxe"
	}
	return b
}

// Boot is the boot-file decision for one request.
type Boot struct {
	File   string // empty: no boot file
	TFTP   bool   // File is a TFTP path (siaddr/option 66 point at the TFTP server)
	Reason string // which row of the table decided, for logs, events and explain
}

// BootFor applies the boot-file table of DESIGN.md §1. It is pure: the same
// machine always gets the same answer, whatever the mode or the host.
func BootFor(m Machine, files BootFiles, httpBase string) Boot {
	files = files.withDefaults()
	base := strings.TrimRight(httpBase, "/")
	switch {
	case m.IsIPXE:
		// Always the script, whatever the firmware under iPXE: handing iPXE
		// an iPXE binary again is the endless chainload loop of the seeds.
		return Boot{File: base + "/" + strings.TrimLeft(files.Script, "/"), Reason: "ipxe: script over http"}
	case !m.HasArch && !m.IsPXE && !m.IsHTTPClient:
		return Boot{Reason: "not a network boot client"}
	case !m.HasArch:
		return Boot{Reason: "network boot client without an architecture (option 93)"}
	case m.Arch == ArchEFIx64HTTP && m.IsHTTPClient:
		return Boot{File: base + "/" + files.EFI64, Reason: "arch 16 uefi http boot: ipxe over http"}
	case m.Arch == ArchBIOS:
		return Boot{File: files.BIOS, TFTP: true, Reason: "arch 0 bios pxe"}
	case m.Arch == ArchEFIx64 || m.Arch == ArchEFIBC:
		return Boot{File: files.EFI64, TFTP: true, Reason: fmt.Sprintf("arch %d uefi x86-64 pxe", m.Arch)}
	case m.Arch == ArchEFIarm64:
		return Boot{File: files.ARM64, TFTP: true, Reason: "arch 11 uefi arm64 pxe"}
	}
	return Boot{Reason: fmt.Sprintf("unknown client architecture %d: no boot file", m.Arch)}
}
