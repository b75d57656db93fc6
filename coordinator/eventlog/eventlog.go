// Package eventlog reads the EVENTS stream: the boot-chain events every edge
// records. The CLI (`fleetboot events`, `host timeline`) and the web panel
// share it; the timeline package turns what it reads into boots.
package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
)

// clockSkew widens the stream-side start time: the stream filters on when a
// message was stored, the user means when the event happened. Buffered events
// are stored after they happen (always caught), but an edge whose clock runs
// ahead would store an event "before" it happened.
const clockSkew = 5 * time.Minute

// Query selects events from the EVENTS stream.
type Query struct {
	Subjects []string  // JetStream filter subjects, never overlapping (see Subjects)
	Since    time.Time // zero: from the start of the stream
	Kind     string    // kind prefix, "" for all
	// After, if set, starts after that stream sequence instead of at
	// Since: a live page resumes where its first read (or the browser's
	// last received event) ended, with nothing lost and nothing twice.
	After uint64
	// Delete removes the reader's consumer from the server when it is done,
	// for a connection allowed to (the coordinator's own). Confined clients
	// (the CLI) may not delete consumers: theirs go after followInactive.
	Delete bool
}

// followInactive is how long the server keeps a reader's consumer whose
// client vanished without deleting it (a crash, a lost connection).
const followInactive = 30 * time.Second

func (q Query) consumerConfig(follow bool) jetstream.OrderedConsumerConfig {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: q.Subjects, DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case q.After > 0:
		start := q.After + 1
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	case !q.Since.IsZero():
		start := q.Since.Add(-clockSkew)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	case follow:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	return cfg
}

// match applies what the stream cannot filter: the event's own time and kind.
func (q Query) Match(ev proto.Event) bool {
	return (q.Since.IsZero() || !ev.Time.Before(q.Since)) && strings.HasPrefix(ev.Kind, q.Kind)
}

// Subjects builds the filter subject fleetboot.events.<site>.<edge>.<mac12>
// for each MAC (one subject with a wildcard when macs is empty).
func Subjects(site, edge string, macs []string) ([]string, error) {
	if site == "" {
		site = "*"
	} else if err := proto.ValidSiteName(site); err != nil {
		return nil, err
	}
	if edge == "" {
		edge = "*"
	} else if err := proto.ValidEdgeName(edge); err != nil {
		return nil, err
	}
	if len(macs) == 0 {
		return []string{proto.SubjectEventsPrefix + "." + site + "." + edge + ".*"}, nil
	}
	var subs []string
	for _, m := range macs {
		k, err := proto.MACKey(m)
		if err != nil {
			return nil, err
		}
		s := proto.SubjectEventsPrefix + "." + site + "." + edge + "." + k
		if !slices.Contains(subs, s) {
			subs = append(subs, s)
		}
	}
	return subs, nil
}

// Read calls fn for every matching event stored up to now, then
// returns: it reads up to the stream's last sequence when it started, and an
// empty result ends at once instead of waiting for events to come.
func Read(ctx context.Context, st jetstream.Stream, q Query, warn io.Writer, fn func(proto.Event) error) error {
	return ReadSeq(ctx, st, q, warn, func(_ uint64, ev proto.Event) error { return fn(ev) })
}

// ReadSeq is Read, with each event's stream sequence.
func ReadSeq(ctx context.Context, st jetstream.Stream, q Query, warn io.Writer, fn func(uint64, proto.Event) error) error {
	last := st.CachedInfo().State.LastSeq
	if last == 0 {
		return nil
	}
	sk := &skipper{w: warn}
	defer sk.summary()
	cfg := q.consumerConfig(false)
	cfg.InactiveThreshold = followInactive
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("events: consumer: %w", err)
	}
	if q.Delete {
		defer deleteConsumer(ctx, st, cons)
	}
	var retry noResponders
	for {
		// FetchNoWait hands over what is stored and ends the batch as soon
		// as nothing more matches: no waiting on an idle stream.
		batch, err := cons.FetchNoWait(512)
		if err != nil {
			if retry.again(ctx, err) {
				continue
			}
			return fmt.Errorf("events: fetch: %w", err)
		}
		n, done := 0, false
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("events: message metadata: %w", err)
			}
			if ev, ok := sk.decode(msg, meta.Sequence.Stream); ok && q.Match(ev) {
				if err := fn(meta.Sequence.Stream, ev); err != nil {
					return err
				}
			}
			if meta.Sequence.Stream >= last || meta.NumPending == 0 {
				done = true
				break
			}
		}
		if err := batch.Error(); err != nil && !done {
			if n == 0 && retry.again(ctx, err) {
				continue
			}
			return fmt.Errorf("events: fetch: %w", err)
		}
		if done || n == 0 || ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// noResponders rides out "no responders" on a pull request for a consumer
