// Package events records the edge's boot-chain events (DHCP, TFTP, scripts,
// artifacts, callbacks) and delivers them to the EVENTS JetStream stream.
//
// Emit never waits for the network: an event goes to an append-only log on
// local disk first, and a sender (Run) publishes the log in order, advancing
// a persisted cursor only after JetStream acknowledges each event. An edge
// cut off from NATS, or restarted while cut off, therefore loses nothing and
// delivers everything in order when the link returns. Every event carries a
// unique ID sent as Nats-Msg-Id, so the stream's duplicate window absorbs
// the few events resent after a crash between an ack and the cursor write.
//
// The buffer is bounded: when it holds MaxBuffered unsent events, the oldest
// are dropped and counted, and the count is itself delivered as an event
// (KindDropped) in their place.
package events

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// DefaultMaxBuffered bounds the on-disk buffer when Config.MaxBuffered is 0.
// At a few hundred bytes an event it is tens of megabytes: hours of boots
// at a busy site.
const DefaultMaxBuffered = 100000

// KindDropped is the kind of the event that reports events dropped because
// the buffer was full; Detail["count"] says how many.
const KindDropped = proto.EventDropped

// File names inside Config.Dir.
const (
	logFile   = "events.log"  // JSON lines, one record per event, append-only
	stateFile = "cursor.json" // state: what has been acknowledged or dropped
)

// Config configures a Recorder.
type Config struct {
	Dir         string           // buffer directory under the edge's state dir; created if missing
	Site, Edge  string           // stamped on every event and used in its subject
	MaxBuffered int              // most unsent events kept; 0 means DefaultMaxBuffered
	Logger      *slog.Logger     // nil discards
	Now         func() time.Time // nil means time.Now
}

// Stats is a snapshot of the recorder's counters, for heartbeats and metrics.
type Stats struct {
	Buffered uint64 // emitted but neither acknowledged nor dropped
	Sent     uint64 // acknowledged by JetStream since NewRecorder
	Dropped  uint64 // dropped since NewRecorder because the buffer was full
}

// record is one line of the log. The event is kept as the exact bytes that
// will be published, so a resend after a restart is byte-identical.
type record struct {
	Seq     uint64          `json:"seq"`
	ID      string          `json:"id"`
	Subject string          `json:"subject"`
	Event   json.RawMessage `json:"event"`
}

// pendingRec is an emitted event not yet written to the log.
type pendingRec struct {
	seq  uint64
	line []byte // JSON of record, with the trailing newline
}

// Recorder buffers events on disk and sends them with Run. Emit is safe for
// concurrent use.
type Recorder struct {
	cfg       Config
	log       *slog.Logger
	max       uint64
	logPath   string
	statePath string

	mu      sync.Mutex // guards the fields up to fileMu
	epoch   string     // random per buffer directory; prefixes event IDs so they never repeat
	nextSeq uint64
	acked   uint64 // cursor: every seq <= acked was acknowledged or dropped
	dropped uint64 // dropped and not yet in a report
	report  *dropReport
	pending []pendingRec
	durable uint64 // highest seq written to the log and fsynced
	closed  bool
	sent    uint64 // Stats.Sent
	lost    uint64 // Stats.Dropped

	fileMu   sync.Mutex // guards the log file and the offsets below; never held by Emit
	f        *os.File   // append handle on the log; nil after Close
	size     int64      // bytes in the log
	firstSeq uint64     // seq of the log's first record, 0 when empty
	lastSeq  uint64     // seq of the log's last record
	readOff  int64      // offset of the first record the sender has not read
	readSeq  uint64     // highest seq the sender has read

	wake    chan struct{} // Emit -> writer
	flushed chan struct{} // writer -> sender
	acks    chan struct{} // closed and replaced when the cursor moves (WaitDrained); guarded by mu
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	running atomic.Bool
}

// dropReport is a KindDropped event frozen with its ID once created, so a
// retry after an uncertain publish is deduplicated rather than double-counted.
type dropReport struct {
	ID    string    `json:"id"`
	Count uint64    `json:"count"`
	Time  time.Time `json:"time"`
}

// persisted is the content of the state file.
type persisted struct {
	V       int         `json:"v"`
	Epoch   string      `json:"epoch"`
	Acked   uint64      `json:"acked"`
	Dropped uint64      `json:"dropped"`
	Report  *dropReport `json:"report,omitempty"`
}

