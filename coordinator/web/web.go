// Package web is the coordinator's web panel: people log in with the same
// identities and roles as the CLI (a web password set by `user add --web`),
// see sites, edges, hosts and each host's boot timeline, and change hosts,
// one or many at once. Every read and change goes through the same API
// calls as the CLI's (api.Local), made as the logged-in person: the same
// guard refuses what her role may not do, and the audit log records her
// name.
package web

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fleetboot/fleetboot/coordinator/audit"
	"github.com/fleetboot/fleetboot/coordinator/auth"
	"github.com/fleetboot/fleetboot/coordinator/service"
	"github.com/fleetboot/fleetboot/coordinator/timeline"
	"github.com/fleetboot/fleetboot/proto"
)

// API makes an admin API request as a person (see api.Local).
type API interface {
	Call(ctx context.Context, who proto.Identity, endpoint string, req, resp any) error
}

// Login checks people's web passwords and finds their live identities (see
// auth.Authority).
type Login interface {
	WebLogin(name, password string) (proto.Identity, error)
	// Person returns the live identity of a name; a session whose person
	// was revoked ends at its next request.
	Person(name string) (proto.Identity, bool)
}

// Events returns a machine's recorded events since a time.
type Events interface {
	Events(ctx context.Context, macs []string, since time.Time) ([]proto.Event, error)
}

// Config of the panel.
type Config struct {
	API   API
	Login Login
	// Hosts, if set, is the hosts page's source (see HostIndex): nil lists
	// them through the API on every request.
	Hosts  *HostIndex
	Events Events
	// Live, if set, makes the host page's timeline and the events page
	// follow the EVENTS stream (see StreamEvents); nil: no live pages.
	Live   Live
	Logger *slog.Logger
	Now    func() time.Time
	// Listen is the address the panel is bound to, and Names the other
	// names it is reached by (--http-name): requests with any other Host
	// are refused (see hostCheck). An empty Listen means loopback.
	Listen string
	Names  []string
	// Secure marks the cookies Secure: the panel is served over TLS.
	Secure bool
	// SessionIdle and SessionMax end a session after that long without a
	// request, and that long after login (defaults 30 min and 12 h).
	SessionIdle, SessionMax time.Duration
	// LoginFailures failed logins per name or per source address within
	// LoginWindow lock further logins for them (defaults 5 and 15 min).
	LoginFailures int
	LoginWindow   time.Duration
	// StreamsPerSession and Streams bound the live pages' open streams
	// per session and in all (defaults 8 and 512); StreamHeartbeat is how
	// often an idle stream sends a comment so proxies keep it open (20 s).
	StreamsPerSession, Streams int
	StreamHeartbeat            time.Duration

	// Audit reads the audit log for the audit page; nil: the page says
	// it is not available. Boots (bootstats.Tracker) and EdgeHistory feed
	// the site page's sparklines; nil: none drawn.
	Audit       AuditLog
	Boots       BootCounts
	EdgeHistory *EdgeHistory
}

//go:embed templates/*.html
var templatesFS embed.FS

// liveJS is the live pages' script (static/live.js), served from the
// binary like the templates.
//
//go:embed static/live.js
var liveJS []byte

// Handler serves the panel.
type Handler struct {
	cfg      Config
	tmpl     *template.Template
	mux      *http.ServeMux
	names    hostCheck
	sessions *sessions
	limit    *limiter
	streams  *streams
}

