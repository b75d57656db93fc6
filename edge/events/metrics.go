package events

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterMetrics exports r's counters on reg: the backlog (emitted, not
// yet acknowledged by JetStream — it grows while the WAN is down), sent
// and dropped. They are read from Stats at scrape time, so they cost the
// boot path nothing.
func (r *Recorder) RegisterMetrics(reg prometheus.Registerer) error {
	stat := func(f func(Stats) uint64) func() float64 {
		return func() float64 { return float64(f(r.Stats())) }
	}
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fleetboot_events_backlog",
			Help: "Boot events recorded on disk and not yet acknowledged by the coordinator's stream."},
			stat(func(s Stats) uint64 { return s.Buffered })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetboot_events_sent_total",
			Help: "Boot events acknowledged by the coordinator's stream since the edge started."},
			stat(func(s Stats) uint64 { return s.Sent })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetboot_events_dropped_total",
			Help: "Boot events dropped since the edge started because the on-disk buffer was full."},
			stat(func(s Stats) uint64 { return s.Dropped })),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("events: register metrics: %w", err)
		}
	}
	return nil
}
