// Package audit records every change request the coordinator accepts or
// refuses in the JetStream stream AUDIT, and reads it back for
// `fleetboot audit`. A record names who asked (the credential's identity),
// what (the endpoint and the request), when, and the outcome.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/ratelog"
)

// SubjectPrefix: records go to fleetboot.audit.<action> (proto). Only the
// coordinator may publish there (people and edges have no permission to).
const SubjectPrefix = proto.SubjectAuditPrefix

// Outcomes.
const (
	Accepted = "accepted"
	Refused  = "refused"
)

// maxRequest bounds the request kept in a record: installer facts may be
// large, and the audit says what was asked, not every byte of it.
const maxRequest = 4096

// Record is one audited request.
type Record struct {
	V       int             `json:"v"`
	Time    time.Time       `json:"time"`
	Who     string          `json:"who"`            // identity name ("anonymous" without --auth)
	Role    string          `json:"role,omitempty"` // admin, viewer, edge
	Site    string          `json:"site,omitempty"` // an edge's site
	Key     string          `json:"key,omitempty"`  // the credential's public key
	Action  string          `json:"action"`         // API endpoint, e.g. host.set
	Request json.RawMessage `json:"request,omitempty"`
	Outcome string          `json:"outcome"`
	Error   string          `json:"error,omitempty"`
	Seq     uint64          `json:"seq,omitempty"` // stream sequence, set by Read
}

// SetRequest keeps body as the record's request: as JSON when it is JSON
// (truncated ones become a string), so `audit -o json` stays readable.
func (r *Record) SetRequest(body []byte) {
	if len(body) == 0 {
		return
	}
	if len(body) <= maxRequest && json.Valid(body) {
		r.Request = json.RawMessage(body)
		return
	}
	s := string(body[:min(len(body), maxRequest)])
	if len(body) > maxRequest {
		s += fmt.Sprintf("… (%d bytes)", len(body))
	}
	r.Request, _ = json.Marshal(s)
}

// EnsureStream creates or updates the AUDIT stream as proto defines it.
func EnsureStream(ctx context.Context, js jetstream.JetStream, replicas int) error {
	if _, err := js.CreateOrUpdateStream(ctx, proto.AuditStreamConfig(replicas)); err != nil {
		return fmt.Errorf("audit: create stream %s: %w", proto.StreamAudit, err)
	}
	return nil
}

// ErrFull: the AUDIT stream has no room for another record. The stream
// refuses new records rather than drop old ones (proto.AuditStreamConfig),
// and the API refuses the changes it could not record.
var ErrFull = errors.New("the audit log is full")

// headroom is room left for one more record at most: below it the log
// counts as full. Its request is cut at maxRequest bytes, but JSON escapes
// can make each of them six ('<' becomes \u003c, in a raw request as in a
// cut one turned string); the other fields and the message's own overhead
// stay well under 2 KiB.
const headroom = 6*maxRequest + 2048

// streamJS is the part of jetstream.JetStream the log uses.
type streamJS interface {
	Publish(ctx context.Context, subject string, payload []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// RefusalsPerMinute is how many refused requests of one caller (one
// credential) a minute the log stores one by one. The AUDIT stream refuses
// new records when full, and every change then with them: stored without
// bound, the refusals of a read-only credential could fill it and so block
// every admin. Beyond this, one more record says the rest are counted
// (fleetboot_audit_refusals_counted_total), and they are, until the minute
// ends.
const RefusalsPerMinute = 30

// refusalWindow is one caller's refusals in the current minute.
type refusalWindow struct {
	start time.Time
	n     int // refusals seen, stored or counted
}

// Log writes records, and counts what it does not store: records the full
// stream refused, refusals of anonymous boot-network callers, and a
// caller's refusals beyond RefusalsPerMinute.
type Log struct {
	js   streamJS
	loud *slog.Logger // Error lines at most once a minute per message (shared/ratelog)
	now  func() time.Time

	stored, changesRefused prometheus.Counter
	writeFailures          *prometheus.CounterVec // reason: full, error
	callbackRefusals       *prometheus.CounterVec // action
	refusalsCounted        prometheus.Counter

	mu       sync.Mutex
	refusals map[string]*refusalWindow // by caller (key, or name without one)
}

// NewLog returns a writer publishing through js.
func NewLog(js streamJS, log *slog.Logger) *Log {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Log{js: js, loud: ratelog.Logger(log, time.Minute), now: time.Now,
		stored: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetboot_audit_records_total",
			Help: "Audit records stored in the AUDIT stream."}),
		changesRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetboot_audit_full_refused_changes_total",
			Help: "Change requests refused because the audit log was full."}),
		writeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetboot_audit_write_failures_total",
			Help: "Audit records not stored, by reason (full: the AUDIT stream refused it)."}, []string{"reason"}),
		callbackRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetboot_callback_refusals_total",
			Help: "Refused installer callbacks relayed by edges (counted, not audited one by one)."}, []string{"action"}),
		refusalsCounted: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetboot_audit_refusals_counted_total",
			Help: "Refused requests beyond a caller's RefusalsPerMinute: counted, not stored."}),
		refusals: map[string]*refusalWindow{},
	}
	for _, r := range []string{"full", "error"} {
		l.writeFailures.WithLabelValues(r) // export zeros so alerts can use rate() from the start
	}
	return l
}

