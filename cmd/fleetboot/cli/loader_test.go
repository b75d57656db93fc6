package cli_test

import (
	"testing"
)

// TestLoaderAddFlagErrors: loader add refuses flags that do not fit its
// kind with one line, before it connects to anything (no coordinator runs).
func TestLoaderAddFlagErrors(t *testing.T) {
	dir := t.TempDir()
	shim := writeFile(t, dir, "shimx64.efi.signed", "shim")
	grub := writeFile(t, dir, "grubnetx64.efi.signed", "grub")
	env := []string{"FLEETBOOT_NATS=nats://127.0.0.1:1"}
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"no kind", []string{"loader", "add", "x", "--shim", shim}, `fleetboot: loader add: invalid loader kind "": want ipxe, shim-grub or grub (--kind)` + "\n"},
		{"unknown kind", []string{"loader", "add", "x", "--kind", "syslinux"}, `fleetboot: loader add: invalid loader kind "syslinux": want ipxe, shim-grub or grub (--kind)` + "\n"},
		{"bad arch", []string{"loader", "add", "x", "--kind", "grub", "--grub", grub, "--arch", "ia32"}, `fleetboot: loader add: invalid --arch "ia32": want x64 or arm64` + "\n"},
		{"shim without grub", []string{"loader", "add", "x", "--kind", "shim-grub", "--shim", shim}, "fleetboot: loader add: --kind shim-grub needs --shim FILE and --grub FILE\n"},
		{"bios with shim-grub", []string{"loader", "add", "x", "--kind", "shim-grub", "--shim", shim, "--grub", grub, "--bios", shim}, "fleetboot: loader add: --bios does not go with --kind shim-grub (it takes --shim and --grub)\n"},
		{"shim with ipxe", []string{"loader", "add", "x", "--kind", "ipxe", "--shim", shim}, "fleetboot: loader add: --shim does not go with --kind ipxe (it takes --bios and --efi)\n"},
		{"ipxe without files", []string{"loader", "add", "x", "--kind", "ipxe"}, "fleetboot: loader add: --kind ipxe needs --bios FILE, --efi FILE or both\n"},
		{"grub without file", []string{"loader", "add", "x", "--kind", "grub"}, "fleetboot: loader add: --kind grub needs --grub FILE\n"},
		{"missing file", []string{"loader", "add", "x", "--kind", "grub", "--grub", dir + "/nope"}, "fleetboot: loader add: grub file: stat " + dir + "/nope: no such file or directory\n"},
		{"directory", []string{"loader", "add", "x", "--kind", "grub", "--grub", dir}, "fleetboot: loader add: grub file " + dir + " is not a regular file\n"},
		{"missing module", []string{"loader", "add", "x", "--kind", "grub", "--grub", grub, "--module", dir + "/nope.mod"}, "fleetboot: loader add: grub-module file: stat " + dir + "/nope.mod: no such file or directory\n"},
		{"module not a file name", []string{"loader", "add", "x", "--kind", "grub", "--grub", grub, "--module", dir + "/.hidden.mod"}, "fleetboot: loader add: --module " + dir + "/.hidden.mod: invalid file name \".hidden.mod\": 1 to 128 characters, not starting with '.'\n"},
		{"module directory", []string{"loader", "add", "x", "--kind", "shim-grub", "--shim", shim, "--grub", grub, "--module", dir}, "fleetboot: loader add: grub-module file " + dir + " is not a regular file\n"},
		{"bad name", []string{"loader", "add", "Shim", "--kind", "grub", "--grub", grub}, `fleetboot: invalid loader name "Shim": use lower-case letters, digits, '.', '_' or '-', starting with a letter or digit (at most 64)` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, env, tt.args...)
			if r.code == 0 || r.stderr != tt.stderr {
				t.Errorf("exit %d, stderr %q\nwant non-zero, %q", r.code, r.stderr, tt.stderr)
			}
		})
	}
}