// just made: on a cluster the request can reach a node (the client's)
// before the consumer's interest, created on another node, does. A few
// short waits, then the error stands.
type noResponders struct{ tries int }

const (
	noRespondersTries = 20
	noRespondersWait  = 100 * time.Millisecond
)

// again tells whether err is worth another fetch, after a short wait.
func (r *noResponders) again(ctx context.Context, err error) bool {
	if !errors.Is(err, nats.ErrNoResponders) || r.tries >= noRespondersTries {
		return false
	}
	r.tries++
	select {
	case <-ctx.Done():
		return false
	case <-time.After(noRespondersWait):
		return true
	}
}

// Follow calls fn for matching events as they are stored, until ctx ends.
func Follow(ctx context.Context, st jetstream.Stream, q Query, warn io.Writer, fn func(proto.Event) error) error {
	return FollowSeq(ctx, st, q, warn, func(_ uint64, ev proto.Event) error { return fn(ev) })
}

// FollowSeq is Follow, with each event's stream sequence. Its consumer is
// deleted when it returns: a live page that closes leaves nothing behind on
// the server (and one whose client vanished goes after followInactive).
func FollowSeq(ctx context.Context, st jetstream.Stream, q Query, warn io.Writer, fn func(uint64, proto.Event) error) error {
	cfg := q.consumerConfig(true)
	cfg.InactiveThreshold = followInactive
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("events: consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("events: follow: %w", err)
	}
	defer func() {
		it.Stop()
		if q.Delete {
			deleteConsumer(ctx, st, cons)
		}
	}()
	sk := &skipper{w: warn, every: time.Minute, now: time.Now}
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			return nil // interrupted: the normal end of --follow
		}
		if err != nil {
			return fmt.Errorf("events: follow: %w", err)
		}
		var seq uint64
		if meta, err := msg.Metadata(); err == nil {
			seq = meta.Sequence.Stream
		}
		if ev, ok := sk.decode(msg, seq); ok && q.Match(ev) {
			if err := fn(seq, ev); err != nil {
				return err
			}
		}
	}
}

// deleteConsumer removes a reader's consumer from the server when it is
// done: stopping only stops pulling, and the consumer would linger until
// its inactivity threshold (each page view and live page would leave one).
// An ordered consumer's name changes when it is reset: the current one.
func deleteConsumer(ctx context.Context, st jetstream.Stream, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	st.DeleteConsumer(dctx, info.Name)
}

// skipper decodes events and drops the ones that cannot be trusted: not
// JSON, or a body naming another site, edge or MAC than the subject (which
// NATS permissions confine to the publishing edge's own). A flood of them
// gets one warning, then a count: at most one line per interval when
// following, and a summary at the end of a read.
type skipper struct {
	w          io.Writer
	every      time.Duration // 0: warn once, then only the summary
	now        func() time.Time
	last       time.Time
	warned     bool
	suppressed int
}

func (s *skipper) decode(msg jetstream.Msg, seq uint64) (proto.Event, bool) {
	var ev proto.Event
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		s.skip(fmt.Sprintf("a malformed event (stream sequence %d on %s): %v", seq, msg.Subject(), err))
		return ev, false
	}
	if err := proto.CheckEventSubject(msg.Subject(), ev); err != nil {
		s.skip(fmt.Sprintf("an event whose body disagrees with its subject (stream sequence %d): %v", seq, err))
		return ev, false
	}
	return ev, true
}

func (s *skipper) skip(what string) {
	if s.warned && (s.every == 0 || s.now().Sub(s.last) < s.every) {
		s.suppressed++
		return
	}
	more := ""
	if s.suppressed > 0 {
		more = fmt.Sprintf(" (and %d more skipped since the last warning)", s.suppressed)
	}
	fmt.Fprintf(s.w, "fleetboot: skipping %s%s\n", what, more)
	s.warned, s.suppressed = true, 0
	if s.now != nil {
		s.last = s.now()
	}
}

func (s *skipper) summary() {
	if s.suppressed > 0 {
		fmt.Fprintf(s.w, "fleetboot: skipped %d more malformed or mismatched events\n", s.suppressed)
	}
}
