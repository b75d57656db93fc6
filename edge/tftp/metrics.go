package tftp

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Transfer results, the "result" label of fleetboot_tftp_transfers_total.
const (
	resultComplete = "complete" // the client acknowledged the last block
	resultProbe    = "probe"    // UEFI's size probe: OACK read, aborted with error 8 on purpose
	resultFailed   = "failed"   // time-out, the client's error, a read error
	resultRefused  = "refused"  // an ERROR packet instead of a file (not found, rate, busy, WRQ)
	resultDropped  = "dropped"  // no answer: every transfer slot was taken (the client sends its RRQ again)
	resultRepeat   = "repeat"   // no answer: a copy of a request from the same port still being answered
)

// metrics are the server's series. windowsize is the negotiated value,
// which negotiate clamps to maxWindow, so the label set is bounded.
type metrics struct {
	transfers *prometheus.CounterVec // result, windowsize
	bytes     prometheus.Counter
	seconds   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetboot_tftp_transfers_total",
			Help: "TFTP read requests by result (complete, probe, failed, refused, dropped, repeat) and negotiated windowsize (1 without the option)."},
			[]string{"result", "windowsize"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetboot_tftp_sent_bytes_total",
			Help: "File bytes sent in TFTP DATA packets (retransmissions not counted)."}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fleetboot_tftp_transfer_seconds",
			Help:    "Duration of complete TFTP transfers, request to last acknowledgement.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}),
	}
	for _, r := range []string{resultComplete, resultProbe, resultFailed, resultRefused, resultDropped, resultRepeat} {
		m.transfers.WithLabelValues(r, "1")
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.transfers, m.bytes, m.seconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("tftp: register metrics: %w", err)
		}
	}
	return m, nil
}

// repeat counts a request dropped as a copy of one in progress.
func (m *metrics) repeat() { m.transfers.WithLabelValues(resultRepeat, "1").Inc() }

// finished counts one request: answer's error (a *refusal, or nil) and
// what the transfer recorded of its sending.
func (m *metrics) finished(t *transfer, answerErr error, start time.Time) {
	window := strconv.Itoa(max(t.window, 1))
	var r *refusal
	switch {
	case errors.As(answerErr, &r):
		m.transfers.WithLabelValues(resultRefused, window).Inc()
		return
	case errors.Is(answerErr, errDropped):
		m.transfers.WithLabelValues(resultDropped, window).Inc()
		return
	case !t.sending:
		return // a write request or a refusal the answer handled itself
	case isSizeProbe(t.sendErr):
		m.transfers.WithLabelValues(resultProbe, window).Inc()
	case t.sendErr != nil:
		m.transfers.WithLabelValues(resultFailed, window).Inc()
	default:
		m.transfers.WithLabelValues(resultComplete, window).Inc()
		m.seconds.Observe(time.Since(start).Seconds())
	}
	m.bytes.Add(float64(t.sent))
}
