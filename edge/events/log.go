package events

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/fleetboot/fleetboot/shared/atomicfile"
)

// writeRetry is how long the writer waits before retrying after a disk error.
const writeRetry = time.Second

// minCompact keeps a tiny bound from rewriting the log on every event.
const minCompact = 64

// recover loads the state file and scans the log, so a restarted edge
// resumes exactly where the last acknowledged event was. A torn last line
// (the process died inside a write) is cut off.
func (r *Recorder) recover() error {
	st, err := r.loadState()
	if err != nil {
		return err
	}
	r.epoch, r.acked, r.dropped, r.report = st.Epoch, st.Acked, st.Dropped, st.Report

	f, err := os.OpenFile(r.logPath, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("events: open log: %w", err)
	}
	defer f.Close()
	var off, goodEnd int64
	firstLive := int64(-1)
	br := bufio.NewReader(f)
	for {
		line, err := br.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				r.log.Warn("cutting off a torn last event line", "bytes", len(line))
			}
			break
		}
		if err != nil {
			return fmt.Errorf("events: read log: %w", err)
		}
		var rec record
		if jerr := json.Unmarshal(line, &rec); jerr != nil || rec.Seq == 0 {
			// Only disk corruption produces this: skip the line rather
			// than refuse to start; compaction removes it later.
			r.log.Warn("skipping a corrupt event line", "offset", off, "err", jerr)
		} else {
			if r.firstSeq == 0 {
				r.firstSeq = rec.Seq
			}
			r.lastSeq = rec.Seq
			if rec.Seq > r.acked && firstLive < 0 {
				firstLive = off
			}
		}
		off += int64(len(line))
		goodEnd = off
	}
	if err := f.Truncate(goodEnd); err != nil {
		return fmt.Errorf("events: cut torn log tail: %w", err)
	}
	r.size = goodEnd
	r.readOff, r.readSeq = goodEnd, r.acked
	if firstLive >= 0 {
		r.readOff = firstLive
	}
	r.nextSeq = max(r.lastSeq, r.acked) + 1
	r.durable = r.lastSeq
	// A smaller bound than last time drops the excess now.
	r.enforceBound()

	r.f, err = os.OpenFile(r.logPath, os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("events: open log: %w", err)
	}
	if r.lastSeq > r.acked {
		r.log.Info("resuming event buffer", "unsent", r.lastSeq-r.acked, "dropped_unreported", r.dropped)
	}
	return nil
}

func (r *Recorder) loadState() (persisted, error) {
	b, err := os.ReadFile(r.statePath)
	if errors.Is(err, fs.ErrNotExist) {
		return persisted{V: 1, Epoch: newEpoch()}, nil
	}
	if err != nil {
		return persisted{}, fmt.Errorf("events: read cursor: %w", err)
	}
	var st persisted
	if err := json.Unmarshal(b, &st); err != nil || st.Epoch == "" {
		// Resending everything is better than losing anything: the
		// stream's duplicate window absorbs recent repeats.
		r.log.Warn("cursor file unreadable, resending the whole buffer", "err", err)
		return persisted{V: 1, Epoch: newEpoch()}, nil
	}
	return st, nil
}

// saveStateLocked writes the cursor atomically (temporary file, fsync,
// rename, directory fsync). Called with fileMu held, which serialises it.
func (r *Recorder) saveStateLocked() error {
	r.mu.Lock()
	st := persisted{V: 1, Epoch: r.epoch, Acked: r.acked, Dropped: r.dropped, Report: r.report}
	r.mu.Unlock()
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("events: encode cursor: %w", err)
	}
	if err := atomicfile.WriteFile(r.statePath, b, 0o600); err != nil {
		return fmt.Errorf("events: save cursor: %w", err)
	}
	return nil
}

// writer is the group-commit loop: it takes everything emitted since its
// last round, writes it with one write and one fsync, and tells the sender.
func (r *Recorder) writer() {
	defer close(r.done)
	var retry <-chan time.Time
	for {
		select {
		case <-r.wake:
		case <-retry:
		case <-r.stop:
			if err := r.flush(); err != nil {
				r.log.Error("final write of buffered events failed", "err", err)
			}
			return
		}
		retry = nil
		if err := r.flush(); err != nil {
			r.log.Error("writing events to the buffer failed; keeping them in memory and retrying", "err", err)
			retry = time.After(writeRetry)
		}
	}
}

