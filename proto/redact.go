package proto

import (
	"regexp"
	"strings"
)

// scheme finds where a URL's authority starts: after "scheme://".
var scheme = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://`)

// badPort is url.Parse's complaint about a URL whose password holds a raw
// '/', '?' or '#': it takes "user:pass" for "host:port" and quotes the start
// of the password as the port.
var badPort = regexp.MustCompile(`invalid port "(:[^"]*)" after host`)

// RedactURL returns s with the credentials of every URL in it replaced:
// nats://u:secret@host becomes nats://u:xxxxx@host, and a token-only
// nats://secret@host becomes nats://xxxxx@host. It finds them in one URL, a
// comma-separated NATS server list, or an error message quoting a URL (a
// url.Parse error quotes it whole), and hides a password holding a raw '@',
// '/', '?' or '#' whole too (generated passwords hold '/'). Use it wherever a
// URL is logged or put in an error.
func RedactURL(s string) string {
	if !strings.Contains(s, "@") && !strings.Contains(s, "invalid port") {
		return s
	}
	var b strings.Builder
	rest := s
	for {
		loc := scheme.FindStringIndex(rest)
		if loc == nil {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:loc[1]])
		rest = rest[loc[1]:]
		end := strings.IndexAny(rest, " \t\r\n\"',")
		if end < 0 {
			end = len(rest)
		}
		at := userinfoEnd(rest[:end])
		if at < 0 {
			continue
		}
		if user, _, ok := strings.Cut(rest[:at], ":"); ok {
			b.WriteString(user + ":xxxxx@")
		} else {
			b.WriteString("xxxxx@")
		}
		rest = rest[at+1:]
	}
	out := b.String()
	for _, m := range badPort.FindAllStringSubmatch(out, -1) {
		// A '#' ends the URL url.Parse quotes: "nats://user:pass" without
		// an '@', the password's start taken for the port. (With an '@'
		// the userinfo is hidden above, and the port is a port.)
		if len(m[1]) > 1 && !strings.Contains(s, "@") {
			out = strings.ReplaceAll(out, m[1]+`"`, `:xxxxx"`)
		}
	}
	return badPort.ReplaceAllString(out, `invalid port ":xxxxx" after host`)
}

// userinfoEnd returns the index of the '@' ending the userinfo at the start
// of authority (a URL after its "scheme://", up to a space, quote or comma),
// or -1 when it has none. Greedy up to the last '@' before the first '/', so
// a password holding a raw '@' is hidden whole. With no '@' before the first
// '/', an '@' after it belongs to a path, unless what precedes the '/' is
// "user:pass…": then the password holds a raw '/', and it is hidden whole
// (a "host:port/path@x" is hidden too: better than showing a password).
func userinfoEnd(authority string) int {
	slash := strings.IndexByte(authority, '/')
	if slash < 0 {
		slash = len(authority)
	}
	if i := strings.LastIndexByte(authority[:slash], '@'); i >= 0 {
		return i
	}
	if strings.Contains(authority[:slash], ":") {
		if i := strings.LastIndexByte(authority, '@'); i > slash {
			return i
		}
	}
	return -1
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
