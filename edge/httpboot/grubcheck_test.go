package httpboot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/test/grubcheck"
)

// TestGRUBScriptCheck: every GRUB config the edge renders parses with
// GRUB's own parser (grub-script-check from Debian's grub-common): each
// golden grub.cfg (testdata/*.cfg, the variants TestRenderGolden pins), the
// fallback, and the decisions that have no golden file, over HTTP and over
// TFTP, including reasons that carry characters GRUB's parser treats
// specially. A syntax error in a grub.cfg shows on the machine's console
// only, as a GRUB that never boots.
func TestGRUBScriptCheck(t *testing.T) {
	bin := grubcheck.Binary(t)

	// The checker itself: a config GRUB cannot parse is refused, or this
	// test could pass over anything.
	if err := grubcheck.Check(bin, "broken", "linux '(tftp,10.0.0.1)/vmlinuz\nboot\n"); err == nil {
		t.Fatal("grub-script-check accepted an unterminated quote: it checks nothing")
	}

	scripts := map[string]string{}
	goldens, err := filepath.Glob(filepath.Join("testdata", "*.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	if len(goldens) < 10 {
		t.Fatalf("found %d golden GRUB configs in testdata, want every variant (at least 10)", len(goldens))
	}
	for _, g := range goldens {
		b, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		scripts[g] = string(b)
	}
	fb, err := GRUBFallback(base)
	if err != nil {
		t.Fatal(err)
	}
	scripts["fallback"] = fb

	local := web01()
	local.State = proto.StateLocal
	noImage := web01()
	noImage.Image = ""
	withVars := web01()
	withVars.Vars = map[string]string{"role": "db", "disk": "/dev/nvme0n1", "empty": ""}
	varsImage := debian()
	varsImage.Cmdline = "role={{var.role}} inst.disk={{var.disk}} {{var.empty}} quiet"
	oddSite := site(`it's "odd"; $x {y} \z`)
	extra := []struct {
		name string
		in   Input
	}{
		{"vars", Input{MAC: "52:54:00:12:34:56", Platform: "efi", Site: site(""), Host: withVars, Image: varsImage}},
		{"local", Input{MAC: "52:54:00:12:34:56", Platform: "efi", Site: site(""), Host: local}},
		{"no image", Input{MAC: "52:54:00:12:34:56", Platform: "efi", Site: site(""), Host: noImage}},
		{"image missing", Input{MAC: "52:54:00:12:34:56", Platform: "efi", Site: site(""), Host: web01()}},
		{"arch mismatch", Input{MAC: "52:54:00:12:34:56", Arch: "arm64", Platform: "efi", Site: site(""), Host: web01(), Image: debian()}},
		{"unknown ignore", Input{MAC: "52:54:00:00:00:01", Site: site(proto.UnknownIgnore)}},
		{"unknown exit", Input{MAC: "52:54:00:00:00:01", Site: site(proto.UnknownExit)}},
		{"unknown discover", Input{MAC: "52:54:00:00:00:01", Platform: "efi", ClientIP: "10.0.0.99", Site: site(proto.UnknownDiscover), Image: discovery()}},
		{"unknown discover missing", Input{MAC: "52:54:00:00:00:01", Site: site(proto.UnknownDiscover)}},
		{"unknown odd policy", Input{MAC: "52:54:00:00:00:01", Site: oddSite}},
		{"microcode", Input{MAC: "52:54:00:12:34:56", Platform: "efi", Site: site(""), Host: web01(), Image: microcode(), Token: "dG9rZW4tZm9yLXRlc3Rz"}},
		{"liveos", Input{MAC: "52:54:00:12:34:56", Platform: "efi", Site: site(""), Host: &proto.Host{MAC: "52:54:00:12:34:56", Image: "azl-live"}, Image: liveos()}},
	}
	for _, via := range []string{ViaHTTP, ViaTFTP} {
		for _, x := range extra {
			in := x.in
			in.BaseURL, in.Via = base, via
			s, err := RenderGRUB(in)
			if err != nil {
				t.Fatalf("%s over %s: %v", x.name, via, err)
			}
			scripts[x.name+" over "+via] = s.Text
		}
	}
	for name, text := range scripts {
		t.Run(strings.ReplaceAll(name, "/", "_"), func(t *testing.T) {
			if err := grubcheck.Check(bin, name, text); err != nil {
				t.Errorf("%v\n%s", err, text)
			}
		})
	}
}
