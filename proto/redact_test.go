package proto

import (
	"errors"
	"fmt"
	"net/url"
	"testing"
)

func TestRedactURL(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"no credentials", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"user and password", "nats://u:s3cret@h:4222", "nats://u:xxxxx@h:4222"},
		{"token", "tls://s3cret@h:4222", "tls://xxxxx@h:4222"},
		{"server list", "nats://a:p1@h1:4222,nats://b:p2@h2:4222", "nats://a:xxxxx@h1:4222,nats://b:xxxxx@h2:4222"},
		{"raw @ in the password", "nats://u:p@ss@h:4222", "nats://u:xxxxx@h:4222"},
		{"quoted in an error", `parse "nats://u:s3cret@h:x": invalid port`, `parse "nats://u:xxxxx@h:x": invalid port`},
		{"path after the host", "http://u:p@h/a@b", "http://u:xxxxx@h/a@b"},
		// Generated passwords (base64) hold '/', '+' and '=': typed raw
		// into a URL they make it unparsable, and the error quotes it.
		{"raw / in the password", "nats://fleet:Ab3/xY+z=@h:4222", "nats://fleet:xxxxx@h:4222"},
		{"raw / and @ in the password", "nats://fleet:a/b@c@h:4222", "nats://fleet:xxxxx@h:4222"},
		{"raw ? and # in the password", "nats://fleet:a?b#c@h:4222", "nats://fleet:xxxxx@h:4222"},
		{"quoted in url.Parse's error", `parse "nats://fleet:Ab3/xY@h:4222": invalid port ":Ab3" after host`,
			`parse "nats://fleet:xxxxx@h:4222": invalid port ":xxxxx" after host`},
		// Ambiguous with "user:pass/word@host": hidden rather than risk it.
		{"port and a path with @", "http://h:8080/a@b", "http://h:xxxxx@b"},
		{"password cut at '#' by url.Parse", `parse "nats://fleet:Ab3": invalid port ":Ab3" after host`,
			`parse "nats://fleet:xxxxx": invalid port ":xxxxx" after host`},
		{"no credentials, path with @", "http://h/a@b", "http://h/a@b"},
		{"dir store path with @", "dir:///srv/a@b", "dir:///srv/a@b"},
		{"mail address is no URL", "ask admin@example.net", "ask admin@example.net"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RedactURL(tt.in); got != tt.want {
				t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedactErr(t *testing.T) {
	_, perr := url.Parse("nats://u:s3cret@h:bad")
	err := fmt.Errorf("connect: %w", RedactErr(perr))
	if got := err.Error(); got != `connect: parse "nats://u:xxxxx@h:bad": invalid port ":xxxxx" after host` {
		t.Errorf("message %q", got)
	}
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Error("errors.As lost the url.Error")
	}
	if RedactErr(nil) != nil {
		t.Error("RedactErr(nil) != nil")
	}
}
