package service

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

func loaderFile(fw, role, name string, c byte) proto.LoaderFile {
	return proto.LoaderFile{Firmware: fw, Artifact: proto.Artifact{Role: role, Name: name, Key: "sha256/" + sha(c), Size: 10, SHA256: sha(c)}}
}

func shimLoader(name string) proto.Loader {
	return proto.Loader{Name: name, Kind: proto.LoaderShimGrub, Files: []proto.LoaderFile{
		loaderFile(proto.FirmwareX64, proto.RoleShim, "bootx64.efi", 'c'),
		loaderFile(proto.FirmwareX64, proto.RoleGrub, "grubx64.efi", 'd'),
	}}
}

func TestAddLoader(t *testing.T) {
	with := func(l proto.Loader, edit func(*proto.Loader)) proto.Loader {
		l.Files = append([]proto.LoaderFile(nil), l.Files...)
		edit(&l)
		return l
	}
	good := shimLoader("shim-debian")
	tests := []struct {
		name    string
		in      proto.Loader
		wantErr string // "" = accepted
	}{
		{"shim and grub for x64", good, ""},
		{"ipxe bios and efi", proto.Loader{Name: "ipxe2", Kind: proto.LoaderIPXE, Files: []proto.LoaderFile{
			loaderFile(proto.FirmwareBIOS, proto.RoleIPXE, "undionly.kpxe", 'c'),
			loaderFile(proto.FirmwareX64, proto.RoleIPXE, "snponly.efi", 'd'),
		}}, ""},
		{"grub arm64", proto.Loader{Name: "grub-arm", Kind: proto.LoaderGrub, Files: []proto.LoaderFile{
			loaderFile(proto.FirmwareARM64, proto.RoleGrub, "grubnetaa64.efi", 'c'),
		}}, ""},
		{"shim-grub with GRUB modules", with(good, func(l *proto.Loader) {
			l.Files = append(l.Files,
				loaderFile(proto.FirmwareX64, proto.RoleGrubModule, "x86_64-efi/http.mod", 'e'),
				loaderFile(proto.FirmwareX64, proto.RoleGrubModule, "x86_64-efi/command.lst", 'b'))
		}), ""},
		{"grub arm64 with a module", proto.Loader{Name: "grub-arm-mod", Kind: proto.LoaderGrub, Files: []proto.LoaderFile{
			loaderFile(proto.FirmwareARM64, proto.RoleGrub, "grubnetaa64.efi", 'c'),
			loaderFile(proto.FirmwareARM64, proto.RoleGrubModule, "arm64-efi/http.mod", 'e'),
		}}, ""},
		{"module in ipxe loader", proto.Loader{Name: "ipxe3", Kind: proto.LoaderIPXE, Files: []proto.LoaderFile{
			loaderFile(proto.FirmwareX64, proto.RoleIPXE, "ipxe.efi", 'c'),
			loaderFile(proto.FirmwareX64, proto.RoleGrubModule, "x86_64-efi/http.mod", 'e'),
		}}, `no "grub-module" file`},
		{"module of the other platform", with(good, func(l *proto.Loader) {
			l.Files = append(l.Files, loaderFile(proto.FirmwareX64, proto.RoleGrubModule, "arm64-efi/http.mod", 'e'))
		}), "want x86_64-efi/FILE"},
		{"module outside the platform dir", with(good, func(l *proto.Loader) {
			l.Files = append(l.Files, loaderFile(proto.FirmwareX64, proto.RoleGrubModule, "http.mod", 'e'))
		}), "invalid GRUB module name"},
		{"module with traversal", with(good, func(l *proto.Loader) {
			l.Files = append(l.Files, loaderFile(proto.FirmwareX64, proto.RoleGrubModule, "x86_64-efi/../grub.cfg", 'e'))
		}), "invalid GRUB module name"},
		{"module twice", with(good, func(l *proto.Loader) {
			m := loaderFile(proto.FirmwareX64, proto.RoleGrubModule, "x86_64-efi/http.mod", 'e')
			l.Files = append(l.Files, m, m)
		}), "two files named x86_64-efi/http.mod"},
		{"module alone is no chain", proto.Loader{Name: "mods", Kind: proto.LoaderGrub, Files: []proto.LoaderFile{
			loaderFile(proto.FirmwareX64, proto.RoleGrubModule, "x86_64-efi/http.mod", 'e'),
		}}, "boots no firmware"},
		{"bad name", with(good, func(l *proto.Loader) { l.Name = "Shim/x" }), "invalid loader name"},
		{"bad kind", with(good, func(l *proto.Loader) { l.Kind = "syslinux" }), "invalid loader kind"},
		{"shim without grub", with(good, func(l *proto.Loader) { l.Files = l.Files[:1] }), "boots no firmware"},
		{"no files", with(good, func(l *proto.Loader) { l.Files = nil }), "boots no firmware"},
		{"ipxe file in shim loader", with(good, func(l *proto.Loader) {
			l.Files = append(l.Files, loaderFile(proto.FirmwareBIOS, proto.RoleIPXE, "undionly.kpxe", 'e'))
		}), `no "ipxe" file`},
		{"grub under another name", with(good, func(l *proto.Loader) { l.Files[1].Name = "grubnetx64.efi.signed" }), "shim fetches GRUB as grubx64.efi"},
		{"bad firmware", with(good, func(l *proto.Loader) { l.Files[0].Firmware = "ia32" }), "invalid firmware"},
		{"two shims", with(good, func(l *proto.Loader) { l.Files = append(l.Files, l.Files[0]) }), "two x64 shim files"},
		{"no digest", with(good, func(l *proto.Loader) { l.Files[0].SHA256 = "" }), "needs a key, a size and a sha256"},
		{"file name with a slash", with(good, func(l *proto.Loader) { l.Files[0].Name = "../boot.efi" }), "invalid file name"},
		{"not in the store", with(good, func(l *proto.Loader) { l.Files[0].Key = "sha256/" + sha('f') }), "no such object"},
	}
	s := newService(t)
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshot(t, s)
			_, err := s.AddLoader(ctx, tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("AddLoader: %v", err)
				}
				got, err := s.GetLoader(ctx, tt.in.Name)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.in.Files, got.Files); diff != "" {
					t.Fatalf("stored files (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("AddLoader: %v, want invalid: …%s…", err, tt.wantErr)
			}
			if diff := cmp.Diff(before, snapshot(t, s)); diff != "" {
				t.Fatalf("a refused loader wrote (-before +after):\n%s", diff)
			}
		})
	}
}

