package cli_test

import "testing"

// TestIPv6RAFlag: --ipv6-ra is auto unless set, and a bad value is one line.
func TestIPv6RAFlag(t *testing.T) {
	for _, c := range []struct {
		name  string
		args  []string
		want  string
		fails string
	}{
		{name: "default", want: "auto"},
		{name: "off", args: []string{"--ipv6-ra", "off"}, want: "off"},
		{name: "on", args: []string{"--ipv6-ra", "on"}, want: "on"},
		{name: "bad", args: []string{"--ipv6-ra", "yes"}, fails: `invalid --ipv6-ra "yes": want auto, on or off`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := runEnv(t, nil, edgeCheck(t, c.args...)...)
			if c.fails != "" {
				checkOneLine(t, r, c.fails)
				return
			}
			if r.code != 0 {
				t.Fatalf("exit code %d: %s", r.code, r.stderr)
			}
			if got := setting(t, r, "ipv6-ra"); got != c.want {
				t.Errorf("ipv6-ra = %q, want %q", got, c.want)
			}
		})
	}
}
