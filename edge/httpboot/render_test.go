package httpboot

import (
	"errors"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetboot/fleetboot/proto"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const base = "http://10.0.0.1:8080"

func debian() *proto.Image {
	return &proto.Image{Name: "debian-12", Arch: "x86_64",
		Cmdline: "console=ttyS0,115200n8 hostname={{hostname}} ip={{ip}} fleetboot.edge={{edge}} site={{site}} img={{image}} mac={{mac}}",
		Artifacts: []proto.Artifact{
			{Role: proto.RoleKernel, Name: "vmlinuz", Key: "sha256/aa", Size: 10},
			{Role: proto.RoleInitrd, Name: "initrd.img", Key: "sha256/bb", Size: 20},
		}}
}

func liveos() *proto.Image {
	return &proto.Image{Name: "azl-live", Arch: "x86_64", Cmdline: "rd.live.image rd.shell console=ttyS0",
		Artifacts: []proto.Artifact{
			{Role: proto.RoleKernel, Name: "vmlinuz", Key: "k"},
			{Role: proto.RoleInitrd, Name: "initrd.img", Key: "i"},
			{Role: proto.RoleISO, Name: "azl-live.iso", Key: "iso"},
		}}
}

// microcode is debian() with the CPU's early microcode as a first initrd.
func microcode() *proto.Image {
	im := debian()
	im.Artifacts = []proto.Artifact{im.Artifacts[0],
		{Role: proto.RoleInitrd, Name: "amd-ucode.img", Key: "sha256/cc", Size: 5},
		im.Artifacts[1]}
	return im
}

func discovery() *proto.Image {
	return &proto.Image{Name: "discovery", Arch: "x86_64", Cmdline: "fleetboot.facts={{edge}}/api/v1/facts?mac={{mac}}",
		Artifacts: []proto.Artifact{
			{Role: proto.RoleKernel, Name: "vmlinuz", Key: "k"},
			{Role: proto.RoleInitrd, Name: "discovery.cpio.gz", Key: "i"},
		}}
}

func site(policy string) proto.Site {
	return proto.Site{Name: "lab", DHCP: proto.DHCPFull, Unknown: policy, DiscoveryImage: "discovery"}
}

func web01() *proto.Host {
	return &proto.Host{MAC: "52:54:00:12:34:56", Site: "lab", IP: "10.0.0.50", Hostname: "web01.lab", Image: "debian-12", State: proto.StateBoot}
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	file := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("golden file (run with -update to create): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", file, diff)
	}
}

