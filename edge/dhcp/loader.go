package dhcp

import (
	"fmt"
	"strings"

	"github.com/fleetboot/fleetboot/proto"
)

// LoaderSource looks up boot loaders by name (the edge's copy of the
// loaders bucket); nil knows none.
type LoaderSource interface {
	Loader(name string) (proto.Loader, bool)
}

// LoaderFor names the loader whose chain a machine boots: its host's, else
// its site's. "" means today's iPXE from BootFiles.
func LoaderFor(host proto.Host, known bool, site proto.Site) string {
	if known && host.Loader != "" {
		return host.Loader
	}
	return site.Loader
}

// Firmware maps a client architecture (option 93) to the loader files'
// firmware; false for architectures loaders do not cover.
func Firmware(arch uint16) (string, bool) {
	switch arch {
	case ArchBIOS:
		return proto.FirmwareBIOS, true
	case ArchEFIx64, ArchEFIBC:
		return proto.FirmwareX64, true
	case ArchEFIarm64:
		return proto.FirmwareARM64, true
	}
	return "", false
}

// BootWith is BootFor with a loader: a PXE client whose firmware the loader
// has a chain for gets the chain's first file (shim for shim-grub) at its
// proto.LoaderPath over TFTP. A UEFI HTTP boot client gets the http URL of
// an ipxe loader's x64 file, which the edge serves from its cache at the
// same path. Anything else gets BootFor's answer; fallback then tells that
// l had nothing for this client, and the reason says why. iPXE clients
// keep BootFor's answer, the script: handing iPXE a loader again would
// loop.
func BootWith(m Machine, l *proto.Loader, files BootFiles, httpBase string) (b Boot, fallback bool) {
	b = BootFor(m, files, httpBase)
	if l == nil || m.IsIPXE || b.File == "" {
		return b, false
	}
	if !b.TFTP {
		return httpBootWith(m, l, b, httpBase)
	}
	fw, ok := Firmware(m.Arch)
	if !ok {
		return b, true
	}
	chain := l.Chain(fw)
	if len(chain) == 0 {
		return b, true
	}
	return Boot{
		File:   proto.LoaderPath(l.Name, chain[0].Name),
		TFTP:   true,
		Reason: fmt.Sprintf("%s: loader %s (%s)", b.Reason, l.Name, l.Kind),
	}, false
}

// httpBootWith is BootWith for a UEFI HTTP boot client, whose default b is
// iPXE over HTTP. Only an ipxe loader changes it: its x64 file over HTTP.
// A GRUB chain cannot boot over HTTP with Debian's signed GRUB, which has
// no http module: started from an http URL it could read neither its
// grub.cfg nor the image, so such a client keeps iPXE over HTTP. (Under
// Secure Boot that unsigned iPXE does not start either: such machines boot
// the loader by PXE.)
func httpBootWith(m Machine, l *proto.Loader, b Boot, httpBase string) (Boot, bool) {
	switch l.Kind {
	case proto.LoaderIPXE:
		chain := l.Chain(proto.FirmwareX64)
		if len(chain) == 0 {
			b.Reason += fmt.Sprintf(" from the edge's --boot-dir: loader %s has no x64 file", l.Name)
			return b, true
		}
		return Boot{
			File:   strings.TrimRight(httpBase, "/") + "/" + proto.LoaderPath(l.Name, chain[0].Name),
			Reason: fmt.Sprintf("%s: loader %s (%s)", b.Reason, l.Name, l.Kind),
		}, false
	default:
		b.Reason += fmt.Sprintf(" from the edge's --boot-dir: loader %s (%s) is not for UEFI HTTP boot, Debian's signed GRUB has no http module", l.Name, l.Kind)
		return b, true
	}
}
