package cli_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetboot/fleetboot/cmd/fleetboot/cli"
)

// These tests run the command line in-process (cli.Run) with their own
// environment and read what --check-config reports: the settings as the
// coordinator or edge would use them.

// runEnv runs one command line in-process with exactly env as its environment.
func runEnv(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), cli.Invocation{Version: "test", Args: args, Env: cli.EnvMap(env), Stdout: &out, Stderr: &errb})
	return result{out.String(), errb.String(), code}
}

// setting returns the value --check-config reported for name.
func setting(t *testing.T, r result, name string) string {
	t.Helper()
	for line := range strings.Lines(r.stdout) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+": "); ok {
			return v
		}
	}
	t.Fatalf("--check-config printed no %s:\n%s", name, r.stdout)
	return ""
}

// checkOneLine fails unless r is a refusal: exit 1 and one line on stderr
// that contains want.
func checkOneLine(t *testing.T, r result, want string) {
	t.Helper()
	if r.code != 1 {
		t.Fatalf("exit code %d, want 1\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "fleetboot: ") || !strings.Contains(r.stderr, want) {
		t.Errorf("stderr = %q, want one line containing %q", r.stderr, want)
	}
}

func coordinatorCheck(t *testing.T, extra ...string) []string {
	dir := t.TempDir()
	return append([]string{"coordinator", "--check-config", "--data", dir, "--store", "dir://" + filepath.Join(dir, "artifacts")}, extra...)
}

func edgeCheck(t *testing.T, extra ...string) []string {
	dir := t.TempDir()
	return append([]string{"edge", "--check-config", "--site", "lab", "--name", "e1",
		"--state-dir", filepath.Join(dir, "state"), "--cache-dir", filepath.Join(dir, "cache")}, extra...)
}

// TestSizeFlags: every size flag goes through one parser that takes
// fractions and refuses trailing garbage, zero and overflow.
func TestSizeFlags(t *testing.T) {
	flags := []struct {
		flag string
		args func(t *testing.T, extra ...string) []string
	}{
		{"max-store", coordinatorCheck},
		{"cache-size", edgeCheck},
	}
	cases := []struct {
		in   string
		want string // the reported setting, or the refusal's text
		ok   bool
	}{
		{"1.5GiB", "1610612736 (1.5 GiB)", true},
		{"10GiB", "10737418240 (10.0 GiB)", true},
		{"500MB", "500000000 (476.8 MiB)", true},
		{"2 tib", "2199023255552 (2.0 TiB)", true},
		{"1024", "1024 (1.0 KiB)", true},
		{"10xGiB", `invalid size "10xGiB"`, false},
		{"1.5.0GiB", `invalid size "1.5.0GiB"`, false},
		{"10GiBs", `invalid size "10GiBs"`, false},
		{"0", `invalid size "0"`, false},
		{"-1GiB", `invalid size "-1GiB"`, false},
		{"1.5", `invalid size "1.5"`, false},
		{"9999999999TiB", `invalid size "9999999999TiB"`, false},
		{"99999999999999999999", `invalid size "99999999999999999999"`, false},
	}
	for _, f := range flags {
		for _, c := range cases {
			t.Run(f.flag+"="+c.in, func(t *testing.T) {
				r := runEnv(t, nil, f.args(t, "--"+f.flag, c.in)...)
				if !c.ok {
					checkOneLine(t, r, "--"+f.flag+": "+c.want)
					return
				}
				if r.code != 0 {
					t.Fatalf("exit code %d: %s", r.code, r.stderr)
				}
				if got := setting(t, r, f.flag); got != c.want {
					t.Errorf("%s = %q, want %q", f.flag, got, c.want)
				}
			})
		}
	}
}

// TestNATSSyncFlag: --nats-sync is always (the default) or a positive
// interval; anything else, and an interval with --nats-url, is refused.
func TestNATSSyncFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string // the setting, or the refusal
		ok   bool
	}{
		{nil, "always", true},
		{[]string{"--nats-sync", "always"}, "always", true},
		{[]string{"--nats-sync", "90s"}, "1m30s", true},
		{[]string{"--nats-sync", "0s"}, `--nats-sync "0s": want always or a positive interval such as 1m`, false},
		{[]string{"--nats-sync", "sometimes"}, `--nats-sync "sometimes": want always or a positive interval such as 1m`, false},
		{[]string{"--nats-sync", "1m", "--nats-url", "nats://127.0.0.1:1", "--insecure"}, "--nats-sync applies to the embedded server; with --nats-url set sync_interval in that cluster's configuration", false},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			r := runEnv(t, nil, coordinatorCheck(t, c.args...)...)
			if !c.ok {
				checkOneLine(t, r, c.want)
				return
			}
			if r.code != 0 {
				t.Fatalf("exit code %d: %s", r.code, r.stderr)
			}
			if got := setting(t, r, "nats-sync"); got != c.want {
				t.Errorf("nats-sync = %q, want %q", got, c.want)
			}
		})
	}
}

