package web

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fleetboot/fleetboot/coordinator/eventlog"
	"github.com/fleetboot/fleetboot/coordinator/timeline"
	"github.com/fleetboot/fleetboot/proto"
)

// Defaults of the live pages' limits (see Config).
const (
	defaultStreamsPerSession = 8 // a few tabs; HTTP/1.1 browsers open 6 connections per host anyway
	defaultStreams           = 512
	defaultHeartbeat         = 20 * time.Second // under the 30–60 s idle timeouts of common proxies
	hostStreamEvents         = 5000             // events of one machine a host stream keeps (its 24 h)
	hostStreamBatch          = 150 * time.Millisecond
	eventsStreamBatch        = 30 * time.Millisecond
)

// streams bounds the live pages' Server-Sent Event streams: each holds a
// consumer on the EVENTS stream, so a session may open only a few and the
// panel only so many; all of them end when the panel shuts down (an
// http.Server's Shutdown waits for idle connections, and a stream is never
// idle).
type streams struct {
	perSession, total int

	base context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu     sync.Mutex
	open   map[string]int // by session key
	n      int
	closed bool
}

func newStreams(perSession, total int) *streams {
	base, stop := context.WithCancel(context.Background())
	return &streams{perSession: perSession, total: total, base: base, stop: stop, open: map[string]int{}}
}

// acquire counts a new stream of a session, or tells why not.
func (s *streams) acquire(key string) (ok bool, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return false, "the panel is shutting down"
	case s.open[key] >= s.perSession:
		return false, "too many live pages open in this session: close some tabs"
	case s.n >= s.total:
		return false, "too many live pages open on this panel: try again later"
	}
	s.open[key]++
	s.n++
	s.wg.Add(1)
	return true, ""
}

func (s *streams) release(key string) {
	s.mu.Lock()
	if s.open[key]--; s.open[key] <= 0 {
		delete(s.open, key)
	}
	s.n--
	s.mu.Unlock()
	s.wg.Done()
}

// count is the number of open streams.
func (s *streams) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// CloseStreams ends every live stream and waits until they have: give it
// to http.Server.RegisterOnShutdown. New streams are refused after.
func (h *Handler) CloseStreams() {
	s := h.streams
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.stop()
	s.wg.Wait()
}

// OpenStreams is how many live streams are open (for tests and metrics).
func (h *Handler) OpenStreams() int { return h.streams.count() }

// sseMsg is one Server-Sent Event.
type sseMsg struct {
	event, id, data string
}

// feed is what a live stream sends: add takes each event as it comes, out
// says what to send at the end of a batch, batch after the first event
// that came (tick: on a heartbeat, with no new event). A boot's burst of
// events is drawn once, not once per event.
type feed struct {
	batch time.Duration
	add   func(SeqEvent)
	out   func(tick bool) []sseMsg
}

