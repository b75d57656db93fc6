package httpboot

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetboot/fleetboot/proto"
)

// Install templates as an admin writes them (template add).
var testTemplates = []proto.Template{
	{Name: "web", Kind: "cloud-init", Text: `#cloud-config
hostname: {{.Hostname}}
fqdn: {{.Hostname}}.{{.Site}}
write_files:
  - path: /etc/fleetboot-role
    content: {{quote (default "none" .Labels.role)}}
runcmd:
  - [sh, -c, "echo installed {{.MAC}} on rack {{.Labels.rack}}"]
phone_home:
  url: {{quote .DoneURL}}
  post: [instance_id]
`},
	{Name: "pre", Kind: "preseed", Text: `d-i debian-installer/locale string en_US.UTF-8
d-i netcfg/get_hostname string {{.Hostname}}
d-i mirror/http/hostname string deb.debian.org
d-i preseed/late_command string in-target wget -q --post-data= '{{.DoneURL}}'
`},
	{Name: "ks", Kind: "kickstart", Text: `# kickstart for {{.MAC}}
text
network --bootproto=dhcp --hostname={{.Hostname}}
rootpw --lock
%post
curl -X POST '{{.DoneURL}}'
%end
`},
	{Name: "ign", Kind: "ignition", Text: `{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/hostname","contents":{"source":"data:,{{.Hostname}}"}},{"path":"/etc/rack","contents":{"source":"data:,{{.Labels.rack}}"}}]}}
`},
}

// templateFixture is the handler fixture whose host web01 (10.0.0.50)
// uses template name, with every test template synced.
func templateFixture(t *testing.T, name string) *fixture {
	f := newFixture(t)
	for _, tp := range testTemplates {
		f.st.PutTemplate(tp)
	}
	h := *web01()
	h.Template, h.Labels = name, map[string]string{"rack": "r12", "role": "db"}
	f.st.PutHost(h)
	return f
}

func getFrom(t *testing.T, f *fixture, target, from string) (int, string) {
	t.Helper()
	r := httptest.NewRequest("GET", target, nil)
	r.RemoteAddr = from
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	body, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(body)
}

// validate runs a real validator on a rendered file; it fails the test when
// the validator is missing (test/deps.sh installs it).
func validate(t *testing.T, text string, cmd ...string) error {
	t.Helper()
	if _, err := exec.LookPath(cmd[0]); err != nil {
		t.Fatalf("%s is not installed (test/deps.sh installs it): %v", cmd[0], err)
	}
	p := filepath.Join(t.TempDir(), "rendered")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cmd[0], append(cmd[1:], p)...).CombinedOutput()
	if err != nil {
		return &exec.ExitError{Stderr: out}
	}
	return nil
}

// TestTemplateCloudInit: the NoCloud layout renders the host's cloud-init
// template with its callback token, and `cloud-init schema` accepts it.
func TestTemplateCloudInit(t *testing.T) {
	f := templateFixture(t, "web")
	code, body := getFrom(t, f, "/t/web/52:54:00:12:34:56/user-data", "10.0.0.50:40000")
	if code != http.StatusOK {
		t.Fatalf("user-data: %d %s", code, body)
	}
	for _, want := range []string{"hostname: web01.lab\n", `content: "db"`, "rack r12", "token=" + f.tokenFor("52:54:00:12:34:56")} {
		if !strings.Contains(body, want) {
			t.Errorf("user-data lacks %q:\n%s", want, body)
		}
	}
	if err := validate(t, body, "cloud-init", "schema", "--config-file"); err != nil {
		t.Errorf("cloud-init schema refused the rendered user-data: %s\n%s", err.(*exec.ExitError).Stderr, body)
	}
	// The validator is no rubber stamp: a type error is refused.
	if err := validate(t, "#cloud-config\nruncmd: 3\n", "cloud-init", "schema", "--config-file"); err == nil {
		t.Error("cloud-init schema accepted runcmd: 3")
	}
	code, body = getFrom(t, f, "/t/web/52:54:00:12:34:56/meta-data", "10.0.0.50:40000")
	if code != http.StatusOK || !strings.HasPrefix(body, "instance-id: fleetboot-525400123456-") || !strings.Contains(body, "local-hostname: web01.lab\n") {
		t.Errorf("meta-data: %d %q", code, body)
	}
	if code, body = getFrom(t, f, "/t/web/52:54:00:12:34:56/vendor-data", "10.0.0.50:40000"); code != http.StatusOK || body != "" {
		t.Errorf("vendor-data: %d %q", code, body)
	}
}

// TestTemplatePreseed: a rendered preseed passes debconf-set-selections
// --checkonly, which refuses a malformed one.
func TestTemplatePreseed(t *testing.T) {
	f := templateFixture(t, "pre")
	code, body := getFrom(t, f, "/t/pre?mac=52-54-00-12-34-56", "10.0.0.50:40000")
	if code != http.StatusOK || !strings.Contains(body, "get_hostname string web01.lab") {
		t.Fatalf("preseed: %d %s", code, body)
	}
	if err := validate(t, body, "debconf-set-selections", "--checkonly"); err != nil {
		t.Errorf("debconf-set-selections refused the rendered preseed: %s\n%s", err.(*exec.ExitError).Stderr, body)
	}
	if err := validate(t, "d-i\n", "debconf-set-selections", "--checkonly"); err == nil {
		t.Error("debconf-set-selections accepted a malformed line")
	}
}

