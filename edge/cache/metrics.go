package cache

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Fetch error reasons, the values of the "reason" label of
// fleetboot_cache_fetch_errors_total and of the events' "error" detail.
const (
	ReasonNotFound       = "not_found"       // the store has no such object
	ReasonStore          = "store"           // the store failed or could not be reached
	ReasonTimeout        = "timeout"         // the store sent nothing for FetchTimeout
	ReasonSizeMismatch   = "size_mismatch"   // the object's length differs from the registered size
	ReasonDigestMismatch = "digest_mismatch" // the object's sha256 differs from the registered digest
	ReasonDiskFull       = "disk_full"       // no space left on the cache's file system
	ReasonDisk           = "disk"            // any other local I/O error
	ReasonTooLarge       = "too_large"       // the artifact is larger than the whole cache
	ReasonNoRoom         = "no_room"         // the cache is full of downloads in progress
	ReasonClosed         = "closed"          // the cache is shutting down
	ReasonAbandoned      = "abandoned"       // every client left an unpinned download
)

var allReasons = []string{ReasonNotFound, ReasonStore, ReasonTimeout, ReasonSizeMismatch,
	ReasonDigestMismatch, ReasonDiskFull, ReasonDisk, ReasonTooLarge, ReasonNoRoom, ReasonClosed, ReasonAbandoned}

type metrics struct {
	hits, misses  prometheus.Counter
	servedBytes   prometheus.Counter
	fetchedBytes  prometheus.Counter
	evictions     prometheus.Counter
	fetchInFlight prometheus.Gauge
	fetchErrors   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, c *Cache) (*metrics, error) {
	m := &metrics{
		hits: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetboot_cache_hits_total",
			Help: "Artifact requests answered from the local disk."}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetboot_cache_misses_total",
			Help: "Artifact requests that needed (or joined) a fetch from the store."}),
		servedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetboot_cache_served_bytes_total",
			Help: "Response body bytes written to clients."}),
		fetchedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetboot_cache_fetched_bytes_total",
			Help: "Bytes received from the artifact store."}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetboot_cache_evictions_total",
			Help: "Artifacts removed to keep the cache within its byte bound."}),
		fetchInFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fleetboot_cache_fetches_in_flight",
			Help: "Store fetches currently running."}),
		fetchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetboot_cache_fetch_errors_total",
			Help: "Failed fetches by reason."}, []string{"reason"}),
	}
	for _, r := range allReasons {
		m.fetchErrors.WithLabelValues(r) // export zeros so alerts can use rate() from the start
	}
	cs := []prometheus.Collector{m.hits, m.misses, m.servedBytes, m.fetchedBytes, m.evictions,
		m.fetchInFlight, m.fetchErrors,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fleetboot_cache_bytes",
			Help: "Bytes of verified artifacts on disk."}, func() float64 { return float64(c.Stats().Bytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fleetboot_cache_entries",
			Help: "Verified artifacts on disk."}, func() float64 { return float64(c.Stats().Entries) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fleetboot_cache_max_bytes",
			Help: "The cache's byte bound (--cache-size)."}, func() float64 { return float64(c.max) }),
	}
	for _, col := range cs {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("cache: register metrics: %w", err)
		}
	}
	return m, nil
}

// Metrics serves the cache's metrics in the Prometheus text format, for the
// edge's /metrics. It serves the private registry when Config.Registerer was
// nil, or the caller's registry when that is also a prometheus.Gatherer (a
// *prometheus.Registry is); otherwise the caller serves its own registry and
// this handler answers 404.
func (c *Cache) Metrics() http.Handler {
	if c.gatherer == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(c.gatherer, promhttp.HandlerOpts{})
}
