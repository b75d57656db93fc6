package web

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/coordinator/eventlog"
	"github.com/fleetboot/fleetboot/proto"
)

// EventQuery selects events for a live page: the EVENTS stream's filter
// subjects (see eventlog.Subjects), a kind prefix, and where to start.
type EventQuery struct {
	Subjects []string
	Kind     string
	Since    time.Time // from this time (stored events first, then live)
	After    uint64    // or after this stream sequence (wins over Since)
}

func (q EventQuery) log() eventlog.Query {
	// The coordinator's connection may delete the consumers it made: a
	// page view or a closed live page leaves none behind.
	return eventlog.Query{Subjects: q.Subjects, Kind: q.Kind, Since: q.Since, After: q.After, Delete: true}
}

// SeqEvent is an event with its sequence in the EVENTS stream: a live page
// resumes after the last one it got.
type SeqEvent struct {
	Seq   uint64
	Event proto.Event
}

// Live follows the EVENTS stream for the pages that update as machines
// boot (see StreamEvents).
type Live interface {
	// Follow calls fn with every matching event, stored ones first, then
	// each as it is stored, until ctx ends or fn fails. It holds one
	// consumer on the stream, gone when it returns.
	Follow(ctx context.Context, q EventQuery, fn func(SeqEvent) error) error
	// Last returns the last n matching events, oldest first, and the
	// stream sequence to follow after.
	Last(ctx context.Context, q EventQuery, n int) ([]SeqEvent, uint64, error)
}

// StreamEvents reads and follows the EVENTS stream: the panel's Events
// and Live.
type StreamEvents struct{ JS jetstream.JetStream }

// Events returns the events of a machine's MACs since a time.
func (s StreamEvents) Events(ctx context.Context, macs []string, since time.Time) ([]proto.Event, error) {
	subjects, err := eventlog.Subjects("", "", macs)
	if err != nil {
		return nil, err
	}
	st, err := s.JS.Stream(ctx, proto.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("events stream: %w", err)
	}
	var out []proto.Event
	err = eventlog.Read(ctx, st, eventlog.Query{Subjects: subjects, Since: since, Delete: true}, io.Discard, func(ev proto.Event) error {
		out = append(out, ev)
		return nil
	})
	return out, err
}

func (s StreamEvents) Follow(ctx context.Context, q EventQuery, fn func(SeqEvent) error) error {
	st, err := s.JS.Stream(ctx, proto.StreamEvents)
	if err != nil {
		return fmt.Errorf("events stream: %w", err)
	}
	return eventlog.FollowSeq(ctx, st, q.log(), io.Discard, func(seq uint64, ev proto.Event) error {
		return fn(SeqEvent{Seq: seq, Event: ev})
	})
}

// Last reads backwards in widening windows of the stream (the last
// thousand messages, then ten thousand, …) until it has n events or has
// read the whole stream: a page of a busy fleet's newest events costs one
// small read, a rare MAC's a few larger ones.
func (s StreamEvents) Last(ctx context.Context, q EventQuery, n int) ([]SeqEvent, uint64, error) {
	st, err := s.JS.Stream(ctx, proto.StreamEvents)
	if err != nil {
		return nil, 0, fmt.Errorf("events stream: %w", err)
	}
	info := st.CachedInfo().State
	last := info.LastSeq
	if last == 0 || n <= 0 {
		return nil, last, nil
	}
	for window := uint64(1000); ; window *= 10 {
		lq := q.log()
		lq.Since, lq.After = time.Time{}, 0
		if window < last-info.FirstSeq+1 {
			lq.After = last - window
		}
		var ring []SeqEvent
		seen := last
		err := eventlog.ReadSeq(ctx, st, lq, io.Discard, func(seq uint64, ev proto.Event) error {
			if len(ring) == 2*n { // keep the last n, copying once per n events
				ring = append(ring[:0], ring[n:]...)
			}
			ring = append(ring, SeqEvent{Seq: seq, Event: ev})
			seen = max(seen, seq)
			return nil
		})
		if err != nil {
			return nil, 0, err
		}
		if len(ring) > n {
			ring = ring[len(ring)-n:]
		}
		if len(ring) == n || lq.After == 0 {
			return ring, seen, nil
		}
	}
}