func TestRenderGolden(t *testing.T) {
	withVars := web01()
	withVars.Vars = map[string]string{"role": "db", "disk": "/dev/nvme0n1", "empty": ""}
	varsImage := debian()
	varsImage.Cmdline = "role={{var.role}} inst.disk={{var.disk}} {{var.empty}} quiet"
	local := web01()
	local.State = proto.StateLocal
	noImage := web01()
	noImage.Image = ""
	ownBootif := debian()
	ownBootif.Cmdline = "BOOTIF=01-{{mac}} quiet"
	// The MAC the request names is an extra NIC of the host: the script
	// identifies the NIC that booted, not the primary MAC.
	multi := web01()
	multi.ExtraMACs = []string{"52:54:00:ab:cd:ef"}
	// An installer's callbacks, built from the template variables.
	callbackImage := debian()
	callbackImage.Cmdline = "inst.done={{callback}} inst.facts={{edge}}/api/v1/facts?mac={{mac}}&token={{token}}"

	tests := []struct {
		name     string
		in       Input
		grub     bool
		decision Decision
		status   int
	}{
		{name: "known-bios", in: Input{MAC: "52:54:00:12:34:56", Arch: "i386", Platform: "pcbios", Site: site(""), Host: web01(), Image: debian()},
			decision: Decision{Action: ActionBoot, Image: "debian-12", Reason: "host boots image debian-12"}, status: 200},
		{name: "known-uefi", in: Input{MAC: "52:54:00:12:34:56", Arch: "x86_64", Platform: "efi", Site: site(""), Host: web01(), Image: debian()},
			decision: Decision{Action: ActionBoot, Image: "debian-12", Reason: "host boots image debian-12"}, status: 200},
		{name: "known-extra-nic", in: Input{MAC: "52:54:00:ab:cd:ef", Arch: "x86_64", Platform: "efi", ClientIP: "10.0.0.77", Site: site(""), Host: multi, Image: debian()},
			decision: Decision{Action: ActionBoot, Image: "debian-12", Reason: "host boots image debian-12"}, status: 200},
		{name: "known-last-try", in: Input{MAC: "52:54:00:12:34:56", Arch: "x86_64", Platform: "efi", Try: MaxTries - 1, Site: site(""), Host: web01(), Image: debian()},
			decision: Decision{Action: ActionBoot, Image: "debian-12", Reason: "host boots image debian-12"}, status: 200},
		{name: "liveos", in: Input{MAC: "52:54:00:12:34:56", Arch: "x86_64", Platform: "efi", Site: site(""), Host: &proto.Host{MAC: "52:54:00:12:34:56", Image: "azl-live"}, Image: liveos()},
			decision: Decision{Action: ActionBoot, Image: "azl-live", Reason: "host boots image azl-live"}, status: 200},
		{name: "vars", in: Input{MAC: "52:54:00:12:34:56", Arch: "x86_64", Site: site(""), Host: withVars, Image: varsImage},
			decision: Decision{Action: ActionBoot, Image: "debian-12", Reason: "host boots image debian-12"}, status: 200},
		{name: "own-bootif", in: Input{MAC: "52:54:00:12:34:56", Site: site(""), Host: web01(), Image: ownBootif},
			decision: Decision{Action: ActionBoot, Image: "debian-12", Reason: "host boots image debian-12"}, status: 200},
		{name: "local-efi", in: Input{MAC: "52:54:00:12:34:56", Platform: "efi", Site: site(""), Host: local},
			decision: Decision{Action: ActionLocal, Reason: "host state is local"}, status: 200},
		{name: "local-bios", in: Input{MAC: "52:54:00:12:34:56", Platform: "pcbios", Site: site(""), Host: local},
			decision: Decision{Action: ActionLocal, Reason: "host state is local"}, status: 200},
		{name: "local-unknown-platform", in: Input{MAC: "52:54:00:12:34:56", Site: site(""), Host: local},
			decision: Decision{Action: ActionLocal, Reason: "host state is local"}, status: 200},
		{name: "no-image", in: Input{MAC: "52:54:00:12:34:56", Site: site(""), Host: noImage},
			decision: Decision{Action: ActionExit, Reason: "host has no image assigned"}, status: 200},
		{name: "image-missing", in: Input{MAC: "52:54:00:12:34:56", Arch: "x86_64", Platform: "efi", Site: site(""), Host: web01()},
			decision: Decision{Action: ActionMissing, Image: "debian-12", Reason: "image debian-12 is not known at this edge"}, status: 200},
		{name: "arch-mismatch", in: Input{MAC: "52:54:00:12:34:56", Arch: "arm64", Platform: "efi", Site: site(""), Host: web01(), Image: debian()},
			decision: Decision{Action: ActionInvalid, Image: "debian-12", Reason: "image debian-12 is for x86_64, the machine runs arm64"}, status: 200},
		{name: "unknown-ignore", in: Input{MAC: "52:54:00:00:00:01", Site: site(proto.UnknownIgnore)},
			decision: Decision{Action: ActionIgnore, Reason: "unknown host: site policy ignore"}, status: 404},
		{name: "unknown-default-policy", in: Input{MAC: "52:54:00:00:00:01", Site: site("")},
			decision: Decision{Action: ActionIgnore, Reason: "unknown host: site policy ignore"}, status: 404},
		{name: "unknown-exit", in: Input{MAC: "52:54:00:00:00:01", Site: site(proto.UnknownExit)},
			decision: Decision{Action: ActionExit, Reason: "unknown host: site policy exit"}, status: 200},
		{name: "unknown-discover", in: Input{MAC: "52:54:00:00:00:01", Arch: "x86_64", Platform: "efi", ClientIP: "10.0.0.99", Site: site(proto.UnknownDiscover), Image: discovery()},
			decision: Decision{Action: ActionDiscover, Image: "discovery", Reason: "unknown host: site policy discover"}, status: 200},
		{name: "unknown-discover-missing", in: Input{MAC: "52:54:00:00:00:01", Site: site(proto.UnknownDiscover)},
			decision: Decision{Action: ActionMissing, Image: "discovery", Reason: "image discovery is not known at this edge"}, status: 200},
		{name: "callback-token", in: Input{MAC: "52:54:00:12:34:56", Arch: "x86_64", Platform: "efi", Site: site(""), Host: web01(), Image: callbackImage, Token: "dG9rZW4tZm9yLXRlc3Rz"},
			decision: Decision{Action: ActionBoot, Image: "debian-12", Reason: "host boots image debian-12"}, status: 200},
		{name: "grub-callback-token", grub: true, in: Input{MAC: "52:54:00:12:34:56", Platform: "efi", Site: site(""), Host: web01(), Image: callbackImage, Token: "dG9rZW4tZm9yLXRlc3Rz"},
			decision: Decision{Action: ActionBoot, Image: "debian-12", Reason: "host boots image debian-12"}, status: 200},
		{name: "grub-known", grub: true, in: Input{MAC: "52:54:00:12:34:56", Platform: "efi", Site: site(""), Host: web01(), Image: debian()},
			decision: Decision{Action: ActionBoot, Image: "debian-12", Reason: "host boots image debian-12"}, status: 200},
		{name: "grub-liveos", grub: true, in: Input{MAC: "52:54:00:12:34:56", Platform: "efi", Site: site(""), Host: &proto.Host{MAC: "52:54:00:12:34:56", Image: "azl-live"}, Image: liveos()},
			decision: Decision{Action: ActionBoot, Image: "azl-live", Reason: "host boots image azl-live"}, status: 200},
		{name: "known-microcode", in: Input{MAC: "52:54:00:12:34:56", Arch: "x86_64", Platform: "efi", Site: site(""), Host: web01(), Image: microcode()},
			decision: Decision{Action: ActionBoot, Image: "debian-12", Reason: "host boots image debian-12"}, status: 200},
		{name: "grub-microcode", grub: true, in: Input{MAC: "52:54:00:12:34:56", Platform: "efi", Site: site(""), Host: web01(), Image: microcode()},
			decision: Decision{Action: ActionBoot, Image: "debian-12", Reason: "host boots image debian-12"}, status: 200},
		// Asked over TFTP (Debian's signed GRUB: no http module): the
		// kernel and initrds come over TFTP from the edge.
		{name: "grub-tftp-known", grub: true, in: Input{MAC: "52:54:00:12:34:56", Platform: "efi", Via: ViaTFTP, Site: site(""), Host: web01(), Image: debian()},
			decision: Decision{Action: ActionBoot, Image: "debian-12", Reason: "host boots image debian-12"}, status: 200},
		{name: "grub-tftp-callback-token", grub: true, in: Input{MAC: "52:54:00:12:34:56", Platform: "efi", Via: ViaTFTP, Site: site(""), Host: web01(), Image: callbackImage, Token: "dG9rZW4tZm9yLXRlc3Rz"},
			decision: Decision{Action: ActionBoot, Image: "debian-12", Reason: "host boots image debian-12"}, status: 200},
		{name: "grub-tftp-microcode", grub: true, in: Input{MAC: "52:54:00:12:34:56", Platform: "efi", Via: ViaTFTP, Site: site(""), Host: web01(), Image: microcode(), Token: "dG9rZW4tZm9yLXRlc3Rz"},
			decision: Decision{Action: ActionBoot, Image: "debian-12", Reason: "host boots image debian-12"}, status: 200},
		{name: "grub-tftp-liveos", grub: true, in: Input{MAC: "52:54:00:12:34:56", Platform: "efi", Via: ViaTFTP, Site: site(""), Host: &proto.Host{MAC: "52:54:00:12:34:56", Image: "azl-live"}, Image: liveos()},
			decision: Decision{Action: ActionBoot, Image: "azl-live", Reason: "host boots image azl-live"}, status: 200},
		{name: "grub-tftp-image-missing", grub: true, in: Input{MAC: "52:54:00:12:34:56", Platform: "efi", Via: ViaTFTP, Site: site(""), Host: web01()},
			decision: Decision{Action: ActionMissing, Image: "debian-12", Reason: "image debian-12 is not known at this edge"}, status: 200},
		{name: "grub-local", grub: true, in: Input{MAC: "52:54:00:12:34:56", Platform: "efi", Site: site(""), Host: local},
			decision: Decision{Action: ActionLocal, Reason: "host state is local"}, status: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.BaseURL = base
			render, ext := Render, ".ipxe"
			if tc.grub {
				render, ext = RenderGRUB, ".cfg"
			}
			s, err := render(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.decision, s.Decision); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			if s.Status != tc.status {
				t.Errorf("status = %d, want %d", s.Status, tc.status)
			}
			if !tc.grub {
				if err := checkIPXE(s); err != nil {
					t.Errorf("script fails the safety check: %v\n%s", err, s.Text)
				}
			}
			checkGolden(t, tc.name+ext, s.Text)
		})
	}
}