// serveStream answers a live page's EventSource: one consumer on the
// EVENTS stream (Live.Follow) for as long as the browser listens, events
// sent in bursts after quiet, and a comment every heartbeat so proxies keep
// the connection open. It ends when the browser goes, the session ends or
// the panel shuts down.
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request, u who, q EventQuery, f feed) {
	if ok, why := h.streams.acquire(u.key); !ok {
		w.Header().Set("Retry-After", "30")
		http.Error(w, "fleetboot: "+why, http.StatusTooManyRequests)
		return
	}
	defer h.streams.release(u.key)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(h.streams.base, cancel)()

	events := make(chan SeqEvent, 64)
	followed := make(chan error, 1)
	go func() {
		followed <- h.cfg.Live.Follow(ctx, q, func(e SeqEvent) error {
			select {
			case events <- e:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	defer func() {
		cancel()
		<-followed // the consumer is gone before the stream counts as closed
	}()

	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no") // nginx: do not hold the stream back
	w.WriteHeader(http.StatusOK)
	// retry: how long the browser waits before it reconnects.
	if _, err := w.Write([]byte("retry: 3000\n: fleetboot live\n\n")); err != nil || rc.Flush() != nil {
		return
	}
	send := func(msgs []sseMsg) bool {
		if len(msgs) == 0 {
			return true
		}
		var b bytes.Buffer
		for _, m := range msgs {
			writeSSE(&b, m)
		}
		_, err := w.Write(b.Bytes())
		return err == nil && rc.Flush() == nil
	}
	beat := time.NewTicker(h.cfg.StreamHeartbeat)
	defer beat.Stop()
	var burst <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-followed:
			followed <- err // for the deferred wait
			if ctx.Err() == nil {
				h.cfg.Logger.Warn("web panel: live stream ended", "who", u.id.Name, "path", r.URL.Path, "err", err)
			}
			return
		case e := <-events:
			f.add(e)
			if burst == nil {
				burst = time.After(f.batch)
			}
		case <-burst:
			burst = nil
			if !send(f.out(false)) {
				return
			}
		case <-beat.C:
			// Her session may have ended (logout, expiry) or her identity
			// been revoked since the stream began.
			if !h.sessions.alive(u.key) {
				return
			}
			if _, ok := h.cfg.Login.Person(u.id.Name); !ok {
				return
			}
			if !send(append([]sseMsg{{event: "", data: ""}}, f.out(true)...)) {
				return
			}
		}
	}
}

// writeSSE writes one event; an empty one is a heartbeat comment.
func writeSSE(b *bytes.Buffer, m sseMsg) {
	if m.event == "" && m.data == "" {
		b.WriteString(": ping\n\n")
		return
	}
	if m.event != "" {
		b.WriteString("event: " + m.event + "\n")
	}
	if m.id != "" {
		b.WriteString("id: " + m.id + "\n")
	}
	for line := range strings.Lines(m.data) {
		b.WriteString("data: " + strings.TrimRight(line, "\r\n") + "\n")
	}
	b.WriteString("\n")
}

// timelineData is what the host page's timeline fragment shows: the last
// five boots of the events, newest first, each drawn as a waterfall.
func timelineData(evs []proto.Event, now time.Time) map[string]any {
	boots := timeline.Last(timeline.Build(evs, timeline.Options{Now: now}), 5)
	slices.Reverse(boots) // newest first
	live := len(boots) > 0 && boots[0].InProgress
	return map[string]any{"Boots": boots, "Live": live, "Waterfalls": waterfalls(boots)}
}

// hostStream is the host page's live timeline: the timeline fragment,
// rendered again whenever the machine's events change it. The host is read
// as the person, so she follows only machines she may see.
func (h *Handler) hostStream(w http.ResponseWriter, r *http.Request, u who) {
	host, ok := h.pathHost(w, r, u)
	if !ok {
		return
	}
	subjects, err := eventlog.Subjects("", "", host.MACs())
	if err != nil {
		h.fail(w, err)
		return
	}
	var (
		evs  []proto.Event
		sent string
		live bool
	)
	h.serveStream(w, r, u, EventQuery{Subjects: subjects, Since: h.cfg.Now().Add(-24 * time.Hour)}, feed{
		batch: hostStreamBatch,
		add: func(e SeqEvent) {
			evs = append(evs, e.Event)
			if len(evs) > 2*hostStreamEvents {
				evs = append(evs[:0], evs[len(evs)-hostStreamEvents:]...)
			}
		},
		out: func(tick bool) []sseMsg {
			// A boot in progress ends without an event (it goes quiet):
			// heartbeats draw it again until it has.
			if tick && !live {
				return nil
			}
			data := timelineData(evs, h.cfg.Now())
			live = data["Live"].(bool)
			var b bytes.Buffer
			if err := h.tmpl.ExecuteTemplate(&b, "timeline", data); err != nil {
				h.cfg.Logger.Error("web panel: render the timeline", "err", err)
				return nil
			}
			if b.String() == sent {
				return nil
			}
			sent = b.String()
			return []sseMsg{{event: "timeline", data: sent}}
		},
	})
}

// lastEventID is the stream sequence a reconnecting EventSource says it
// got last (0: none).
func lastEventID(r *http.Request) uint64 {
	n, _ := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64)
	return n
}

// alive tells whether a session is still live, without counting as a
// request: a page left open does not keep its session from expiring.
func (s *sessions) alive(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[key]
	return ok && !s.expired(ss, s.now())
}
