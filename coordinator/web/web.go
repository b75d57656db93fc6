// Package web is the coordinator's read-only web panel: sites, edges with
// their heartbeats, hosts, and each host's boot timeline with the diagnosis
// of where a boot stopped. Changes go through the CLI (and its audit); the
// panel only shows.
package web

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/fleetboot/fleetboot/coordinator/timeline"
	"github.com/fleetboot/fleetboot/proto"
)

// Desired is the desired state the panel shows.
type Desired interface {
	ListSites(ctx context.Context) ([]proto.Site, error)
	ListHosts(ctx context.Context, site string) ([]proto.Host, error)
	GetHost(ctx context.Context, mac string) (proto.Host, error)
}

// Edges lists the edges' last heartbeats.
type Edges interface {
	ListEdges(ctx context.Context) ([]proto.EdgeView, error)
}

// Events returns a machine's recorded events since a time.
type Events interface {
	Events(ctx context.Context, macs []string, since time.Time) ([]proto.Event, error)
}

// Config of the panel.
type Config struct {
	Desired Desired
	Edges   Edges
	Events  Events
	Logger  *slog.Logger
	Now     func() time.Time
	// Listen is the address the panel is bound to, and Names the other
	// names it is reached by (--http-name): requests with any other Host
	// are refused (see hostCheck). An empty Listen means loopback.
	Listen string
	Names  []string
}

//go:embed templates/*.html
var templatesFS embed.FS

// Handler serves the panel.
type Handler struct {
	cfg   Config
	tmpl  *template.Template
	mux   *http.ServeMux
	names hostCheck
}

// New builds the panel's handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tmpl, err := template.New("").Funcs(template.FuncMap{
		"ts":      func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
		"ago":     func(t time.Time) string { return cfg.Now().Sub(t).Round(time.Second).String() },
		"delta":   formatDelta,
		"summary": timeline.Summary,
		"join":    strings.Join,
		"mul100":  func(f float64) float64 { return f * 100 },
	}).ParseFS(templatesFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, tmpl: tmpl, mux: http.NewServeMux(), names: newHostCheck(cfg.Listen, cfg.Names)}
	h.mux.HandleFunc("GET /{$}", h.overview)
	h.mux.HandleFunc("GET /hosts", h.hosts)
	h.mux.HandleFunc("GET /hosts/{mac}", h.host)
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// /healthz says only "ok", and probes often use an address the panel
	// was not told about.
	if r.URL.Path != "/healthz" && !h.names.allows(r.Host) {
		h.cfg.Logger.Debug("web panel: refused a request for another host", "host", r.Host, "remote", r.RemoteAddr)
		h.names.refuse(w, r)
		return
	}
	h.mux.ServeHTTP(w, r)
}

type siteRow struct {
	proto.Site
	Hosts int
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	sites, err := h.cfg.Desired.ListSites(ctx)
	if err != nil {
		h.fail(w, err)
		return
	}
	hosts, err := h.cfg.Desired.ListHosts(ctx, "")
	if err != nil {
		h.fail(w, err)
		return
	}
	edges, err := h.cfg.Edges.ListEdges(ctx)
	if err != nil {
		h.fail(w, err)
		return
	}
	rows := make([]siteRow, 0, len(sites))
	for _, s := range sites {
		n := 0
		for _, host := range hosts {
			if host.Site == s.Name {
				n++
			}
		}
		rows = append(rows, siteRow{s, n})
	}
	h.render(w, "overview.html", map[string]any{"Sites": rows, "Edges": edges, "Hosts": len(hosts)})
}

func (h *Handler) hosts(w http.ResponseWriter, r *http.Request) {
	site := r.URL.Query().Get("site")
	if site != "" {
		if err := proto.ValidSiteName(site); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	hosts, err := h.cfg.Desired.ListHosts(r.Context(), site)
	if err != nil {
		h.fail(w, err)
		return
	}
	h.render(w, "hosts.html", map[string]any{"Site": site, "Hosts": hosts})
}

func (h *Handler) host(w http.ResponseWriter, r *http.Request) {
	mac, err := proto.ParseMAC(r.PathValue("mac"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	macs := []string{mac}
	var known *proto.Host
	if host, err := h.cfg.Desired.GetHost(ctx, mac); err == nil {
		known = &host
		macs = host.MACs()
	} else if !strings.Contains(err.Error(), "not found") {
		h.fail(w, err)
		return
	}
	now := h.cfg.Now()
	evs, err := h.cfg.Events.Events(ctx, macs, now.Add(-24*time.Hour))
	if err != nil {
		h.fail(w, err)
		return
	}
	boots := timeline.Last(timeline.Build(evs, timeline.Options{Now: now}), 5)
	slices.Reverse(boots) // newest first
	h.render(w, "host.html", map[string]any{"MAC": mac, "Host": known, "Boots": boots})
}

func (h *Handler) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := h.tmpl.ExecuteTemplate(w, name, data); err != nil {
		h.cfg.Logger.Error("web panel: render", "page", name, "err", err)
	}
}

func (h *Handler) fail(w http.ResponseWriter, err error) {
	h.cfg.Logger.Warn("web panel", "err", err)
	code := http.StatusInternalServerError
	if errors.Is(err, context.DeadlineExceeded) {
		code = http.StatusGatewayTimeout
	}
	http.Error(w, "fleetboot: "+err.Error(), code)
}

func formatDelta(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}
