package proto

import (
	"regexp"
	"strings"
)

// userinfo matches the user[:password]@ of every URL in a text: one URL, a
// comma-separated NATS server list, or an error message quoting a URL (a
// url.Parse error quotes it whole). Greedy up to the last '@' before the
// host, so a password holding a raw '@' is hidden whole too.
var userinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://)([^/\s"',]*)@`)

// RedactURL returns s with the credentials of every URL in it replaced:
// nats://u:secret@host becomes nats://u:xxxxx@host, and a token-only
// nats://secret@host becomes nats://xxxxx@host. Use it wherever a URL is
// logged or put in an error.
func RedactURL(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return userinfo.ReplaceAllStringFunc(s, func(m string) string {
		sub := userinfo.FindStringSubmatch(m)
		scheme, info := sub[1], sub[2]
		if user, _, ok := strings.Cut(info, ":"); ok {
			return scheme + user + ":xxxxx@"
		}
		return scheme + "xxxxx@"
	})
}

// RedactErr wraps err so that its message has every URL's credentials
// redacted (see RedactURL); errors.Is and errors.As still see err.
func RedactErr(err error) error {
	if err == nil {
		return nil
	}
	return redacted{err}
}

type redacted struct{ err error }

func (r redacted) Error() string { return RedactURL(r.err.Error()) }
func (r redacted) Unwrap() error { return r.err }
