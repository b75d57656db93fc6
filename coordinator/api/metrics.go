package api

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the API's series: requests by endpoint and result code (the
// code the CLI sees: 200, 400, 403 refused by the guard, 404, 409, 500,
// 503 audit full) and latency by endpoint.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewMetrics registers the API's series on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetboot_api_requests_total",
			Help: "Admin API requests answered, by endpoint and code (403: refused by the caller's role)."}, []string{"endpoint", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fleetboot_api_request_seconds",
			Help:    "Admin API request handling time (guard, audit, service call), by endpoint.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"endpoint"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("api: register metrics: %w", err)
		}
	}
	return m, nil
}

// observe counts one answered request; nil m counts nothing.
func (m *Metrics) observe(endpoint string, err error, start time.Time) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(endpoint, codeOf(err)).Inc()
	m.latency.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
}
