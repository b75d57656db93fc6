package cli_test

import (
	"strings"
	"testing"
)

// TestUserAddFlags: `user add` refuses a bad role or site with one line and
// exit 1 before it makes a key or reaches the coordinator (none runs here).
func TestUserAddFlags(t *testing.T) {
	env := []string{"FLEETBOOT_NATS=nats://127.0.0.1:1"}
	cases := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"site admin without a site", []string{"--role", "site-admin"},
			"fleetboot: --role site-admin needs --site SITE: the site this admin manages\n"},
		{"site admin with an empty site", []string{"--role", "site-admin", "--site", ""},
			"fleetboot: --role site-admin needs --site SITE: the site this admin manages\n"},
		{"site admin of a dotted site", []string{"--role", "site-admin", "--site", "a.b"},
			"fleetboot: invalid site name \"a.b\": use lower-case letters, digits, '_' or '-', starting with a letter or digit (at most 64, no '.')\n"},
		{"viewer with a site", []string{"--role", "viewer", "--site", "branch1"},
			"fleetboot: --site applies only to --role site-admin (an admin or a viewer has no site)\n"},
		{"admin with a site", []string{"--role", "admin", "--site", "branch1"},
			"fleetboot: --site applies only to --role site-admin (an admin or a viewer has no site)\n"},
		{"unknown role", []string{"--role", "siteadmin", "--site", "branch1"},
			"fleetboot: invalid --role \"siteadmin\": want admin, viewer or site-admin\n"},
		{"no role", nil, "fleetboot: invalid --role \"\": want admin, viewer or site-admin\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, env, append([]string{"user", "add", "bob", "--out", t.TempDir() + "/bob.creds"}, c.args...)...)
			if r.code != 1 || r.stderr != c.stderr {
				t.Fatalf("exit %d, stderr %q\nwant exit 1, %q", r.code, r.stderr, c.stderr)
			}
		})
	}
	t.Run("web password too short", func(t *testing.T) {
		r := run(t, append(env, "FLEETBOOT_WEB_PASSWORD=short"), "user", "add", "bob", "--role", "admin", "--web", "--out", t.TempDir()+"/bob.creds")
		if want := "fleetboot: --web: the web password must have at least 12 characters\n"; r.code != 1 || r.stderr != want {
			t.Fatalf("exit %d, stderr %q\nwant exit 1, %q", r.code, r.stderr, want)
		}
	})
	t.Run("help", func(t *testing.T) {
		r := run(t, env, "user", "add", "--help")
		for _, want := range []string{"--role admin|viewer|site-admin [--site SITE]", "site-admin  (with --site SITE) may create and change SITE's configuration",
			"--site string", "fleetboot user add bob --role site-admin --site branch1"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("help lacks %q:\n%s", want, r.stdout)
			}
		}
	})
}
