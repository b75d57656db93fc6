package proto

import (
	"strings"
	"testing"
)

// TestValidGrubModuleName: a module is named under GRUB's directory for its
// firmware, one file deep, as GRUB asks for it at its prefix.
func TestValidGrubModuleName(t *testing.T) {
	tests := []struct {
		firmware, name string
		wantErr        string // "" = valid
	}{
		{FirmwareX64, "x86_64-efi/http.mod", ""},
		{FirmwareX64, "x86_64-efi/command.lst", ""},
		{FirmwareARM64, "arm64-efi/http.mod", ""},
		{FirmwareARM64, "x86_64-efi/http.mod", "want arm64-efi/FILE"},
		{FirmwareX64, "http.mod", "want x86_64-efi/FILE"},
		{FirmwareX64, "x86_64-efi/", "invalid file name"},
		{FirmwareX64, "x86_64-efi/../grub.cfg", "invalid file name"},
		{FirmwareX64, "x86_64-efi/a/b.mod", "invalid file name"},
		{FirmwareX64, "x86_64-efi/.hidden", "invalid file name"},
		{FirmwareBIOS, "i386-pc/http.mod", "want /FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.firmware+" "+tt.name, func(t *testing.T) {
			err := ValidGrubModuleName(tt.firmware, tt.name)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if got := GrubModulePath(tt.name); got != "grub/"+tt.name {
					t.Errorf("GrubModulePath = %q", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want …%s…", err, tt.wantErr)
			}
		})
	}
}
