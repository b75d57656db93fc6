package proto

import "testing"

func TestHarmlessTFTPMiss(t *testing.T) {
	for name, want := range map[string]bool{
		"revocations_sku.efi":                   true,
		"loaders/sb/revocations_sbat.efi":       true,
		"shim_certificate_0.efi":                true,
		"grub/x86_64-efi/command.lst":           true,
		`grub\arm64-efi\fs.lst`:                 true,
		"grub/grub.cfg-01-52-54-00-12-34-56":    true,
		"grub/grub.cfg":                         false,
		"grubx64.efi":                           false,
		"artifacts/deb/vmlinuz":                 false,
		"grub/x86_64-efi/normal.mod":            false,
		"lists/command.lst":                     false,
		"loaders/sb/shim_certificate_0.efi.bak": false,
	} {
		if got := HarmlessTFTPMiss(name); got != want {
			t.Errorf("HarmlessTFTPMiss(%q) = %v, want %v", name, got, want)
		}
	}
}
