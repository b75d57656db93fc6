package cli

import (
	"fmt"
	"strings"

	"github.com/fleetboot/fleetboot/edge/dhcp"
	"github.com/fleetboot/fleetboot/proto"
)

// chainStep is one file of a machine's boot chain, in the order it is
// fetched.
type chainStep struct {
	Transport string `json:"transport"` // tftp or http
	File      string `json:"file"`
	Note      string `json:"note"`
}

// loaderMap is the loaders explain knows, as the DHCP handler asks for them.
type loaderMap map[string]proto.Loader

func (m loaderMap) Loader(name string) (proto.Loader, bool) {
	l, ok := m[name]
	return l, ok
}

// usesIPXE tells whether a chain ends in iPXE, which runs the edge's script.
func usesIPXE(steps []chainStep) bool {
	return len(steps) > 0 && strings.HasSuffix(steps[len(steps)-1].File, "/boot.ipxe")
}

// bootChain lists what a machine fetches after DHCP answered with boot
// file fw: the loader's files (when the answer is the loader's first
// file), then what the last of them fetches: iPXE its script over HTTP,
// GRUB its configuration and the image over TFTP.
func bootChain(fw dhcpStep, l *proto.Loader, arch uint16, im *proto.Image, edgeURL string) []chainStep {
	if fw.BootFile == "" {
		return nil
	}
	if arch == dhcp.ArchEFIx64HTTP && !fw.TFTP {
		return httpBootChain(fw, l, edgeURL)
	}
	var steps []chainStep
	first := chainStep{Transport: transport(fw.TFTP), File: fw.BootFile, Note: "DHCP boot file"}
	firmware, _ := dhcp.Firmware(arch)
	var files []proto.LoaderFile
	if l != nil {
		files = l.Chain(firmware)
	}
	if len(files) == 0 || fw.BootFile != proto.LoaderPath(l.Name, files[0].Name) {
		// Today's default (or a loader without a file for this firmware):
		// iPXE from the edge's --boot-dir, then its script.
		if fw.TFTP {
			first.Note += ", iPXE from the edge's --boot-dir"
			if l != nil {
				first.Note += fmt.Sprintf(": loader %s has no %s file", l.Name, orNone(firmware))
			}
		}
		steps = append(steps, first)
		if fw.TFTP || strings.HasSuffix(fw.BootFile, ".efi") {
			steps = append(steps, chainStep{"http", strings.TrimRight(edgeURL, "/") + "/boot.ipxe", "iPXE asks DHCP again and gets its script"})
		}
		return steps
	}
	for i, f := range files {
		step := chainStep{Transport: "tftp", File: proto.LoaderPath(l.Name, f.Name), Note: fmt.Sprintf("%s, sha256 %s", f.Role, short(f.SHA256))}
		if i == 0 {
			step.Note = "DHCP boot file, " + step.Note
		} else {
			step.Note = "fetched from the same directory, " + step.Note
		}
		steps = append(steps, step)
	}
	switch files[len(files)-1].Role {
	case proto.RoleIPXE:
		steps = append(steps, chainStep{"http", strings.TrimRight(edgeURL, "/") + "/boot.ipxe", "iPXE asks DHCP again and gets its script"})
	case proto.RoleGrub:
		steps = append(steps, chainStep{"tftp", "/grub/grub.cfg", "GRUB reads grub.cfg from its prefix"})
		if im != nil {
			for _, a := range im.Artifacts {
				if a.Role == proto.RoleKernel || a.Role == proto.RoleInitrd {
					steps = append(steps, chainStep{"tftp", "artifacts/" + im.Name + "/" + a.Name, a.Role + " of image " + im.Name})
				}
			}
		}
	}
	return steps
}

// httpBootChain is bootChain for a UEFI HTTP boot firmware: no TFTP at
// all. It fetches an ipxe loader's x64 file, or else iPXE from the edge's
// --boot-dir, by http URL, and iPXE then its script. A GRUB chain is never
// offered here (edge/dhcp BootWith): the note says why, for the operator
// who set one.
func httpBootChain(fw dhcpStep, l *proto.Loader, edgeURL string) []chainStep {
	base := strings.TrimRight(edgeURL, "/")
	first := chainStep{Transport: "http", File: fw.BootFile, Note: "DHCP boot file for UEFI HTTP boot"}
	var files []proto.LoaderFile
	if l != nil && l.Kind == proto.LoaderIPXE {
		files = l.Chain(proto.FirmwareX64)
	}
	switch {
	case len(files) > 0 && fw.BootFile == base+"/"+proto.LoaderPath(l.Name, files[0].Name):
		first.Note += fmt.Sprintf(", %s, sha256 %s, from the edge's cache", files[0].Role, short(files[0].SHA256))
	case l == nil:
		first.Note += ", iPXE from the edge's --boot-dir"
	case l.Kind == proto.LoaderIPXE:
		first.Note += fmt.Sprintf(", iPXE from the edge's --boot-dir: loader %s has no x64 file", l.Name)
	default:
		first.Note += fmt.Sprintf(", iPXE from the edge's --boot-dir: loader %s (%s) is not used for UEFI HTTP boot, "+
			"Debian's signed GRUB has no http module to read grub.cfg and the image; "+
			"this iPXE is unsigned and does not start under Secure Boot: boot such machines by PXE", l.Name, l.Kind)
	}
	return []chainStep{first, {"http", base + "/boot.ipxe", "iPXE asks DHCP again and gets its script"}}
}

func transport(tftp bool) string {
	if tftp {
		return "tftp"
	}
	return "http"
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
