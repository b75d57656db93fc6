package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/fleetboot/fleetboot/proto"
)

// seqEvent is an event with its EVENTS stream sequence.
type seqEvent struct {
	seq uint64
	ev  proto.Event
}

// eventCache holds, for one rollout, the events of the MACs it watches,
// read from the EVENTS stream incrementally: a tick reads only what was
// stored since the last one, unless the watched MACs changed.
type eventCache struct {
	filter string // the watched subjects, joined
	last   uint64 // stream sequence read up to
	byMAC  map[string][]seqEvent
}

// eventsStream is the EVENTS stream (bound on first use).
func (e *Engine) eventsStream(ctx context.Context) (jetstream.Stream, error) {
	st, err := e.cfg.JS.Stream(ctx, proto.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("rollout: stream %s: %w", proto.StreamEvents, err)
	}
	return st, nil
}

// lastEventSeq is the EVENTS stream's last sequence now: events after it
// come after whatever the caller does next.
func (e *Engine) lastEventSeq(ctx context.Context) (uint64, error) {
	st, err := e.eventsStream(ctx)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("rollout: stream %s: %w", proto.StreamEvents, err)
	}
	return info.State.LastSeq, nil
}

// events refreshes the cache of rollout name for macs (12-hex keys) from
// sequence from+1 on, and returns it. Events whose body disagrees with
// their subject (which NATS permissions confine to the publishing edge)
// are dropped, as every reader of the stream does.
func (e *Engine) events(ctx context.Context, name string, macKeys []string, from uint64) (*eventCache, error) {
	slices.Sort(macKeys)
	macKeys = slices.Compact(macKeys)
	filter := strings.Join(macKeys, ",")
	c := e.caches[name]
	if c == nil || c.filter != filter {
		c = &eventCache{filter: filter, last: from, byMAC: map[string][]seqEvent{}}
		e.caches[name] = c
	}
	if len(macKeys) == 0 {
		return c, nil
	}
	st, err := e.eventsStream(ctx)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("rollout: stream %s: %w", proto.StreamEvents, err)
	}
	end := info.State.LastSeq
	if end <= c.last {
		return c, nil
	}
	subjects := make([]string, len(macKeys))
	for i, k := range macKeys {
		subjects[i] = proto.SubjectEventsPrefix + ".*.*." + k
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: c.last + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("rollout: read events: %w", err)
	}
	// The cache moves on only as far as what was received proves: a
	// fetch answered before the new consumer has its messages ready
	// comes back empty, and taking that for "nothing there" would skip
	// those events for good.
	for {
		batch, err := cons.FetchNoWait(512)
		if err != nil {
			return nil, fmt.Errorf("rollout: read events: %w", err)
		}
		n, caughtUp := 0, false
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return nil, fmt.Errorf("rollout: event metadata: %w", err)
			}
			var ev proto.Event
			if json.Unmarshal(msg.Data(), &ev) == nil && proto.CheckEventSubject(msg.Subject(), ev) == nil {
				_, _, k, _ := proto.ParseEventSubject(msg.Subject())
				c.byMAC[k] = append(c.byMAC[k], seqEvent{seq: meta.Sequence.Stream, ev: ev})
			}
			c.last = max(c.last, meta.Sequence.Stream)
			// Nothing more matches up to the stream's end as it was
			// when this one was delivered (at least end).
			caughtUp = meta.NumPending == 0
		}
		if err := batch.Error(); err != nil && !caughtUp {
			return nil, fmt.Errorf("rollout: read events: %w", err)
		}
		if caughtUp {
			c.last = max(c.last, end)
			return c, nil
		}
		if n == 0 {
			// Empty: either nothing matches, which the consumer's own
			// count says, or it was not ready; then the next tick reads
			// again from where this one stopped.
			info, err := cons.Info(ctx)
			if err == nil && info.NumPending == 0 && info.Delivered.Stream >= c.last {
				c.last = max(c.last, end)
			}
			return c, nil
		}
	}
}

// of returns the cached events of a host's MACs stored after sequence
// after.
func (c *eventCache) of(macs []string, after uint64) []proto.Event {
	var out []proto.Event
	for _, m := range macs {
		k, err := proto.MACKey(m)
		if err != nil {
			continue
		}
		for _, se := range c.byMAC[k] {
			if se.seq > after {
				out = append(out, se.ev)
			}
		}
	}
	return out
}

// record puts a rollout's step on a host into the host's timeline (see
// proto.EventRollout). A step not recorded is only logged: the rollout's
// own state has it.
func (e *Engine) record(ctx context.Context, rollout, site, mac, action string, detail map[string]string) {
	if detail == nil {
		detail = map[string]string{}
	}
	detail["rollout"], detail["action"] = rollout, action
	ev := proto.Event{V: proto.Version, ID: "rollout-" + nuid.Next(), Time: e.cfg.Now().UTC(), Site: site, Edge: proto.RolloutEventEdge, MAC: mac,
		Kind: proto.EventRollout, Detail: detail}
	data, _ := json.Marshal(ev)
	if _, err := e.cfg.JS.Publish(ctx, proto.EventSubject(site, proto.RolloutEventEdge, mac), data, jetstream.WithMsgID(ev.ID)); err != nil {
		e.log.Warn("rollout step not recorded in the host's timeline", "rollout", rollout, "mac", mac, "action", action, "err", err)
	}
}
