package cli_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetboot/fleetboot/coordinator"
	"github.com/fleetboot/fleetboot/shared/artifactstore"
	"github.com/fleetboot/fleetboot/test/miniotest"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// binary is the fleetboot binary built once for the package's tests.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "fleetboot-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "fleetboot")
	build := exec.Command("go", "build", "-o", binary, "github.com/fleetboot/fleetboot/cmd/fleetboot")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build fleetboot:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type stater struct{ s artifactstore.Store }

func (s stater) StatSize(ctx context.Context, key string) (int64, error) {
	info, err := s.s.Stat(ctx, key)
	return info.Size, err
}

// startCoordinator runs a real coordinator (embedded NATS + JetStream) in the
// test process and returns its NATS URL.
func startCoordinator(t *testing.T, storeURL string) string {
	t.Helper()
	st, err := artifactstore.Open(context.Background(), artifactstore.ConfigFromEnv(storeURL))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- coordinator.Run(ctx, coordinator.Config{
			DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", StoreURL: storeURL, Store: stater{st},
			Ready: func(u string) { ready <- u },
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case u := <-ready:
		return u
	case err := <-done:
		t.Fatalf("coordinator: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("coordinator did not become ready")
	}
	return ""
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

var volatile = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`"updated": "[^"]+"`), `"updated": "TIME"`},
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	for _, v := range volatile {
		got = v.re.ReplaceAllString(got, v.with)
	}
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file: %v (run with -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCLIAgainstCoordinator(t *testing.T) {
	storeDir := t.TempDir()
	url := startCoordinator(t, "dir://"+storeDir)
	env := []string{"FLEETBOOT_NATS=" + url}
	files := t.TempDir()
	kernel := writeFile(t, files, "vmlinuz", "kernel bytes")
	initrd := writeFile(t, files, "initrd.img", "initrd bytes")
	shim := writeFile(t, files, "shimx64.efi.signed", "shim bytes")
	grub := writeFile(t, files, "grubnetx64.efi.signed", "grub bytes")
	ipxeEFI := writeFile(t, files, "ipxe.efi", "ipxe bytes")
	grubARM := writeFile(t, files, "grubnetaa64.efi.signed", "arm64 grub bytes")

	steps := []struct {
		name   string
		args   []string
		code   int
		golden string // stdout golden file, if any
		stderr string // exact stderr, if the command fails
	}{
		{"add site", []string{"site", "add", "lab", "--subnet", "10.0.0.0/24", "--range", "10.0.0.100-10.0.0.200", "--router", "10.0.0.1", "--dns", "10.0.0.1"}, 0, "site-add.txt", ""},
		{"add second site", []string{"site", "add", "dc1", "--subnet", "10.1.0.0/24", "--dhcp", "proxy"}, 0, "", ""},
		{"add image", []string{"image", "add", "debian12", "--kernel", kernel, "--initrd", initrd, "--cmdline", "console=ttyS0 hostname={{hostname}}"}, 0, "image-add.txt", ""},
		{"set host", []string{"host", "set", "52-54-00-12-34-56", "--image", "debian12", "--site", "lab", "--ip", "10.0.0.20", "--hostname", "web1", "--var", "role=db"}, 0, "", ""},
		{"set second host", []string{"host", "set", "5254.0012.3457", "--image", "debian12", "--site", "dc1", "--once"}, 0, "", ""},
		{"list hosts", []string{"host", "ls"}, 0, "host-ls.txt", ""},
		{"list hosts json", []string{"host", "ls", "-o", "json"}, 0, "host-ls.json", ""},
		{"list one site's hosts", []string{"host", "ls", "--site", "dc1", "-o", "json"}, 0, "host-ls-dc1.json", ""},
		{"list sites", []string{"site", "ls"}, 0, "site-ls.txt", ""},
		{"list images json", []string{"image", "ls", "-o", "json"}, 0, "image-ls.json", ""},
		{"show host by other spelling", []string{"host", "show", "525400123456", "-o", "json"}, 0, "host-show.json", ""},
		{"explain a known host", []string{"explain", "52:54:00:12:34:56", "--arch", "7"}, 0, "explain-known.txt", ""},
		{"explain an unknown host", []string{"explain", "52:54:00:12:34:98", "--site", "lab", "-o", "json"}, 0, "explain-unknown.json", ""},
		// Refusals: one line, non-zero, nothing changed (host ls is checked again below).
		{"malformed MAC", []string{"host", "set", "52:54:00:zz:34:56", "--image", "debian12"}, 1, "",
			`fleetboot: invalid MAC address "52:54:00:zz:34:56": want aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff` + "\n"},
		{"missing image", []string{"host", "set", "52:54:00:12:34:99", "--image", "nope", "--site", "lab"}, 1, "", "fleetboot: image nope: not found\n"},
		{"IP outside the subnet", []string{"host", "set", "52:54:00:12:34:99", "--image", "debian12", "--site", "lab", "--ip", "10.9.0.1"}, 1, "",
			"fleetboot: IP 10.9.0.1 is not inside any subnet of site lab (10.0.0.0/24)\n"},
		{"duplicate reservation", []string{"host", "set", "52:54:00:12:34:99", "--site", "lab", "--ip", "10.0.0.20"}, 1, "",
			"fleetboot: IP 10.0.0.20 at site lab is already used by host 52:54:00:12:34:56 at site lab\n"},
		{"image in use", []string{"image", "rm", "debian12"}, 1, "",
			"fleetboot: image debian12 is used by 2 host(s) (52:54:00:12:34:56, 52:54:00:12:34:57); assign them another image first\n"},
		{"bad output format", []string{"host", "ls", "-o", "yaml"}, 1, "", "fleetboot: invalid --output \"yaml\": want table or json\n"},
		{"missing argument", []string{"host", "show"}, 1, "", "fleetboot: fleetboot host show: want MAC, got 0 argument(s) (see --help)\n"},
		{"unknown host", []string{"host", "show", "52:54:00:00:00:00"}, 1, "", "fleetboot: host 52:54:00:00:00:00: not found\n"},
		{"bad range", []string{"site", "add", "x", "--subnet", "10.5.0.0/24", "--range", "10.5.0.9"}, 1, "",
			"fleetboot: invalid --range \"10.5.0.9\": want START-END, e.g. 10.0.0.100-10.0.0.200\n"},
		{"list hosts unchanged", []string{"host", "ls"}, 0, "host-ls.txt", ""},
		// Labels: set, shown, removed; a bad one refused by the CLI as the coordinator would.
		{"label host", []string{"host", "label", "52:54:00:12:34:56", "rack=r12", "role=web,tier=1"}, 0, "host-label.txt", ""},
		{"unlabel host", []string{"host", "unlabel", "52:54:00:12:34:56", "role", "tier"}, 0, "host-unlabel.txt", ""},
		{"label with a space", []string{"host", "label", "52:54:00:12:34:56", "rack=r 12"}, 1, "",
			"fleetboot: invalid value \"r 12\" of label rack: use letters, digits, '.', '_' or '-'\n"},
		{"unlabel with a value", []string{"host", "unlabel", "52:54:00:12:34:56", "rack=r12"}, 1, "",
			"fleetboot: unlabel takes label keys, not \"rack=r12\" (host label sets values)\n"},
		// Loaders: a Secure Boot chain for one host, explained file by file.
		{"add shim loader", []string{"loader", "add", "shim-debian", "--kind", "shim-grub", "--shim", shim, "--grub", grub}, 0, "loader-add.txt", ""},
		{"list loaders json", []string{"loader", "ls", "-o", "json"}, 0, "loader-ls.json", ""},
		{"loader with an ipxe flag", []string{"loader", "add", "x", "--kind", "shim-grub", "--shim", shim, "--grub", grub, "--efi", shim}, 1, "",
			"fleetboot: loader add: --efi does not go with --kind shim-grub (it takes --shim and --grub)\n"},
		{"missing loader", []string{"host", "set", "52:54:00:12:34:56", "--loader", "nope"}, 1, "", "fleetboot: loader nope: not found\n"},
		{"host on shim", []string{"host", "set", "52:54:00:12:34:56", "--loader", "shim-debian"}, 0, "", ""},
		{"explain shim chain", []string{"explain", "52:54:00:12:34:56", "--arch", "7"}, 0, "explain-shim.txt", ""},
		{"explain shim chain to bios", []string{"explain", "52:54:00:12:34:56", "--arch", "0"}, 0, "explain-shim-bios.txt", ""},
		{"explain shim chain to uefi http boot", []string{"explain", "52:54:00:12:34:56", "--arch", "16"}, 0, "explain-shim-http.txt", ""},
		{"add ipxe loader", []string{"loader", "add", "ipxe-http", "--kind", "ipxe", "--efi", ipxeEFI}, 0, "", ""},
		{"host on ipxe loader", []string{"host", "set", "52:54:00:12:34:56", "--loader", "ipxe-http"}, 0, "", ""},
		{"explain ipxe loader to uefi http boot", []string{"explain", "52:54:00:12:34:56", "--arch", "16"}, 0, "explain-ipxe-http.txt", ""},
		{"host back on shim", []string{"host", "set", "52:54:00:12:34:56", "--loader", "shim-debian"}, 0, "", ""},
		{"loader rm ipxe", []string{"loader", "rm", "ipxe-http"}, 0, "", ""},
		{"add arm64 grub loader", []string{"loader", "add", "grub-arm64", "--kind", "grub", "--grub", grubARM, "--arch", "arm64"}, 0, "", ""},
		{"add arm64 image", []string{"image", "add", "debarm", "--arch", "arm64", "--kernel", kernel, "--initrd", initrd, "--cmdline", "console=ttyAMA0"}, 0, "", ""},
		{"arm64 loader for an x86_64 image", []string{"host", "set", "52:54:00:12:34:56", "--loader", "grub-arm64"}, 1, "", "fleetboot: loader grub-arm64 boots arm64 firmware, not bios or x64\n"},
		{"host on arm64", []string{"host", "set", "52:54:00:12:34:56", "--image", "debarm", "--loader", "grub-arm64"}, 0, "", ""},
		{"explain arm64 grub chain", []string{"explain", "52:54:00:12:34:56", "--arch", "11"}, 0, "explain-grub-arm64.txt", ""},
		{"host back on x86_64 and shim", []string{"host", "set", "52:54:00:12:34:56", "--image", "debian12", "--loader", "shim-debian"}, 0, "", ""},
		{"loader rm arm64", []string{"loader", "rm", "grub-arm64"}, 0, "", ""},
		{"image rm arm64", []string{"image", "rm", "debarm"}, 0, "", ""},
		{"loader in use", []string{"loader", "rm", "shim-debian"}, 1, "", "fleetboot: loader shim-debian is used by 1 host(s) (52:54:00:12:34:56); set them another loader first\n"},
		{"host back to default", []string{"host", "set", "52:54:00:12:34:56", "--loader", ""}, 0, "", ""},
		{"loader rm", []string{"loader", "rm", "shim-debian"}, 0, "", ""},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r := run(t, env, s.args...)
			if r.code != s.code {
				t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", r.code, s.code, r.stdout, r.stderr)
			}
			if s.golden != "" {
				golden(t, s.golden, r.stdout)
			}
			if s.code != 0 && r.stderr != s.stderr {
				t.Errorf("stderr = %q\nwant     %q", r.stderr, s.stderr)
			}
		})
	}

	// Adding the same content again uploads nothing.
	r := run(t, env, "image", "add", "debian12", "--kernel", kernel, "--initrd", initrd)
	if r.code != 0 || strings.Count(r.stderr, "already stored") != 2 {
		t.Errorf("re-add: code %d, stderr %q; want both files already stored", r.code, r.stderr)
	}
}

func TestCoordinatorUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "nats://" + l.Addr().String()
	l.Close() // nothing listens there now
	cases := []struct {
		name string
		args []string
	}{
		{"list", []string{"host", "ls"}},
		{"set", []string{"host", "set", "52:54:00:12:34:56", "--image", "x"}},
		{"edges", []string{"edge", "ls", "-o", "json"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, []string{"FLEETBOOT_NATS=" + dead}, tc.args...)
			if r.code != 3 {
				t.Errorf("exit code %d, want 3", r.code)
			}
			want := "fleetboot: cannot reach the coordinator's NATS at " + dead + ": nats: no servers available for connection\n"
			if r.stderr != want {
				t.Errorf("stderr = %q, want %q", r.stderr, want)
			}
		})
	}
}

// With a real S3 (MinIO) behind the coordinator, image add uploads there.
func TestImageAddToMinIO(t *testing.T) {
	m := miniotest.Start(t)
	storeURL := "s3://images?endpoint=" + m.Endpoint
	env := []string{"FLEETBOOT_S3_ACCESS_KEY=" + m.AccessKey, "FLEETBOOT_S3_SECRET_KEY=" + m.SecretKey}
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		t.Setenv(k, v)
	}
	url := startCoordinator(t, storeURL)
	env = append(env, "FLEETBOOT_NATS="+url)
	dir := t.TempDir()
	kernel := writeFile(t, dir, "vmlinuz", strings.Repeat("k", 1<<20))
	initrd := writeFile(t, dir, "initrd.img", "i")
	r := run(t, env, "image", "add", "big", "--kernel", kernel, "--initrd", initrd, "-o", "json")
	if r.code != 0 {
		t.Fatalf("image add: %d %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, `"size": 1048576`) {
		t.Errorf("image add output lacks the kernel size:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout+r.stderr, m.SecretKey) {
		t.Error("the S3 secret key appears in the output")
	}
	// The coordinator tells clients its store without credentials.
	r = run(t, env, "image", "show", "big")
	if r.code != 0 || !strings.Contains(r.stdout, "sha256/") {
		t.Errorf("image show: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// Wrong credentials: one clear line, nothing registered.
	bad := []string{"FLEETBOOT_NATS=" + url, "FLEETBOOT_S3_ACCESS_KEY=wrong", "FLEETBOOT_S3_SECRET_KEY=wrong-secret"}
	r = run(t, bad, "image", "add", "other", "--kernel", kernel, "--initrd", initrd)
	if r.code == 0 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || strings.Contains(r.stderr, "wrong-secret") {
		t.Errorf("wrong credentials: code %d stderr %q", r.code, r.stderr)
	}
	if r := run(t, env, "image", "show", "other"); r.code != 1 {
		t.Errorf("image registered despite failed upload: %+v", r)
	}
}
