package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
)

// Sender tuning. The backoff cap is short because an edge coming back from
// an outage should start draining its buffer within seconds.
const (
	publishTimeout = 5 * time.Second
	backoffMin     = 100 * time.Millisecond
	backoffMax     = 2 * time.Second
	batchSize      = 256
)

// publisher is the part of jetstream.JetStream the sender uses.
type publisher interface {
	Publish(ctx context.Context, subject string, payload []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Run publishes the buffer to JetStream in order until ctx ends, then
// returns nil. Each event is published with its ID as Nats-Msg-Id and
// waits for the stream's acknowledgement before the next: strictly
// sequential, because a pipelined publish that failed in the middle would
// be retried behind its successors and arrive out of order. After an
// outage it retries with backoff; the cursor is saved after each batch and
// whenever the sender catches up, and the log is compacted when everything
// has been sent. Only one Run may be active at a time.
func (r *Recorder) Run(ctx context.Context, js jetstream.JetStream) error {
	return r.run(ctx, js)
}

func (r *Recorder) run(ctx context.Context, js publisher) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("events: Run is already running")
	}
	defer r.running.Store(false)
	s := sender{r: r, js: js, delay: backoffMin}
	defer s.save()
	var batch []record
	for ctx.Err() == nil {
		if rep := r.pendingReport(); rep != nil {
			if !s.try(ctx, func(ctx context.Context) error { return s.publishReport(ctx, rep) }) {
				continue
			}
			r.reportSent(rep)
			continue
		}
		if len(batch) == 0 {
			var err error
			batch, err = r.readBatch(batchSize)
			if errors.Is(err, errClosed) {
				return err
			}
			if err != nil {
				r.log.Error("reading the event buffer failed", "err", err)
				s.wait(ctx)
				continue
			}
			if len(batch) == 0 {
				s.caughtUp()
				select {
				case <-r.flushed:
				case <-ctx.Done():
				}
				continue
			}
		}
		rec := batch[0]
		if r.passed(rec.Seq) { // dropped while the link was down
			batch = batch[1:]
			continue
		}
		if !s.try(ctx, func(ctx context.Context) error {
			_, err := js.Publish(ctx, rec.Subject, rec.Event,
				jetstream.WithMsgID(rec.ID), jetstream.WithExpectStream(proto.StreamEvents))
			return err
		}) {
			continue
		}
		r.ackSeq(rec.Seq)
		batch = batch[1:]
		if len(batch) == 0 {
			s.save()
		}
	}
	return nil
}

// sender holds the state of one Run: backoff and whether the link is down.
type sender struct {
	r       *Recorder
	js      publisher
	delay   time.Duration
	failing bool
	failed  int
}

// try runs one publish with a timeout. On failure it logs (loudly once per
// outage, quietly after), waits out the backoff and reports false.
func (s *sender) try(ctx context.Context, publish func(context.Context) error) bool {
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	err := publish(pctx)
	cancel()
	if err == nil {
		if s.failing {
			s.r.log.Info("event link is back", "failed_attempts", s.failed, "buffered", s.r.Stats().Buffered)
		}
		s.failing, s.failed, s.delay = false, 0, backoffMin
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	if !s.failing {
		s.r.log.Warn("cannot publish events; buffering on disk and retrying", "err", err)
	} else {
		s.r.log.Debug("event publish retry failed", "err", err, "attempt", s.failed)
	}
	s.failing = true
	s.failed++
	s.wait(ctx)
	return false
}

func (s *sender) wait(ctx context.Context) {
	t := time.NewTimer(s.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	s.delay = min(2*s.delay, backoffMax)
}

func (s *sender) save() {
	s.r.fileMu.Lock()
	defer s.r.fileMu.Unlock()
	if s.r.f == nil {
		return
	}
	if err := s.r.saveStateLocked(); err != nil {
		s.r.log.Error("saving the event cursor failed", "err", err)
	}
}

// caughtUp saves the cursor and, when every line of the log has been sent
// or dropped, compacts it (a truncate).
func (s *sender) caughtUp() {
	r := s.r
	r.fileMu.Lock()
	defer r.fileMu.Unlock()
	if r.f == nil {
		return
	}
	r.mu.Lock()
	done := r.size > 0 && r.acked >= r.lastSeq
	r.mu.Unlock()
	var err error
	if done {
		err = r.compactLocked() // saves the cursor first
	} else {
		err = r.saveStateLocked()
	}
	if err != nil {
		r.log.Error("saving the event cursor failed", "err", err)
	}
}

func (s *sender) publishReport(ctx context.Context, rep *dropReport) error {
	r := s.r
	ev := proto.Event{
		V: proto.Version, ID: rep.ID, Time: rep.Time, Site: r.cfg.Site, Edge: r.cfg.Edge,
		Kind: KindDropped, Detail: map[string]string{"count": strconv.FormatUint(rep.Count, 10)},
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("events: encode drop report: %w", err)
	}
	_, err = s.js.Publish(ctx, proto.EventSubject(r.cfg.Site, r.cfg.Edge, ""), b,
		jetstream.WithMsgID(rep.ID), jetstream.WithExpectStream(proto.StreamEvents))
	return err
}

// pendingReport returns the drop report to send before the next event, if
// any. Once created it is frozen (and persisted with the cursor) until it is
// acknowledged, so retrying it can never double-count.
func (r *Recorder) pendingReport() *dropReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.report == nil && r.dropped > 0 {
		// acked only grows and every drop moves it, so (epoch, acked)
		// never names two different reports.
		r.report = &dropReport{ID: fmt.Sprintf("%s-dropped-%d", r.epoch, r.acked), Count: r.dropped, Time: r.cfg.Now().UTC()}
		r.dropped = 0
	}
	return r.report
}

func (r *Recorder) reportSent(rep *dropReport) {
	r.mu.Lock()
	if r.report == rep {
		r.report = nil
	}
	r.mu.Unlock()
}

// passed reports whether the cursor is already past seq (it was dropped).
func (r *Recorder) passed(seq uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return seq <= r.acked
}

// ackSeq moves the cursor past an acknowledged event. If the bound dropped
// it while its publish was in flight, it was delivered after all: take it
// back out of the drop count.
func (r *Recorder) ackSeq(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent++
	if seq > r.acked {
		r.acked = seq
		close(r.acks)
		r.acks = make(chan struct{})
		return
	}
	if r.dropped > 0 {
		r.dropped--
		r.lost--
	}
}