// New builds the panel's handler.
func New(cfg Config) (*Handler, error) {
	if cfg.API == nil || cfg.Login == nil || cfg.Events == nil {
		return nil, errors.New("web: the panel needs an API, a login and events")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = 30 * time.Minute
	}
	if cfg.SessionMax <= 0 {
		cfg.SessionMax = 12 * time.Hour
	}
	if cfg.LoginFailures <= 0 {
		cfg.LoginFailures = 5
	}
	if cfg.LoginWindow <= 0 {
		cfg.LoginWindow = 15 * time.Minute
	}
	if cfg.StreamsPerSession <= 0 {
		cfg.StreamsPerSession = defaultStreamsPerSession
	}
	if cfg.Streams <= 0 {
		cfg.Streams = defaultStreams
	}
	if cfg.StreamHeartbeat <= 0 {
		cfg.StreamHeartbeat = defaultHeartbeat
	}
	tmpl, err := template.New("").Funcs(template.FuncMap{
		"ts":      func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
		"ago":     func(t time.Time) string { return humanDuration(cfg.Now().Sub(t)) },
		"delta":   formatDelta,
		"dur":     humanDuration,
		"bytes":   humanBytes,
		"summary": timeline.Summary,
		"join":    strings.Join,
		"mul100":  func(f float64) float64 { return f * 100 },
		"add":     func(a, b int) int { return a + b },
		"list":    func(s ...string) []string { return s },
	}).Funcs(pageFuncs()).ParseFS(templatesFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	h := &Handler{
		cfg: cfg, tmpl: tmpl, mux: http.NewServeMux(), names: newHostCheck(cfg.Listen, cfg.Names),
		sessions: newSessions(cfg.SessionIdle, cfg.SessionMax, cfg.Now),
		limit:    newLimiter(cfg.LoginFailures, cfg.LoginWindow, cfg.Now),
		streams:  newStreams(cfg.StreamsPerSession, cfg.Streams),
	}
	h.mux.HandleFunc("GET /login", h.loginPage)
	h.mux.HandleFunc("POST /login", h.login)
	h.mux.HandleFunc("POST /logout", h.authed(h.logout))
	h.mux.HandleFunc("GET /{$}", h.authed(h.overview))
	h.mux.HandleFunc("GET /hosts", h.authed(h.hosts))
	h.mux.HandleFunc("GET /hosts/{mac}", h.authed(h.host))
	h.mux.HandleFunc("POST /hosts/{mac}", h.authed(h.hostSet))
	h.mux.HandleFunc("POST /bulk", h.authed(h.bulk))
	if cfg.Live != nil {
		h.mux.HandleFunc("GET /hosts/{mac}/events/stream", h.authed(h.hostStream))
		h.mux.HandleFunc("GET /events", h.authed(h.eventsPage))
		h.mux.HandleFunc("GET /events/stream", h.authed(h.eventsStream))
	}
	h.mux.HandleFunc("GET /static/live.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(liveJS)
	})
	h.routePages()
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// No script but the panel's own file (no inline script, so an
	// injected tag runs nothing), no frame, no form to another origin.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "same-origin")
	// /healthz says only "ok", and probes often use an address the panel
	// was not told about.
	if r.URL.Path != "/healthz" && !h.names.allows(r.Host) {
		h.cfg.Logger.Debug("web panel: refused a request for another host", "host", r.Host, "remote", r.RemoteAddr)
		h.names.refuse(w, r)
		return
	}
	if r.Method == http.MethodPost && !h.sameOrigin(r) {
		http.Error(w, "fleetboot: refused a form sent from another site", http.StatusForbidden)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// sameOrigin refuses POSTs a browser says come from another site: the
// CSRF token is the real defence, this one costs nothing.
func (h *Handler) sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s == "cross-site" || s == "same-site" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true // not sent by every client; the token decides
	}
	u, err := url.Parse(o)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// authed serves fn to requests with a live session: others are sent to
// the login page (GET) or refused (POST). A POST must carry the session's
// CSRF token.
func (h *Handler) authed(fn func(http.ResponseWriter, *http.Request, who)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(sessionCookie)
		var ss session
		ok := err == nil
		if ok {
			ss, ok = h.sessions.get(c.Value)
		}
		var id proto.Identity
		if ok {
			// Her role may have changed or been revoked since she logged in.
			if id, ok = h.cfg.Login.Person(ss.name); !ok {
				h.sessions.end(c.Value)
			}
		}
		if !ok {
			if r.Method != http.MethodGet {
				http.Error(w, "fleetboot: not logged in, or the session expired: log in again", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		u := who{key: c.Value, csrf: ss.csrf, id: id, canEdit: id.Role == auth.RoleAdmin || id.Role == auth.RoleSiteAdmin}
		if r.Method == http.MethodPost {
			if err := r.ParseForm(); err != nil {
				http.Error(w, "fleetboot: unreadable form", http.StatusBadRequest)
				return
			}
			if !sameToken(r.PostFormValue("csrf"), ss.csrf) {
				h.cfg.Logger.Warn("web panel: form without its CSRF token refused", "who", id.Name, "path", r.URL.Path, "remote", r.RemoteAddr)
				http.Error(w, "fleetboot: the form's token is missing or stale: reload the page and try again", http.StatusForbidden)
				return
			}
		}
		fn(w, r, u)
	}
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	h.renderLogin(w, r, http.StatusOK, "", "")
}

func (h *Handler) renderLogin(w http.ResponseWriter, r *http.Request, code int, name, msg string) {
	tok := token()
	http.SetCookie(w, h.cookie(loginCookie, tok, 600))
	w.WriteHeader(code)
	h.render(w, "login.html", map[string]any{"Page": page{Title: "log in"}, "CSRF": tok, "Name": name, "Error": msg, "Next": safeNext(r.FormValue("next"))})
}

// safeNext keeps a post-login redirect on the panel: a path, never
// another site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	return next
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "fleetboot: unreadable form", http.StatusBadRequest)
		return
	}
	c, err := r.Cookie(loginCookie)
	if err != nil || !sameToken(r.PostFormValue("csrf"), c.Value) {
		http.Error(w, "fleetboot: the login form's token is missing or stale: reload the page", http.StatusForbidden)
		return
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	addr, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		addr = r.RemoteAddr
	}
	keys := []string{"name:" + name, "addr:" + addr}
	if !h.limit.allowed(keys...) {
		h.cfg.Logger.Warn("web panel: login refused, too many failures", "name", name, "remote", addr)
		h.renderLogin(w, r, http.StatusTooManyRequests, name, "Too many failed logins for this name or address: wait a few minutes.")
		return
	}
	id, err := h.cfg.Login.WebLogin(name, r.PostFormValue("password"))
	if err != nil {
		h.limit.failed(keys...)
		h.cfg.Logger.Warn("web panel: login failed", "name", name, "remote", addr)
		h.renderLogin(w, r, http.StatusUnauthorized, name, "Wrong name or password.")
		return
	}
	key, _ := h.sessions.start(id.Name)
	h.cfg.Logger.Info("web panel: logged in", "who", id.String(), "remote", addr)
	http.SetCookie(w, h.cookie(loginCookie, "", -1))
	http.SetCookie(w, h.cookie(sessionCookie, key, int(h.cfg.SessionMax/time.Second)))
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request, u who) {
	h.sessions.end(u.key)
	http.SetCookie(w, h.cookie(sessionCookie, "", -1))
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// page is what every page's layout needs.
type page struct {
	Title string
	Who   proto.Identity
	Edit  bool
	CSRF  string
}

func (u who) page(title string) page {
	return page{Title: title, Who: u.id, Edit: u.canEdit, CSRF: u.csrf}
}

func (h *Handler) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := h.tmpl.ExecuteTemplate(w, name, data); err != nil {
		h.cfg.Logger.Error("web panel: render", "page", name, "err", err)
	}
}

// fail answers an API error with its code and one line.
func (h *Handler) fail(w http.ResponseWriter, err error) {
	code := statusOf(err)
	if code >= 500 {
		h.cfg.Logger.Warn("web panel", "err", err)
	}
	http.Error(w, "fleetboot: "+err.Error(), code)
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, auth.ErrDenied):
		return http.StatusForbidden
	case errors.Is(err, service.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, service.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, service.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, audit.ErrFull):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}
