package dhcp

import (
	"fmt"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus series. Reasons and message types are
// the label values: a closed set, exported as zeros from the start so that
// rate() and alerts work before the first drop.
type metrics struct {
	received *prometheus.CounterVec // by DHCP message type
	replies  *prometheus.CounterVec // by reply type (offer, ack, nak)
	silent   prometheus.Counter     // requests the handler answered with nothing (unknown MAC ignored, not for us)
	drops    *prometheus.CounterVec // by reason
	latency  prometheus.Histogram   // decision + lease commit, request in to reply out
}

var (
	metricTypes  = []string{"discover", "request", "decline", "release", "inform", "other"}
	replyTypes   = []string{"offer", "ack", "nak", "other"}
	dropReasons  = []string{reasonTruncated, reasonCookie, reasonOptionEnd, reasonNoEnd, reasonNotRequest, reasonOverload, reasonOptionLong, reasonClientFlood, reasonSourceFlood, reasonOverloaded, reasonNotServed, reasonNotSent}
	latencySlots = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}
)

// newMetrics registers the series on reg; nil reg keeps them unregistered
// (counted, not exported), as in tests that do not look at them.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetboot_dhcp_requests_total",
			Help: "DHCP requests parsed and admitted, by message type."}, []string{"type"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetboot_dhcp_replies_total",
			Help: "DHCP replies sent, by message type."}, []string{"type"}),
		silent: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetboot_dhcp_unanswered_total",
			Help: "Admitted requests the edge chose not to answer (a MAC the site ignores, a REQUEST for another server)."}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetboot_dhcp_dropped_total",
			Help: "DHCP packets dropped before or while handling, by reason."}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fleetboot_dhcp_handle_seconds",
			Help: "Time from an admitted request to its reply on the wire (decision, lease commit, send).", Buckets: latencySlots}),
	}
	for _, t := range metricTypes {
		m.received.WithLabelValues(t)
	}
	for _, t := range replyTypes {
		m.replies.WithLabelValues(t)
	}
	for _, r := range dropReasons {
		m.drops.WithLabelValues(reasonLabel(r))
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.received, m.replies, m.silent, m.drops, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("dhcp: register metrics: %w", err)
		}
	}
	return m, nil
}

// reasonLabel turns a log reason ("client flood") into a label value
// ("client_flood"), the Prometheus convention.
func reasonLabel(reason string) string { return strings.ReplaceAll(reason, " ", "_") }

func (m *metrics) dropped(reason string) { m.drops.WithLabelValues(reasonLabel(reason)).Inc() }

func (m *metrics) request(t dhcpv4.MessageType) {
	m.received.WithLabelValues(typeLabel(t, metricTypes)).Inc()
}

// answered counts one handled request: the type of its reply (None: no
// reply) and how long it took since start.
func (m *metrics) answered(t dhcpv4.MessageType, start time.Time) {
	m.latency.Observe(time.Since(start).Seconds())
	if t == dhcpv4.MessageTypeNone {
		m.silent.Inc()
		return
	}
	m.replies.WithLabelValues(typeLabel(t, replyTypes)).Inc()
}

// typeLabel is t's lower-case name when it is one of known, else "other":
// a client choosing message types must not create series.
func typeLabel(t dhcpv4.MessageType, known []string) string {
	name := strings.ToLower(t.String())
	for _, k := range known {
		if k == name {
			return name
		}
	}
	return "other"
}