// NewRecorder opens (or creates) the buffer in cfg.Dir, recovers what a
// previous run left unsent, and starts the goroutine that writes emitted
// events to disk. Call Close when done.
func NewRecorder(cfg Config) (*Recorder, error) {
	if cfg.Dir == "" {
		return nil, errors.New("events: no buffer directory configured")
	}
	if err := proto.ValidSiteName(cfg.Site); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	// Site and edge are subject tokens: a '.' would shift every token after it.
	if err := proto.ValidName("edge", cfg.Edge); err != nil || strings.Contains(cfg.Edge, ".") {
		return nil, fmt.Errorf("events: invalid edge name %q: use lower-case letters, digits, '_' or '-' (no '.', it is a subject token)", cfg.Edge)
	}
	if cfg.MaxBuffered < 0 {
		return nil, fmt.Errorf("events: MaxBuffered %d is negative", cfg.MaxBuffered)
	}
	if cfg.MaxBuffered == 0 {
		cfg.MaxBuffered = DefaultMaxBuffered
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("events: buffer directory: %w", err)
	}
	r := &Recorder{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "events"),
		max:       uint64(cfg.MaxBuffered),
		logPath:   filepath.Join(cfg.Dir, logFile),
		statePath: filepath.Join(cfg.Dir, stateFile),
		wake:      make(chan struct{}, 1),
		flushed:   make(chan struct{}, 1),
		acks:      make(chan struct{}),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if err := r.recover(); err != nil {
		return nil, err
	}
	go r.writer()
	return r, nil
}

// Emit records an event about mac (may be empty) of the given kind, with
// optional detail (copied). It never blocks on the network or the disk: the
// event is queued in memory and written by a background goroutine within
// milliseconds (group commit: one write and one fsync for whatever
// accumulated while the previous fsync ran). An event is durable once that
// fsync returns; a power loss before it loses the last few milliseconds of
// events, a process crash alone loses only what was not yet written.
func (r *Recorder) Emit(kind, mac string, detail map[string]string) {
	now := r.cfg.Now().UTC()
	if m, err := proto.ParseMAC(mac); err == nil {
		mac = m
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		r.log.Warn("event emitted after Close, dropped", "kind", kind, "mac", mac)
		return
	}
	seq := r.nextSeq
	r.nextSeq++
	ev := proto.Event{
		V: proto.Version, ID: r.epoch + "-" + fmt.Sprint(seq), Time: now,
		Site: r.cfg.Site, Edge: r.cfg.Edge, MAC: mac, Kind: kind, Detail: maps.Clone(detail),
	}
	line, err := encodeRecord(seq, ev, proto.EventSubject(r.cfg.Site, r.cfg.Edge, mac))
	if err != nil { // a map[string]string always encodes; kept for safety
		r.log.Error("encode event", "kind", kind, "err", err)
		return
	}
	r.pending = append(r.pending, pendingRec{seq: seq, line: line})
	r.enforceBound()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// enforceBound drops the oldest unsent events beyond the bound by moving the
// cursor past them: dropping is the same as acknowledging, minus the send.
// Their lines stay in the log until the next compaction; the sender skips
// them. Events still in memory are discarded at once. Called with mu held.
func (r *Recorder) enforceBound() {
	buffered := r.nextSeq - 1 - r.acked
	if buffered <= r.max {
		return
	}
	over := buffered - r.max
	r.acked += over
	r.dropped += over
	r.lost += over
	i := 0
	for i < len(r.pending) && r.pending[i].seq <= r.acked {
		i++
	}
	r.pending = r.pending[i:]
}

func encodeRecord(seq uint64, ev proto.Event, subject string) ([]byte, error) {
	raw, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	line, err := json.Marshal(record{Seq: seq, ID: ev.ID, Subject: subject, Event: raw})
	if err != nil {
		return nil, err
	}
	return append(line, '\n'), nil
}

// Stats returns the current counters.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Buffered: r.nextSeq - 1 - r.acked, Sent: r.sent, Dropped: r.lost}
}

// Close writes out what was emitted, saves the cursor and releases the
// files. Call it after Run has returned; Emit after Close drops the event.
func (r *Recorder) Close() error {
	var err error
	r.once.Do(func() {
		// Refuse new events first, so the writer's last flush takes them all.
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		close(r.stop)
		<-r.done
		r.fileMu.Lock()
		defer r.fileMu.Unlock()
		err = r.saveStateLocked()
		if cerr := r.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("events: close log: %w", cerr)
		}
		r.f = nil
	})
	return err
}

func newEpoch() string {
	b := make([]byte, 8)
	rand.Read(b) // never fails on supported platforms (crypto/rand panics instead)
	return hex.EncodeToString(b)
}
