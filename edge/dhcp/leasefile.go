package dhcp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/fleetboot/fleetboot/shared/atomicfile"
)

// The lease database on disk is a snapshot (the JSON file, written
// atomically) and a journal beside it (PATH.journal): each commit appends
// the records changed since the previous one, one JSON line each, and
// fsyncs once. Rewriting the whole snapshot per commit cost O(leases) per
// ACK — a pool of 100 000 leases rewrote megabytes for every group of
// clients — and three fsyncs (file, rename, directory) instead of one.
// Once the journal outgrows the snapshot (at least compactMin), the
// snapshot is rewritten and the journal emptied.
//
// Every commit is numbered; the snapshot records the last number it
// includes, so a crash between writing a snapshot and emptying the journal
// does not replay older records over the newer snapshot.
//
// Compaction runs beside the commits, not in their way: writing a snapshot
// of 100 000 leases takes tens of milliseconds, and every ACK waiting on the
// committer used to wait for it too. The committer only renames the journal
// to PATH.journal.old and copies the records (the commit number they reach
// with them); later commits go to a new journal while a goroutine writes
// the snapshot and then removes the old journal. A start replays the
// snapshot, the old journal and the journal, in that order.

// leaseGone marks a record deleted (an offer dropped) in the journal.
const leaseGone = "gone"

// compactMin is the journal size below which it is never compacted.
const compactMin = 1 << 20

type journalRec struct {
	N uint64 `json:"n"`
	Lease
}

func journalPath(path string) string { return path + ".journal" }

// oldJournalPath holds the journal a snapshot in progress is folding in.
func oldJournalPath(path string) string { return path + ".journal.old" }

// applyLocked puts a record read from disk into the maps.
func (l *Leases) applyLocked(le Lease) {
	if !le.IP.Is4() {
		return
	}
	if old, ok := l.byIP[le.IP]; ok && old.MAC != "" && l.byMAC[old.MAC] == le.IP {
		delete(l.byMAC, old.MAC)
	}
	if le.State == leaseGone {
		delete(l.byIP, le.IP)
		return
	}
	c := le
	l.byIP[le.IP] = &c
	if le.MAC != "" {
		l.byMAC[le.MAC] = le.IP
	}
}

// replayJournal applies the records newer than the snapshot of the old
// journal (a compaction cut short) and then of the journal.
func (l *Leases) replayJournal() (found bool, err error) {
	for _, p := range []string{oldJournalPath(l.path), journalPath(l.path)} {
		f, err := l.replayFile(p)
		if err != nil {
			return true, err
		}
		found = found || f
	}
	return found, nil
}

// replayFile applies one journal file's records newer than the snapshot. A
// last line cut short by a crash (no newline, or not JSON) is a commit
// that never finished: its clients were never ACKed, so it is dropped. A
// bad line with more after it is corruption.
func (l *Leases) replayFile(path string) (found bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("dhcp: read lease journal: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return true, nil // a partial last line, or none
		}
		if err != nil {
			return true, fmt.Errorf("dhcp: read lease journal: %w", err)
		}
		var rec journalRec
		if jerr := json.Unmarshal(line, &rec); jerr != nil {
			if _, perr := r.Peek(1); errors.Is(perr, io.EOF) {
				return true, nil
			}
			return true, fmt.Errorf("dhcp: lease journal %s is corrupt at line %d: %w", path, n, jerr)
		}
		if rec.N > l.seq {
			l.applyLocked(rec.Lease)
			l.jseq = max(l.jseq, rec.N)
		}
	}
}

