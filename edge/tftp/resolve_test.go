package tftp

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // empty: refused
	}{
		{"plain", "undionly.kpxe", "undionly.kpxe"},
		{"leading slash", "/undionly.kpxe", "undionly.kpxe"},
		{"many leading slashes", "///ipxe.efi", "ipxe.efi"},
		{"subdirectory", "grub/grub.cfg", "grub/grub.cfg"},
		{"backslashes", `\EFI\BOOT\bootx64.efi`, "EFI/BOOT/bootx64.efi"},
		{"mixed separators", `/grub\grub.cfg-01-aa-bb-cc-dd-ee-ff`, "grub/grub.cfg-01-aa-bb-cc-dd-ee-ff"},
		{"dot elements", "./a/./b", "a/b"},
		{"double slash", "a//b", "a/b"},
		{"percent-encoded dots stay literal", "%2e%2e/%2e%2e/etc/passwd", "%2e%2e/%2e%2e/etc/passwd"},
		{"sibling prefix is just a name", "../ipxe-other/x", ""},
		{"dotdot", "../etc/passwd", ""},
		{"absolute dotdot", "/../../etc/passwd", ""},
		{"dotdot in the middle", "a/../../b", ""},
		{"dotdot that stays inside", "a/../b", ""},
		{"backslash dotdot", `..\..\etc\passwd`, ""},
		{"trailing dotdot", "a/..", ""},
		{"nul", "undionly.kpxe\x00.txt", ""},
		{"newline", "a\nb", ""},
		{"del", "a\x7fb", ""},
		{"empty", "", ""},
		{"root", "/", ""},
		{"dot", ".", ""},
		{"too long", strings.Repeat("a", maxPath+1), ""},
		{"dots in a name are fine", "a..b", "a..b"},
		{"three dots are a name", "...", "..."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("Resolve(%q) = %q, want refusal", tc.in, got)
				}
				if !errors.Is(err, ErrBadPath) {
					t.Errorf("err = %v, want ErrBadPath", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("Resolve(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzResolve(f *testing.F) {
	for _, s := range []string{"undionly.kpxe", "/a/b", `\a\..\b`, "../x", "a\x00b", "%2e%2e", "....//", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := Resolve(in)
		if err != nil {
			return
		}
		if !filepath.IsLocal(got) {
			t.Fatalf("Resolve(%q) = %q is not local", in, got)
		}
		for _, elem := range strings.Split(got, "/") {
			if elem == ".." || elem == "." || elem == "" {
				t.Fatalf("Resolve(%q) = %q has element %q", in, got, elem)
			}
		}
		if strings.ContainsAny(got, "\\\x00") {
			t.Fatalf("Resolve(%q) = %q", in, got)
		}
		if again, err := Resolve(got); err != nil || again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", in, got, again, err)
		}
	})
}