// Register exports the log's counters.
func (l *Log) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{l.stored, l.changesRefused, l.writeFailures, l.callbackRefusals, l.refusalsCounted} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("audit: metrics: %w", err)
		}
	}
	return nil
}

// Record stores r, stamping its version and time. It waits for the
// stream's acknowledgement: a record the caller was told about is stored.
// A full stream refuses it (ErrFull), loudly. A refusal beyond the caller's
// RefusalsPerMinute is counted instead, and Record returns nil.
func (l *Log) Record(ctx context.Context, r Record) error {
	r.V = proto.Version
	if r.Time.IsZero() {
		r.Time = l.now().UTC()
	}
	if r.Outcome == Refused {
		switch l.admitRefusal(r) {
		case refusalCounted:
			l.refusalsCounted.Inc()
			return nil
		case refusalLast:
			r.Error += fmt.Sprintf(" (%s has had %d requests refused this minute: the rest of the minute's are counted, not stored)", r.Who, RefusalsPerMinute)
		}
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if _, err := l.js.Publish(ctx, SubjectPrefix+"."+r.Action, data, jetstream.WithExpectStream(proto.StreamAudit)); err != nil {
		if isFull(err) {
			l.writeFailures.WithLabelValues("full").Inc()
			l.loud.Error("AUDIT STREAM FULL: an audit record was refused; changes are refused until there is room (raise the AUDIT stream's max_bytes or move old records out)",
				"action", r.Action, "who", r.Who)
			return fmt.Errorf("audit: record %s by %s: %w", r.Action, r.Who, ErrFull)
		}
		l.writeFailures.WithLabelValues("error").Inc()
		return fmt.Errorf("audit: record %s by %s: %w", r.Action, r.Who, err)
	}
	l.stored.Inc()
	return nil
}

type refusalAdmission int

const (
	refusalStored  refusalAdmission = iota // store it
	refusalLast                            // store it, saying the rest are counted
	refusalCounted                         // count it
)

// admitRefusal decides how r, a refusal, is kept: the first
// RefusalsPerMinute of its caller's minute are stored, one more says the
// rest are counted, and the rest are.
func (l *Log) admitRefusal(r Record) refusalAdmission {
	caller := r.Key
	if caller == "" {
		caller = r.Who
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.refusals[caller]
	if w == nil || now.Sub(w.start) >= time.Minute {
		if len(l.refusals) >= 4096 {
			// Forget finished minutes: callers come and go.
			for k, o := range l.refusals {
				if now.Sub(o.start) >= time.Minute {
					delete(l.refusals, k)
				}
			}
		}
		w = &refusalWindow{start: now}
		l.refusals[caller] = w
	}
	w.n++
	switch {
	case w.n <= RefusalsPerMinute:
		return refusalStored
	case w.n == RefusalsPerMinute+1:
		return refusalLast
	}
	return refusalCounted
}

// Full tells whether the AUDIT stream lacks room for one more record. The
// API asks before every change, so a change is refused rather than made
// without its record. It asks the stream each time: an operator may have
// made room.
func (l *Log) Full(ctx context.Context) bool {
	st, err := l.js.Stream(ctx, proto.StreamAudit)
	if err != nil {
		return false // the write itself will say what is wrong
	}
	info := st.CachedInfo()
	if info == nil || info.Config.MaxBytes <= 0 || info.State.Bytes+headroom <= uint64(info.Config.MaxBytes) {
		return false
	}
	return true
}

// RefuseFull counts and logs a change refused because the log is full.
func (l *Log) RefuseFull(action, who string) {
	l.changesRefused.Inc()
	l.loud.Error("AUDIT STREAM FULL: change refused because it could not be audited (raise the AUDIT stream's max_bytes or move old records out)",
		"action", action, "who", who)
}

// CountCallbackRefusal counts a refused installer callback instead of
// storing a record: anyone on a boot network can make an edge relay one, and
// one record each would let them fill the audit log.
func (l *Log) CountCallbackRefusal(action string) {
	l.callbackRefusals.WithLabelValues(action).Inc()
}

// isFull tells a full stream's refusal (DiscardNew at MaxBytes) from other
// errors; the server says "maximum bytes exceeded" in the pub ack.
func isFull(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum bytes exceeded") {
		return true
	}
	return strings.Contains(err.Error(), "maximum bytes exceeded")
}

// Read returns the records stored since the given time, oldest first, at
// most limit of them (the newest ones when there are more).
func Read(ctx context.Context, js jetstream.JetStream, since time.Time, limit int) ([]Record, error) {
	st, err := js.Stream(ctx, proto.StreamAudit)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: stream %s: %w", proto.StreamAudit, err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &since,
	})
	if err != nil {
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	pending := info.NumPending
	var out []Record
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("audit: read: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("audit: read: %w", err)
			}
			pending = md.NumPending
			var r Record
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				continue // not ours to fail on: skip what we cannot read
			}
			r.Seq = md.Sequence.Stream
			out = append(out, r)
			if limit > 0 && len(out) > limit {
				out = out[1:]
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("audit: read: %w", err)
		}
		if n == 0 {
			break // nothing came within the wait: the rest was removed meanwhile
		}
	}
	return out, nil
}