func TestChainAndFallbackGolden(t *testing.T) {
	chain, err := ChainScript(base)
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "chain.ipxe", chain)
	fb, err := GRUBFallback(base)
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "grub-fallback.cfg", fb)
}

func TestRenderBadInput(t *testing.T) {
	tests := []struct {
		name string
		in   Input
	}{
		{"no base", Input{MAC: "52:54:00:12:34:56"}},
		{"base with path", Input{BaseURL: base + "/x", MAC: "52:54:00:12:34:56"}},
		{"base with fragment", Input{BaseURL: base + "#x", MAC: "52:54:00:12:34:56"}},
		{"base with query", Input{BaseURL: base + "?a=b", MAC: "52:54:00:12:34:56"}},
		{"ftp base", Input{BaseURL: "ftp://10.0.0.1", MAC: "52:54:00:12:34:56"}},
		{"non-canonical MAC", Input{BaseURL: base, MAC: "52-54-00-12-34-56"}},
		{"bad MAC", Input{BaseURL: base, MAC: "zz"}},
		{"bad arch", Input{BaseURL: base, MAC: "52:54:00:12:34:56", Arch: "x86 64"}},
		{"bad platform", Input{BaseURL: base, MAC: "52:54:00:12:34:56", Platform: "${x}"}},
		{"negative try", Input{BaseURL: base, MAC: "52:54:00:12:34:56", Try: -1}},
		{"try too big", Input{BaseURL: base, MAC: "52:54:00:12:34:56", Try: MaxTries + 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Render(tc.in); err == nil {
				t.Error("Render accepted bad input")
			}
		})
	}
	if _, err := RenderGRUB(Input{BaseURL: "https://10.0.0.1", MAC: "52:54:00:12:34:56"}); !errors.Is(err, errHTTPS) {
		t.Errorf("RenderGRUB over https: err = %v, want errHTTPS", err)
	}
	// Over TFTP the HTTP scheme does not matter: only the edge's address.
	if _, err := RenderGRUB(Input{BaseURL: "https://10.0.0.1", MAC: "52:54:00:12:34:56", Via: ViaTFTP}); err != nil {
		t.Errorf("RenderGRUB over tftp with an https base: %v", err)
	}
	for _, render := range []func(Input) (Script, error){Render, RenderGRUB} {
		if _, err := render(Input{BaseURL: base, MAC: "52:54:00:12:34:56", Via: "ftp"}); err == nil {
			t.Error("unknown transport accepted")
		}
	}
}