func (r *Recorder) flush() error {
	r.mu.Lock()
	batch := r.pending
	r.pending = nil
	r.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	r.fileMu.Lock()
	defer r.fileMu.Unlock()
	var buf bytes.Buffer
	for _, p := range batch {
		buf.Write(p.line)
	}
	if _, err := r.f.Write(buf.Bytes()); err != nil {
		return r.requeue(batch, err)
	}
	if err := r.f.Sync(); err != nil {
		return r.requeue(batch, err)
	}
	r.size += int64(buf.Len())
	if r.firstSeq == 0 {
		r.firstSeq = batch[0].seq
	}
	r.lastSeq = batch[len(batch)-1].seq
	r.mu.Lock()
	r.durable = r.lastSeq
	acked := r.acked
	r.mu.Unlock()
	select {
	case r.flushed <- struct{}{}:
	default:
	}
	// Lines the cursor has passed (sent, or dropped while the link was
	// down) are dead weight: rewrite the log once they outnumber the bound,
	// so an edge offline for a week keeps a file of bounded size.
	if acked >= r.firstSeq && acked-r.firstSeq+1 >= max(r.max, minCompact) {
		if err := r.compactLocked(); err != nil {
			r.log.Error("compacting the event buffer failed", "err", err)
		}
	}
	return nil
}

// requeue undoes a failed write (cutting any partial line) and puts the
// batch back in front of what was emitted since. Called with fileMu held.
func (r *Recorder) requeue(batch []pendingRec, cause error) error {
	if err := r.f.Truncate(r.size); err != nil {
		r.log.Error("cannot cut a partial write from the event log", "err", err)
	}
	r.mu.Lock()
	r.pending = append(batch, r.pending...)
	r.enforceBound()
	r.mu.Unlock()
	return fmt.Errorf("events: write log: %w", cause)
}

// readBatch returns up to max durable records after the sender's position.
func (r *Recorder) readBatch(max int) ([]record, error) {
	r.fileMu.Lock()
	defer r.fileMu.Unlock()
	if r.f == nil {
		return nil, errClosed
	}
	if r.readOff >= r.size {
		return nil, nil
	}
	n := min(r.size-r.readOff, 1<<20)
	buf := make([]byte, n)
	if _, err := readAt(r.logPath, buf, r.readOff); err != nil {
		return nil, fmt.Errorf("events: read log: %w", err)
	}
	if bytes.IndexByte(buf, '\n') < 0 && r.readOff+n < r.size {
		// A line longer than the chunk: read to the end.
		buf = make([]byte, r.size-r.readOff)
		if _, err := readAt(r.logPath, buf, r.readOff); err != nil {
			return nil, fmt.Errorf("events: read log: %w", err)
		}
	}
	var out []record
	for len(out) < max {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		line := buf[:i+1]
		buf = buf[i+1:]
		r.readOff += int64(len(line))
		var rec record
		if err := json.Unmarshal(line, &rec); err != nil || rec.Seq == 0 {
			continue // corrupt line, already reported at recovery
		}
		r.readSeq = rec.Seq
		out = append(out, rec)
	}
	return out, nil
}

var errClosed = errors.New("events: recorder closed")

func readAt(path string, buf []byte, off int64) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.ReadAt(buf, off)
}

// compactLocked drops the lines the cursor has passed. When nothing is left
// it simply truncates; otherwise it rewrites the live lines to a new file
// and renames it into place. The cursor is saved first, so a crash at any
// point leaves a state file that never points before the log's start.
// Called with fileMu held.
func (r *Recorder) compactLocked() error {
	if err := r.saveStateLocked(); err != nil {
		return err
	}
	r.mu.Lock()
	acked := r.acked
	r.mu.Unlock()
	if acked >= r.lastSeq {
		if err := r.f.Truncate(0); err != nil {
			return fmt.Errorf("events: truncate log: %w", err)
		}
		r.size, r.firstSeq, r.lastSeq, r.readOff = 0, 0, 0, 0
		return nil
	}
	src, err := os.Open(r.logPath)
	if err != nil {
		return fmt.Errorf("events: compact: %w", err)
	}
	defer src.Close()
	var size, readOff int64 = 0, -1
	var first, last uint64
	err = atomicfile.Write(r.logPath, atomicfile.Options{Perm: 0o640}, func(out io.Writer) error {
		w := bufio.NewWriter(out)
		br := bufio.NewReader(io.LimitReader(src, r.size))
		for {
			line, err := br.ReadBytes('\n')
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			var rec record
			if json.Unmarshal(line, &rec) != nil || rec.Seq <= acked {
				continue
			}
			if first == 0 {
				first = rec.Seq
			}
			last = rec.Seq
			if readOff < 0 && rec.Seq > r.readSeq {
				readOff = size
			}
			w.Write(line)
			size += int64(len(line))
		}
		return w.Flush()
	})
	if err != nil {
		return fmt.Errorf("events: compact: %w", err)
	}
	nf, err := os.OpenFile(r.logPath, os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("events: compact: reopen log: %w", err)
	}
	r.f.Close()
	r.f = nf
	if readOff < 0 {
		readOff = size
	}
	r.size, r.firstSeq, r.lastSeq, r.readOff = size, first, last, readOff
	return nil
}
