package httpboot

import (
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// httpMetrics are the edge's HTTP series, by route: a closed set named for
// what a booting machine asks (its script, its kernel), never the raw path,
// which a client chooses.
type httpMetrics struct {
	requests *prometheus.CounterVec   // route, code
	bytes    *prometheus.CounterVec   // route
	latency  *prometheus.HistogramVec // route: request in to last byte written
}

var httpRoutes = []string{"script", "grub_cfg", "artifact", "loader", "boot_dir", "callback", "template", "metrics", "health", "other"}

// routeOf names the route of path p.
func routeOf(p string) string {
	switch {
	case p == "/boot.ipxe" || p == "/chain.ipxe":
		return "script"
	case p == "/grub.cfg":
		return "grub_cfg"
	case strings.HasPrefix(p, "/artifacts/"):
		return "artifact"
	case strings.HasPrefix(p, "/loaders/"):
		return "loader"
	case strings.HasPrefix(p, "/api/"):
		return "callback"
	case strings.HasPrefix(p, "/t/"):
		return "template"
	case p == "/metrics":
		return "metrics"
	case p == "/healthz":
		return "health"
	case strings.HasPrefix(p, "/boot/") || strings.Count(p, "/") == 1 && len(p) > 1:
		return "boot_dir"
	}
	return "other"
}

// newHTTPMetrics registers the series on reg (nil: counted, not exported).
// A registration error is a wiring mistake (two servers on one registry);
// it is logged and the series stay unexported rather than stopping the edge.
func newHTTPMetrics(reg prometheus.Registerer, log *slog.Logger) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetboot_http_requests_total",
			Help: "HTTP requests answered, by route and status code (refusals by the limits included)."}, []string{"route", "code"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetboot_http_response_bytes_total",
			Help: "HTTP response body bytes written, by route."}, []string{"route"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fleetboot_http_request_seconds",
			Help:    "Time from a request's headers to its last byte written, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"route"}),
	}
	for _, r := range httpRoutes {
		m.bytes.WithLabelValues(r)
	}
	if reg == nil {
		return m
	}
	for _, c := range []prometheus.Collector{m.requests, m.bytes, m.latency} {
		if err := reg.Register(c); err != nil {
			log.Warn("http: metrics not exported", "err", err)
		}
	}
	return m
}

// observe counts one answered request.
func (m *httpMetrics) observe(route string, code int, bytes int64, start time.Time) {
	if code == 0 {
		code = http.StatusOK // nothing written: net/http sends 200
	}
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.bytes.WithLabelValues(route).Add(float64(bytes))
	m.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
}