// appendJournal writes one commit's records and fsyncs them.
func (l *Leases) appendJournal(recs []Lease) error {
	if l.journal == nil {
		f, err := os.OpenFile(journalPath(l.path), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("dhcp: open lease journal: %w", err)
		}
		// The journal's directory entry must survive a power loss too.
		if err := atomicfile.SyncDir(filepath.Dir(l.path)); err != nil {
			f.Close()
			return fmt.Errorf("dhcp: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return fmt.Errorf("dhcp: lease journal: %w", err)
		}
		l.journal, l.journalBytes = f, st.Size()
	}
	l.jseq++
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, r := range recs {
		if err := enc.Encode(journalRec{N: l.jseq, Lease: r}); err != nil {
			return fmt.Errorf("dhcp: encode lease: %w", err)
		}
	}
	n, err := l.journal.Write(buf.Bytes())
	l.journalBytes += int64(n)
	if err != nil {
		return fmt.Errorf("dhcp: append to lease journal: %w", err)
	}
	if err := l.journal.Sync(); err != nil {
		return fmt.Errorf("dhcp: fsync lease journal: %w", err)
	}
	return nil
}

// compact writes the snapshot, recording the last journaled commit it
// includes, and removes the journals. At start only, before any commit.
func (l *Leases) compact() error {
	l.mu.Lock()
	all, seq := l.allLocked(), l.jseq
	l.mu.Unlock()
	if err := l.writeSnapshot(all, seq); err != nil {
		return err
	}
	for _, p := range []string{oldJournalPath(l.path), journalPath(l.path)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("dhcp: remove lease journal: %w", err)
		}
	}
	return nil
}

// startCompaction moves the journal aside, copies the records it and the
// commits before it hold, and leaves a goroutine to write them as the
// snapshot. Call with flushMu held, after a commit (anything changed since
// that is in the copy reaches the new journal with the next commit, whose
// number is above the snapshot's, and is replayed over it).
func (l *Leases) startCompaction() {
	// An old journal still there is one whose snapshot failed: its records
	// are in no snapshot yet, so it stays, and the journal with it; this
	// snapshot covers both.
	if _, err := os.Lstat(oldJournalPath(l.path)); errors.Is(err, os.ErrNotExist) {
		if l.journal != nil {
			// Closing first: the next commit opens the new journal
			// (and fsyncs the directory, which makes the rename
			// durable with it).
			err := l.journal.Close()
			l.journal = nil
			if err != nil {
				return
			}
		}
		if err := os.Rename(journalPath(l.path), oldJournalPath(l.path)); err != nil {
			return // the journal grows on; tried again after the next commit
		}
		l.journalBytes = 0
	}
	l.mu.Lock()
	all, seq := l.copyLocked(), l.jseq
	l.mu.Unlock()
	done := make(chan struct{})
	l.compacting, l.compactDone = true, done
	go func() {
		sortLeases(all)
		err := l.writeSnapshot(all, seq)
		if err == nil {
			_ = os.Remove(oldJournalPath(l.path))
		}
		l.flushMu.Lock()
		defer l.flushMu.Unlock()
		if err != nil {
			// A failing disk: not again for a while (each try copies and
			// encodes every lease).
			l.compactAfter = time.Now().Add(10 * time.Second)
		}
		l.compacting = false
		close(done)
	}()
}

// lockSettled takes flushMu once no snapshot is being written.
func (l *Leases) lockSettled() {
	l.flushMu.Lock()
	for l.compacting {
		done := l.compactDone
		l.flushMu.Unlock()
		<-done
		l.flushMu.Lock()
	}
}

// writeSnapshot writes the snapshot file atomically.
func (l *Leases) writeSnapshot(all []Lease, seq uint64) error {
	b, err := json.Marshal(leaseFile{V: 1, Seq: seq, Leases: all})
	if err != nil {
		return fmt.Errorf("dhcp: encode leases: %w", err)
	}
	if err := atomicfile.WriteFile(l.path, b, 0o600); err != nil {
		return fmt.Errorf("dhcp: save leases: %w", err)
	}
	l.snapMu.Lock()
	l.seq, l.snapshotBytes = seq, int64(len(b))
	l.snapMu.Unlock()
	return nil
}

// Close releases the journal. A later commit opens it again.
func (l *Leases) Close() error {
	// A snapshot being written finishes first, so that a restart that
	// follows finds the files settled.
	l.lockSettled()
	defer l.flushMu.Unlock()
	if l.journal == nil {
		return nil
	}
	err := l.journal.Close()
	l.journal = nil
	return err
}
