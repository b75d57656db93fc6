package dhcp

import (
	"fmt"

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
// proto.LoaderPath over TFTP. Anything else gets BootFor's answer;
// fallback then tells that l had nothing for this firmware. iPXE clients
// and UEFI HTTP boot keep BootFor's answer: the script, and iPXE over HTTP.
func BootWith(m Machine, l *proto.Loader, files BootFiles, httpBase string) (b Boot, fallback bool) {
	b = BootFor(m, files, httpBase)
	if l == nil || !b.TFTP {
		return b, false
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