// TestLoaderUsers: sites and hosts name only existing loaders that boot
// their image's firmware, and a loader in use is not removed.
func TestLoaderUsers(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	if _, err := s.AddLoader(ctx, shimLoader("shim")); err != nil {
		t.Fatal(err)
	}
	armOnly := proto.Loader{Name: "grub-arm", Kind: proto.LoaderGrub, Files: []proto.LoaderFile{
		loaderFile(proto.FirmwareARM64, proto.RoleGrub, "grubaa64.efi", 'c'),
	}}
	if _, err := s.AddLoader(ctx, armOnly); err != nil {
		t.Fatal(err)
	}
	labSite, err := s.GetSite(ctx, "lab")
	if err != nil {
		t.Fatal(err)
	}
	site := func(loader string) func() error {
		return func() error {
			in := labSite
			in.Loader = loader
			_, err := s.AddSite(ctx, in)
			return err
		}
	}
	host := func(mac, loader string) func() error {
		return func() error {
			_, err := s.SetHost(ctx, proto.HostSetRequest{MAC: mac, Loader: ptr(loader)})
			return err
		}
	}
	rm := func(name string) func() error { return func() error { return s.RemoveLoader(ctx, name) } }
	steps := []struct {
		name string
		do   func() error
		want error // nil = accepted
	}{
		{"site names a missing loader", site("nope"), ErrNotFound},
		{"host names a missing loader", host("52:54:00:00:00:01", "nope"), ErrNotFound},
		{"x86_64 host with an arm64-only loader", host("52:54:00:00:00:01", "grub-arm"), ErrInvalid},
		{"host with shim", host("52:54:00:00:00:01", "shim"), nil},
		{"shim in use by a host", rm("shim"), ErrConflict},
		{"host back to the default", host("52:54:00:00:00:01", ""), nil},
		{"site with grub-arm", site("grub-arm"), nil},
		{"grub-arm in use by a site", rm("grub-arm"), ErrConflict},
		{"shim unused", rm("shim"), nil},
		{"shim gone", rm("shim"), ErrNotFound},
		{"site back to the default", site(""), nil},
		{"grub-arm unused", rm("grub-arm"), nil},
	}
	for _, st := range steps {
		err := st.do()
		if st.want == nil && err != nil || st.want != nil && !errors.Is(err, st.want) {
			t.Fatalf("%s: %v, want %v", st.name, err, st.want)
		}
	}
	ls, err := s.ListLoaders(ctx)
	if err != nil || len(ls) != 0 {
		t.Fatalf("ListLoaders = %v, %v; want none left", ls, err)
	}
}
