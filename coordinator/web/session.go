package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// Cookie names. The session cookie is HttpOnly and SameSite=Strict (and
// Secure over TLS): a page of another site can neither read it nor make
// the browser send it.
const (
	sessionCookie = "fleetboot_session"
	loginCookie   = "fleetboot_login" // the login form's CSRF token, before any session
)

// session is one logged-in person. Its token is the cookie's value; csrf
// goes into every form and must come back with every POST.
type session struct {
	name    string // the person; her identity is looked up on every request
	csrf    string
	created time.Time
	seen    time.Time
}

// sessions is the server-side session store: a cookie is only a random
// key into it, so logging out or expiring ends a session for good.
type sessions struct {
	idle, max time.Duration
	now       func() time.Time

	mu sync.Mutex
	m  map[string]*session
}

func newSessions(idle, max time.Duration, now func() time.Time) *sessions {
	return &sessions{idle: idle, max: max, now: now, m: map[string]*session{}}
}

// token returns 32 random bytes, URL-safe.
func token() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand panics instead)
	return base64.RawURLEncoding.EncodeToString(b)
}

// start makes a session for name and returns its key.
func (s *sessions) start(name string) (string, *session) {
	now := s.now()
	k := token()
	ss := &session{name: name, csrf: token(), created: now, seen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	s.m[k] = ss
	return k, ss
}

// get returns the live session of key, touching it; expired ones are
// removed.
func (s *sessions) get(key string) (session, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[key]
	if !ok {
		return session{}, false
	}
	if s.expired(ss, now) {
		delete(s.m, key)
		return session{}, false
	}
	ss.seen = now
	return *ss, true
}

func (s *sessions) expired(ss *session, now time.Time) bool {
	return now.Sub(ss.seen) > s.idle || now.Sub(ss.created) > s.max
}

func (s *sessions) end(key string) {
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
}

// pruneLocked drops expired sessions, so the store does not grow with
// sessions nobody logs out of.
func (s *sessions) pruneLocked(now time.Time) {
	for k, ss := range s.m {
		if s.expired(ss, now) {
			delete(s.m, k)
		}
	}
}

// limiter counts failed logins per key (a name, a source address) in a
// sliding window: past max failures, logins for that key are refused until
// the window has passed since the oldest counted failure. Counting the
// name stops a slow guess of one person's password from many addresses;
// counting the address stops one machine guessing many names.
type limiter struct {
	max    int
	window time.Duration
	now    func() time.Time

	mu   sync.Mutex
	fail map[string][]time.Time
}

func newLimiter(max int, window time.Duration, now func() time.Time) *limiter {
	return &limiter{max: max, window: window, now: now, fail: map[string][]time.Time{}}
}

// allowed tells whether every key may try to log in now.
func (l *limiter) allowed(keys ...string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		if len(l.recentLocked(k, now)) >= l.max {
			return false
		}
	}
	return true
}

// failed counts a failed login against every key.
func (l *limiter) failed(keys ...string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.fail) > 100_000 {
		// Bounded: forget keys whose failures are all old.
		for k := range l.fail {
			if len(l.recentLocked(k, now)) == 0 {
				delete(l.fail, k)
			}
		}
	}
	for _, k := range keys {
		l.fail[k] = append(l.recentLocked(k, now), now)
	}
}

func (l *limiter) recentLocked(k string, now time.Time) []time.Time {
	ts := l.fail[k]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) > l.window {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(l.fail, k)
		return nil
	}
	l.fail[k] = ts
	return ts
}

// sameToken compares a form's CSRF token with the expected one in constant
// time; an empty expected token never matches.
func sameToken(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// who is the logged-in person a request is made by.
type who struct {
	key     string // session key
	csrf    string
	id      proto.Identity
	canEdit bool // admin or site-admin: forms are shown
}

func (h *Handler) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, HttpOnly: true, Secure: h.cfg.Secure, SameSite: http.SameSiteStrictMode}
}