// TestConfigPrecedence: a flag wins over FLEETBOOT_<FLAG>, which wins over
// the --config file; FLEETBOOT_CONFIG names the file.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "edge.yaml", "cache-size: 2GiB\nsite: from-file\nhttp-listen: 127.0.0.1:9001\n")
	bad := writeFile(t, dir, "bad.yaml", "cache-size: [1, 2\n")
	badValue := writeFile(t, dir, "bad-value.yaml", "cache-size: lots\n")
	cases := []struct {
		name  string
		env   map[string]string
		args  []string
		check map[string]string // setting → value
		fails string            // refusal text instead
	}{
		{name: "default", check: map[string]string{"cache-size": "21474836480 (20.0 GiB)", "http-listen": ":8080"}},
		{name: "file", args: []string{"--config", file},
			check: map[string]string{"cache-size": "2147483648 (2.0 GiB)", "http-listen": "127.0.0.1:9001"}},
		{name: "file named by FLEETBOOT_CONFIG", env: map[string]string{"FLEETBOOT_CONFIG": file},
			check: map[string]string{"cache-size": "2147483648 (2.0 GiB)"}},
		{name: "env beats file", env: map[string]string{"FLEETBOOT_CACHE_SIZE": "3GiB", "FLEETBOOT_HTTP_LISTEN": "127.0.0.1:9002"}, args: []string{"--config", file},
			check: map[string]string{"cache-size": "3221225472 (3.0 GiB)", "http-listen": "127.0.0.1:9002"}},
		{name: "flag beats env and file", env: map[string]string{"FLEETBOOT_CACHE_SIZE": "3GiB"}, args: []string{"--config", file, "--cache-size", "4GiB"},
			check: map[string]string{"cache-size": "4294967296 (4.0 GiB)", "http-listen": "127.0.0.1:9001"}},
		{name: "--config beats FLEETBOOT_CONFIG", env: map[string]string{"FLEETBOOT_CONFIG": bad}, args: []string{"--config", file},
			check: map[string]string{"cache-size": "2147483648 (2.0 GiB)"}},
		{name: "bad size in env", env: map[string]string{"FLEETBOOT_CACHE_SIZE": "3xGiB"},
			fails: `--cache-size: invalid size "3xGiB"`},
		{name: "bad size in file", args: []string{"--config", badValue},
			fails: `--cache-size: invalid size "lots"`},
		{name: "file does not parse", args: []string{"--config", bad}, fails: "config file " + bad},
		{name: "file missing", args: []string{"--config", filepath.Join(dir, "nope.yaml")}, fails: "config file: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runEnv(t, c.env, edgeCheck(t, c.args...)...)
			if c.fails != "" {
				checkOneLine(t, r, c.fails)
				return
			}
			if r.code != 0 {
				t.Fatalf("exit code %d: %s", r.code, r.stderr)
			}
			for name, want := range c.check {
				if got := setting(t, r, name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

// TestURLFlags: URLs are checked at start-up, with one line naming the flag.
func TestURLFlags(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name  string
		args  []string
		check map[string]string
		fails string
	}{
		{name: "advertise", args: edgeCheck(t, "--advertise", "http://10.0.0.1:8080"),
			check: map[string]string{"advertise": "http://10.0.0.1:8080"}},
		{name: "advertise trailing slash dropped", args: edgeCheck(t, "--advertise", "https://boot.example.net/"),
			check: map[string]string{"advertise": "https://boot.example.net"}},
		{name: "advertise without scheme", args: edgeCheck(t, "--advertise", "10.0.0.1:8080"), fails: `invalid --advertise "10.0.0.1:8080"`},
		{name: "advertise ftp", args: edgeCheck(t, "--advertise", "ftp://10.0.0.1"), fails: `invalid --advertise "ftp://10.0.0.1"`},
		// --check-config refuses what the edge refuses at start.
		{name: "advertise IPv6 literal", args: edgeCheck(t, "--advertise", "http://[fd00::1]:8080"),
			check: map[string]string{"advertise": "http://[fd00::1]:8080"}},
		{name: "advertise https with a port", args: edgeCheck(t, "--advertise", "https://boot.example.net:8443"),
			check: map[string]string{"advertise": "https://boot.example.net:8443"}},
		{name: "advertise with a path", args: edgeCheck(t, "--advertise", "http://10.0.0.1:8080/boot"), fails: `--advertise "http://10.0.0.1:8080/boot"`},
		{name: "advertise port out of range", args: edgeCheck(t, "--advertise", "http://10.0.0.1:80800"), fails: `--advertise "http://10.0.0.1:80800"`},
		{name: "advertise the renderer refuses", args: edgeCheck(t, "--advertise", "http://boot;x"), fails: "--advertise"},
		{name: "dir store", args: []string{"coordinator", "--check-config", "--data", dir, "--store", "dir://" + dir + "/a"},
			check: map[string]string{"store": "dir://" + dir + "/a"}},
		{name: "relative dir store", args: []string{"coordinator", "--check-config", "--data", dir, "--store", "dir://a"},
			fails: "a directory store needs an absolute path"},
		{name: "store with credentials", args: []string{"coordinator", "--check-config", "--data", dir, "--store", "s3://k:hunter2@bucket?endpoint=127.0.0.1:1"},
			fails: "carries credentials"},
		{name: "unknown store scheme", args: []string{"coordinator", "--check-config", "--data", dir, "--store", "ftp://x/y"},
			fails: `unknown scheme "ftp"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runEnv(t, nil, c.args...)
			if c.fails != "" {
				checkOneLine(t, r, c.fails)
				if strings.Contains(r.stderr, "hunter2") {
					t.Errorf("the password shows in %q", r.stderr)
				}
				return
			}
			if r.code != 0 {
				t.Fatalf("exit code %d: %s", r.code, r.stderr)
			}
			for name, want := range c.check {
				if got := setting(t, r, name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

// TestConfigFileLists: a repeatable flag takes a YAML list in the config
// file, one value per element; a list for a one-value flag is refused.
func TestConfigFileLists(t *testing.T) {
	dir := t.TempDir()
	names := writeFile(t, dir, "names.yaml", "http-name: [panel.example.net, boot.example.net]\n")
	one := writeFile(t, dir, "one.yaml", "http-name: panel.example.net\n")
	listForOne := writeFile(t, dir, "list-for-one.yaml", "nats-listen: [127.0.0.1:4222, 127.0.0.1:4223]\n")
	cases := []struct {
		name, file, want, fails string
	}{
		{name: "list", file: names, want: "panel.example.net,boot.example.net"},
		{name: "one value", file: one, want: "panel.example.net"},
		{name: "list for a one-value flag", file: listForOne, fails: "nats-listen: want one value, not a list"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runEnv(t, nil, coordinatorCheck(t, "--config", c.file)...)
			if c.fails != "" {
				checkOneLine(t, r, c.fails)
				return
			}
			if r.code != 0 {
				t.Fatalf("exit code %d: %s", r.code, r.stderr)
			}
			if got := setting(t, r, "http-name"); got != c.want {
				t.Errorf("http-name = %q, want %q", got, c.want)
			}
		})
	}
}