// TestInjection feeds hostile host and image data to both renderers: each
// must refuse it (ActionInvalid) and the payload must not reach the script.
func TestInjection(t *testing.T) {
	const marker = "EVIL"
	hostile := []struct {
		name  string
		value string
	}{
		{"newline", "x\nshell " + marker},
		{"carriage return", "x\rshell " + marker},
		{"settings expansion", "${net0/mac}" + marker},
		{"and chain", "x&&shell" + marker},
		{"or chain", "x||shell" + marker},
		{"comment", "x#" + marker},
		{"space", "x shell" + marker},
		{"tab", "x\tshell" + marker},
		{"nul", "x\x00" + marker},
		{"unicode control", "x\u202e" + marker},
		{"unicode line separator", "x\u2028" + marker},
		{"single quote", "x'" + marker},
		{"double quote", "x\"" + marker},
		{"backslash", "x\\n" + marker},
		{"semicolon", "x;reboot" + marker},
	}
	type mutate func(h *proto.Host, im *proto.Image, v string)
	targets := []struct {
		name string
		f    mutate
	}{
		{"hostname", func(h *proto.Host, _ *proto.Image, v string) { h.Hostname = v }},
		{"var value", func(h *proto.Host, _ *proto.Image, v string) { h.Vars = map[string]string{"role": v} }},
		{"var name", func(h *proto.Host, _ *proto.Image, v string) { h.Vars = map[string]string{v: "x"} }},
		{"image cmdline", func(_ *proto.Host, im *proto.Image, v string) { im.Cmdline += " a=" + v }},
		{"kernel name", func(_ *proto.Host, im *proto.Image, v string) { im.Artifacts[0].Name = v }},
		{"initrd name", func(_ *proto.Host, im *proto.Image, v string) { im.Artifacts[1].Name = v }},
		{"host ip", func(h *proto.Host, _ *proto.Image, v string) { h.IP = v }},
	}
	for _, tg := range targets {
		for _, hv := range hostile {
			if tg.name == "image cmdline" && hv.name == "space" {
				continue // a space is the command line's own separator
			}
			t.Run(tg.name+"/"+hv.name, func(t *testing.T) {
				h, im := web01(), debian()
				im.Cmdline += " role={{var.role}}"
				h.Vars = map[string]string{"role": "ok"}
				tg.f(h, im, hv.value)
				in := Input{BaseURL: base, MAC: h.MAC, Arch: "x86_64", Platform: "efi", Site: site(""), Host: h, Image: im}
				grubTFTP := func(in Input) (Script, error) { in.Via = ViaTFTP; return RenderGRUB(in) }
				for _, render := range []func(Input) (Script, error){Render, RenderGRUB, grubTFTP} {
					s, err := render(in)
					if err != nil {
						t.Fatal(err)
					}
					if s.Decision.Action != ActionInvalid {
						t.Errorf("decision = %v, want %s", s.Decision, ActionInvalid)
					}
					if strings.HasPrefix(s.Text, "#!ipxe") {
						if err := checkIPXE(s); err != nil {
							t.Errorf("%v\n%s", err, s.Text)
						}
					}
					// The reason may quote the value, sanitized, in the
					// comment and echo lines; nowhere else.
					for _, l := range strings.Split(s.Text, "\n") {
						if strings.Contains(l, marker) && !strings.HasPrefix(l, "# fleetboot ") &&
							!strings.HasPrefix(l, "echo fleetboot: ") && !strings.HasPrefix(l, "echo 'fleetboot: ") {
							t.Errorf("payload reached a command line: %q", l)
						}
						if strings.Count(l, "'")%2 != 0 {
							t.Errorf("unbalanced quote in %q", l)
						}
					}
				}
			})
		}
	}
	// Two harmless values can form a hostile sequence side by side.
	t.Run("concatenation", func(t *testing.T) {
		h, im := web01(), debian()
		h.Vars = map[string]string{"a": "$", "b": "{net0/ip}"}
		im.Cmdline = "x={{var.a}}{{var.b}}"
		s, err := Render(Input{BaseURL: base, MAC: h.MAC, Site: site(""), Host: h, Image: im})
		if err != nil {
			t.Fatal(err)
		}
		if s.Decision.Action != ActionInvalid || strings.Contains(s.Text, "${net0/ip}") {
			t.Errorf("concatenated expansion not refused: %v\n%s", s.Decision, s.Text)
		}
	})
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"mac": "aa", "var.x": "1"}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "plain", in: "quiet", want: "quiet"},
		{name: "one", in: "m={{mac}}", want: "m=aa"},
		{name: "two adjacent", in: "{{mac}}{{var.x}}", want: "aa1"},
		{name: "single braces are literal", in: "a{b}c", want: "a{b}c"},
		{name: "unknown", in: "{{nope}}", wantErr: true},
		{name: "spaces inside", in: "{{ mac }}", wantErr: true},
		{name: "unterminated", in: "a={{mac", wantErr: true},
		{name: "stray close", in: "a}}", wantErr: true},
		{name: "close before open", in: "}}{{mac}}", wantErr: true},
		{name: "empty name", in: "{{}}", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := expand(tc.in, lookup)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrTemplate) {
				t.Errorf("err = %v, want ErrTemplate", err)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// checkIPXE is the fuzz oracle: every line of a rendered iPXE script is one
// of the commands the renderer writes, user data never adds a line or a
// command separator, and the kernel command line is made of safe tokens.
func checkIPXE(s Script) error {
	lines := strings.Split(strings.TrimSuffix(s.Text, "\n"), "\n")
	if lines[0] != "#!ipxe" {
		return errors.New("first line is not #!ipxe")
	}
	allowed := []string{"# fleetboot ", "echo fleetboot: ", "kernel --name ", "initrd --name ", "boot || goto retry",
		":retry", ":redhcp", ":giveup", ":efi", "sleep ", "chain --replace ", "dhcp && chain --replace ", "exit 1",
		"goto retry", "sanboot --no-describe --drive 0x80 ", "iseq ${platform} efi && goto efi || goto bios", ":bios"}
	for i, l := range lines[1:] {
		ok := false
		for _, a := range allowed {
			if strings.HasPrefix(l, a) {
				ok = true
			}
		}
		if !ok {
			return errors.New("unexpected line: " + l)
		}
		for _, c := range l {
			if c < 0x20 || c > 0x7e {
				return errors.New("control or non-ASCII character in line: " + l)
			}
		}
		if strings.HasPrefix(l, "iseq ") {
			continue
		}
		body := l
		for _, suffix := range []string{" || goto retry", " || goto redhcp", " || goto giveup", " || goto efi", " || exit 1"} {
			body = strings.TrimSuffix(body, suffix)
		}
		body = strings.TrimPrefix(body, "dhcp && ")
		if i == 0 {
			body = strings.TrimPrefix(body, "# ")
		}
		for _, seq := range []string{"${", "&&", "||", "#"} {
			if strings.Contains(body, seq) {
				return errors.New("line holds " + seq + ": " + l)
			}
		}
		if strings.HasPrefix(l, "kernel ") {
			f := strings.Fields(body)
			for _, tok := range f[3:] {
				if err := proto.ValidCmdlineToken(tok); err != nil {
					return err
				}
			}
		}
	}
	if s.Status != http.StatusOK && s.Status != http.StatusNotFound {
		return errors.New("unexpected status")
	}
	return nil
}

func FuzzRender(f *testing.F) {
	f.Add("web01", "role", "db", "console=ttyS0 role={{var.role}} h={{hostname}}", "vmlinuz", "x86_64", "efi", 0)
	f.Add("a\nb", "x", "${y}", "{{nope}}", "../k", "i386", "pcbios", 4)
	f.Add("", "k", "a&&b", "x=#{{mac}}", "k", "", "", 2)
	f.Fuzz(func(t *testing.T, hostname, vname, vval, cmdline, kernel, arch, platform string, try int) {
		h := web01()
		h.Hostname, h.Vars = hostname, map[string]string{vname: vval}
		im := debian()
		im.Cmdline, im.Artifacts[0].Name = cmdline, kernel
		in := Input{BaseURL: base, MAC: h.MAC, Arch: arch, Platform: platform, Try: try, Site: site(""), Host: h, Image: im}
		s, err := Render(in)
		if err != nil {
			if _, verr := validateInput(in); verr == nil {
				t.Fatalf("Render failed on valid input: %v", err)
			}
			return
		}
		if err := checkIPXE(s); err != nil {
			t.Fatalf("%v\n%s", err, s.Text)
		}
		g, err := RenderGRUB(in)
		if err != nil {
			t.Fatal(err)
		}
		if g.Decision != s.Decision {
			t.Fatalf("iPXE and GRUB disagree: %v vs %v", s.Decision, g.Decision)
		}
		// Every GRUB argument is single-quoted; a quote inside would end it.
		for _, l := range strings.Split(g.Text, "\n") {
			if strings.Count(l, "'")%2 != 0 {
				t.Fatalf("unbalanced quote in GRUB line %q", l)
			}
		}
	})
}
