package proto

import (
	"path"
	"strings"
)

// HarmlessTFTPMiss tells whether a TFTP file name is one the Secure Boot
// chain asks for and goes on without (../shared/SECUREBOOT-FACTS.md):
// shim's revocation lists and certificate, GRUB's module lists under
// <prefix>/<platform>/ and its per-MAC and per-IP config names, tried before
// <prefix>/grub.cfg. The edge counts their refusals apart from the others
// and the timeline reports none of them.
func HarmlessTFTPMiss(name string) bool {
	clean := path.Clean("/" + strings.ReplaceAll(name, `\`, "/"))
	file := path.Base(clean)
	switch {
	case file == "revocations_sku.efi", file == "revocations_sbat.efi",
		strings.HasPrefix(file, "shim_certificate_") && strings.HasSuffix(file, ".efi"):
		return true
	case strings.HasPrefix(file, "grub.cfg-"):
		return true
	case strings.HasSuffix(file, ".lst") && strings.HasSuffix(path.Dir(clean), "-efi"):
		return true // x86_64-efi/command.lst, arm64-efi/fs.lst, ...
	}
	return false
}