// TestTemplateGolden: kickstart and ignition, rendered, against golden files.
func TestTemplateGolden(t *testing.T) {
	for _, tc := range []struct{ name, golden string }{{"ks", "template-ks.cfg"}, {"ign", "template-ign.json"}} {
		f := templateFixture(t, tc.name)
		code, body := getFrom(t, f, "/t/"+tc.name+"?mac=52:54:00:12:34:56", "10.0.0.50:40000")
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", tc.name, code, body)
		}
		checkGolden(t, tc.golden, strings.ReplaceAll(body, f.tokenFor("52:54:00:12:34:56"), "TOKEN"))
	}
}

// TestTemplateFacts: a template reads the facts the machine reported,
// which reach the edge on the host record (proto.Host.Facts); a host
// without facts renders the template's defaults.
func TestTemplateFacts(t *testing.T) {
	f := newFixture(t)
	f.st.PutTemplate(proto.Template{Name: "hw", Kind: "script", Text: `#!/bin/sh
echo vendor={{with .Facts.dmi}}{{.vendor}}{{end}} cpus={{.Facts.cpus}} memory={{.Facts.memory_gib}}
echo disk={{with .Facts.disks}}{{(index . 0).name}}{{else}}none{{end}}
echo firmware={{default "unknown" .Facts.firmware}}
`})
	facts, err := json.Marshal(proto.Facts{V: 1, BootMAC: "52:54:00:12:34:56", Firmware: "uefi", CPUs: 4, MemoryGiB: 16,
		DMI:   proto.DMIFacts{Vendor: "QEMU"},
		NICs:  []proto.NICFacts{{Name: "ens3", MAC: "52:54:00:12:34:56", Link: true}},
		Disks: []proto.DiskFacts{{Name: "vda", SizeGiB: 20}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		facts json.RawMessage
		want  string
	}{
		{"reported", facts, "echo vendor=QEMU cpus=4 memory=16\necho disk=vda\necho firmware=uefi\n"},
		{"none", nil, "echo disk=none"},
		{"not an object", json.RawMessage(`[1,2]`), "echo firmware=unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := *web01()
			h.Template, h.Facts = "hw", tc.facts
			f.st.PutHost(h)
			code, body := getFrom(t, f, "/t/hw?mac=52:54:00:12:34:56", "10.0.0.50:40000")
			if code != http.StatusOK || !strings.Contains(body, tc.want) {
				t.Errorf("rendered: %d\n%s\nwant it to contain %q", code, body, tc.want)
			}
		})
	}
}

// TestTemplateRefusals: a template is rendered only for a host that uses it,
// asking from its own address; every refusal answers alike.
func TestTemplateRefusals(t *testing.T) {
	f := templateFixture(t, "web")
	for _, tc := range []struct{ name, target, from string }{
		{"another address", "/t/web/52:54:00:12:34:56/user-data", "10.0.0.66:40000"},
		{"not the host's template", "/t/pre?mac=52:54:00:12:34:56", "10.0.0.50:40000"},
		{"unknown host", "/t/web/52:54:00:00:00:09/user-data", "10.0.0.50:40000"},
		{"no such template", "/t/nope?mac=52:54:00:12:34:56", "10.0.0.50:40000"},
	} {
		code, body := getFrom(t, f, tc.target, tc.from)
		if code != http.StatusNotFound || body != "httpboot: no such template for this machine from this address\n" {
			t.Errorf("%s: %d %q", tc.name, code, body)
		}
	}
	for _, target := range []string{"/t/web/52:54:00:12:34:56/secrets", "/t/web/x/y/z", "/t/web?mac=zz", "/t/We%20b?mac=52:54:00:12:34:56"} {
		if code, _ := getFrom(t, f, target, "10.0.0.50:40000"); code != http.StatusNotFound && code != http.StatusBadRequest {
			t.Errorf("%s: %d", target, code)
		}
	}
}

// TestTemplateURLInCmdline: {{template_url}} in an image's command line is
// the host's template as its installer fetches it.
func TestTemplateURLInCmdline(t *testing.T) {
	for _, tc := range []struct{ tmpl, want string }{
		{"ks", "inst.ks=" + base + "/t/ks?mac=52%3A54%3A00%3A12%3A34%3A56"},
		{"web", "inst.ks=" + base + "/t/web/52:54:00:12:34:56/"},
		{"", ""},
	} {
		f := templateFixture(t, tc.tmpl)
		im := *debian()
		im.Cmdline = "console=ttyS0 inst.ks={{template_url}}"
		f.st.PutImage(im)
		sc, err := Render(InputFor(f.st, base, "52:54:00:12:34:56", "x86_64", "efi", "", 0))
		if err != nil {
			t.Fatal(err)
		}
		if tc.want != "" && !strings.Contains(sc.Text, tc.want+" ") {
			t.Errorf("template %q: script lacks %q:\n%s", tc.tmpl, tc.want, sc.Text)
		}
		if tc.want == "" && strings.Contains(sc.Text, "/t/") {
			t.Errorf("a host without a template got a template URL:\n%s", sc.Text)
		}
	}
}
