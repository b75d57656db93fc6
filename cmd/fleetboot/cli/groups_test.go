package cli_test

import (
	"strings"
	"testing"
)

// TestUnknownSubcommand: a mistyped subcommand under any command group is
// refused with one line and exit 1, never the group's help and exit 0 (a
// script would believe it worked).
func TestUnknownSubcommand(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"rollbak"}, `unknown command "rollbak" for "fleetboot"`},
		{[]string{"image", "rollbak", "web"}, `unknown command "rollbak" for "fleetboot image"`},
		{[]string{"host", "improt", "f.csv"}, `unknown command "improt" for "fleetboot host"`},
		{[]string{"site", "lss"}, `unknown command "lss" for "fleetboot site"`},
		{[]string{"user", "addd", "ann"}, `unknown command "addd" for "fleetboot user"`},
		{[]string{"pki", "int", "/tmp/x"}, `unknown command "int" for "fleetboot pki"`},
		{[]string{"edge", "lst"}, `unknown command "lst" for "fleetboot edge"`},
		{[]string{"completion", "tcsh"}, `unknown command "tcsh" for "fleetboot completion"`},
		{[]string{"help", "hots"}, `unknown help topic "hots"`},
		{[]string{"help", "host", "improt"}, `unknown help topic "host improt"`},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			r := runEnv(t, nil, c.args...)
			checkOneLine(t, r, c.want)
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
		})
	}
	// A group alone still shows its help: asking is not a mistake; nor is
	// asking help for a real command.
	for _, args := range [][]string{{"image"}, {"host"}, {"site"}, {"user"}, {"pki"}, {"help", "host"}, {"help"}} {
		r := runEnv(t, nil, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Available Commands:") {
			t.Errorf("fleetboot %s: code %d, stdout %q", strings.Join(args, " "), r.code, r.stdout)
		}
	}
}

// TestCompletion: cobra's scripts for the three shells, and dynamic
// completion of MACs, sites and images from a real coordinator, found
// through FLEETBOOT_NATS as every other command finds it.
func TestCompletion(t *testing.T) {
	for shell, marker := range map[string]string{
		"bash": "__start_fleetboot",
		"zsh":  "#compdef fleetboot",
		"fish": "complete -c fleetboot",
	} {
		r := runEnv(t, nil, "completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, marker) {
			t.Errorf("completion %s: code %d, stderr %q, no %q in the script", shell, r.code, r.stderr, marker)
		}
	}

	url := startCoordinator(t, "dir://"+t.TempDir())
	env := map[string]string{"FLEETBOOT_NATS": url}
	files := t.TempDir()
	kernel := writeFile(t, files, "vmlinuz", "k")
	initrd := writeFile(t, files, "initrd.img", "i")
	for _, args := range [][]string{
		{"site", "add", "lab", "--subnet", "10.0.0.0/24"},
		{"site", "add", "dc1", "--subnet", "10.1.0.0/24"},
		{"image", "add", "debian12", "--kernel", kernel, "--initrd", initrd},
		{"loader", "add", "grub-arm", "--kind", "grub", "--grub", kernel, "--arch", "arm64"},
		{"host", "set", "52:54:00:12:34:56", "--site", "lab", "--image", "debian12", "--hostname", "web1", "--extra-mac", "52:54:00:12:34:57"},
		{"host", "set", "52:54:00:ab:cd:ef", "--site", "dc1"},
	} {
		if r := runEnv(t, env, args...); r.code != 0 {
			t.Fatalf("%v: code %d stderr %q", args, r.code, r.stderr)
		}
	}
	cases := []struct {
		args []string
		want []string // completions, before the directive line
	}{
		{[]string{"host", "show", ""}, []string{"52:54:00:12:34:56\tweb1 lab", "52:54:00:12:34:57\tweb1 lab", "52:54:00:ab:cd:ef\tdc1"}},
		{[]string{"host", "rm", "52:54:00:a"}, []string{"52:54:00:ab:cd:ef\tdc1"}},
		{[]string{"host", "show", "52:54:00:12:34:56", ""}, nil}, // one argument only
		{[]string{"explain", "52:54:00:12"}, []string{"52:54:00:12:34:56\tweb1 lab", "52:54:00:12:34:57\tweb1 lab"}},
		{[]string{"site", "show", ""}, []string{"dc1", "lab"}},
		{[]string{"host", "set", "52:54:00:00:00:01", "--site", "l"}, []string{"lab"}},
		{[]string{"host", "ls", "--site", ""}, []string{"dc1", "lab"}},
		{[]string{"host", "set", "52:54:00:00:00:01", "--image", ""}, []string{"debian12"}},
		{[]string{"image", "rm", ""}, []string{"debian12"}},
		{[]string{"loader", "rm", ""}, []string{"grub-arm"}},
		{[]string{"host", "set", "52:54:00:00:00:01", "--loader", "g"}, []string{"grub-arm"}},
		{[]string{"events", "--host", "52:54:00:ab"}, []string{"52:54:00:ab:cd:ef\tdc1"}},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			r := runEnv(t, env, append([]string{"__complete"}, c.args...)...)
			if r.code != 0 {
				t.Fatalf("code %d stderr %q", r.code, r.stderr)
			}
			got := completions(t, r.stdout)
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("completions %q, want %q", got, c.want)
			}
		})
	}

	// An unreachable coordinator completes nothing, without a word.
	dead := map[string]string{"FLEETBOOT_NATS": "nats://127.0.0.1:1"}
	r := runEnv(t, dead, "__complete", "host", "show", "")
	if r.code != 0 || len(completions(t, r.stdout)) != 0 || strings.Contains(r.stdout+r.stderr, "error") {
		t.Errorf("unreachable coordinator: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

// completions returns the lines cobra's __complete printed before its
// ":DIRECTIVE" line.
func completions(t *testing.T, stdout string) []string {
	t.Helper()
	var out []string
	for line := range strings.Lines(stdout) {
		line = strings.TrimSuffix(line, "\n")
		if strings.HasPrefix(line, ":") {
			return out
		}
		out = append(out, line)
	}
	t.Fatalf("no directive line in %q", stdout)
	return nil
}
