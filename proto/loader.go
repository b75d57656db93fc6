package proto

import (
	"fmt"
	"strings"
	"time"
)

// Loader kinds: the boot chain a machine's firmware starts.
const (
	LoaderIPXE     = "ipxe"      // iPXE, then its script over HTTP (today's default)
	LoaderShimGrub = "shim-grub" // Secure Boot: signed shim, then signed GRUB from the same directory
	LoaderGrub     = "grub"      // GRUB alone (no Secure Boot)
)

// Firmware architectures a loader file is for, from DHCP option 93.
const (
	FirmwareBIOS  = "bios"  // arch 0
	FirmwareX64   = "x64"   // arch 7, 9: UEFI x86-64
	FirmwareARM64 = "arm64" // arch 11: UEFI arm64
)

// Loader file roles (LoaderFile.Role).
const (
	RoleIPXE = "ipxe"
	RoleShim = "shim"
	RoleGrub = "grub"
	// RoleGrubModule: a file GRUB reads from its prefix directory once it
	// runs (a module, x86_64-efi/http.mod; a list, x86_64-efi/command.lst),
	// named <platform>/<file> (GrubModuleName) and asked for at
	// GrubModulePath. Not a link of the chain: a loader may have any number.
	RoleGrubModule = "grub-module"
)

// GrubPrefix is the directory GRUB's network images have compiled in as
// their prefix (Debian's grubnetx64 and grubnetaa64: /grub), on the server
// they were loaded from: GRUB asks for modules and lists there, not beside
// itself in the loader's directory.
const GrubPrefix = "grub"

// GrubPlatform is GRUB's name for a firmware architecture: the directory of
// its modules under the prefix.
func GrubPlatform(firmware string) string {
	switch firmware {
	case FirmwareX64:
		return "x86_64-efi"
	case FirmwareARM64:
		return "arm64-efi"
	}
	return ""
}

// GrubModuleName is the name a GRUB module file of firmware has in a loader:
// <platform>/<file>, the path under GRUB's prefix.
func GrubModuleName(firmware, file string) string {
	return GrubPlatform(firmware) + "/" + file
}

// GrubModulePath is the TFTP (and HTTP) path GRUB asks for a module named
// name (GrubModuleName): grub/x86_64-efi/http.mod.
func GrubModulePath(name string) string {
	return GrubPrefix + "/" + name
}

// ValidGrubModuleName checks a module's name in a loader against its
// firmware: GRUB's platform directory for it, then one file name.
func ValidGrubModuleName(firmware, name string) error {
	platform, file, ok := strings.Cut(name, "/")
	if !ok || platform != GrubPlatform(firmware) || platform == "" {
		return fmt.Errorf("invalid GRUB module name %q for %s firmware: want %s/FILE", name, firmware, GrubPlatform(firmware))
	}
	if err := ValidFileName(file); err != nil {
		return fmt.Errorf("invalid GRUB module name %q: %v", name, err)
	}
	return nil
}

// GrubModule returns the loader's GRUB module of name (GrubModuleName).
func (l Loader) GrubModule(name string) (LoaderFile, bool) {
	for _, f := range l.Files {
		if f.Role == RoleGrubModule && f.Name == name {
			return f, true
		}
	}
	return LoaderFile{}, false
}

// LoaderFile is one file of a loader, stored in the artifact store like an
// image's artifacts, for one firmware architecture.
type LoaderFile struct {
	Firmware string `json:"firmware"` // FirmwareBIOS, FirmwareX64 or FirmwareARM64
	Artifact        // Role is RoleIPXE, RoleShim, RoleGrub or RoleGrubModule; Name as the firmware fetches it
}

// Loader is a named boot chain and its files.
type Loader struct {
	V       int          `json:"v"`
	Name    string       `json:"name"`
	Kind    string       `json:"kind"` // LoaderIPXE, LoaderShimGrub or LoaderGrub
	Files   []LoaderFile `json:"files"`
	Updated time.Time    `json:"updated"`
}

// GrubName is the file name shim fetches GRUB under, from shim's own
// directory: shim has it compiled in per architecture.
func GrubName(firmware string) string {
	if firmware == FirmwareARM64 {
		return "grubaa64.efi"
	}
	return "grubx64.efi"
}

// LoaderPath is the TFTP (and HTTP) path of a loader's file on an edge. The
// DHCP answer names it and the edge's TFTP server serves it: both use this
// one function. shim fetches GRUB relative to its own path, so a loader's
// files share one directory.
func LoaderPath(loader, file string) string {
	return "loaders/" + loader + "/" + file
}

// File returns the loader's file of a role for a firmware architecture.
func (l Loader) File(firmware, role string) (LoaderFile, bool) {
	for _, f := range l.Files {
		if f.Firmware == firmware && f.Role == role {
			return f, true
		}
	}
	return LoaderFile{}, false
}

// Chain is the files a firmware of this architecture fetches, in order: the
// DHCP boot file first. Empty when the loader has nothing for it.
func (l Loader) Chain(firmware string) []LoaderFile {
	var roles []string
	switch l.Kind {
	case LoaderShimGrub:
		roles = []string{RoleShim, RoleGrub}
	case LoaderGrub:
		roles = []string{RoleGrub}
	case LoaderIPXE:
		roles = []string{RoleIPXE}
	}
	var out []LoaderFile
	for _, r := range roles {
		f, ok := l.File(firmware, r)
		if !ok {
			return nil // a chain with a missing link boots nothing
		}
		out = append(out, f)
	}
	return out
}

// Firmwares lists the architectures the loader has a whole chain for.
func (l Loader) Firmwares() []string {
	var out []string
	for _, fw := range []string{FirmwareBIOS, FirmwareX64, FirmwareARM64} {
		if len(l.Chain(fw)) > 0 {
			out = append(out, fw)
		}
	}
	return out
}

// FirmwareOfArch is the firmware architectures that can boot an image of
// arch (Image.Arch).
func FirmwareOfArch(arch string) []string {
	if arch == "arm64" {
		return []string{FirmwareARM64}
	}
	return []string{FirmwareBIOS, FirmwareX64}
}

// ValidLoaderKind checks a loader kind.
func ValidLoaderKind(kind string) error {
	switch kind {
	case LoaderIPXE, LoaderShimGrub, LoaderGrub:
		return nil
	}
	return fmt.Errorf("invalid loader kind %q: want ipxe, shim-grub or grub", kind)
}
