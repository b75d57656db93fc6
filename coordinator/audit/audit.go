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
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
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

// publisher is the part of jetstream.JetStream the log writes with.
type publisher interface {
	Publish(ctx context.Context, subject string, payload []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Log writes records.
type Log struct {
	js  publisher
	log *slog.Logger
	now func() time.Time
}

// NewLog returns a writer publishing through js.
func NewLog(js publisher, log *slog.Logger) *Log {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Log{js: js, log: log, now: time.Now}
}

// Record stores r, stamping its version and time. It waits for the
// stream's acknowledgement: a record the caller was told about is stored.
func (l *Log) Record(ctx context.Context, r Record) error {
	r.V = proto.Version
	if r.Time.IsZero() {
		r.Time = l.now().UTC()
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if _, err := l.js.Publish(ctx, SubjectPrefix+"."+r.Action, data, jetstream.WithExpectStream(proto.StreamAudit)); err != nil {
		return fmt.Errorf("audit: record %s by %s: %w", r.Action, r.Who, err)
	}
	return nil
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
