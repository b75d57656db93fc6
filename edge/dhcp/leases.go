package dhcp

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Lease states.
const (
	leaseOffered  = "offered"  // held for the client between OFFER and REQUEST
	leaseBound    = "bound"    // ACKed
	leaseReleased = "released" // given back (or expired); remembered so the client gets it again
	leaseDeclined = "declined" // in use by someone we do not know (DECLINE or a conflict probe)
)

// Lease is one address's record.
type Lease struct {
	IP      netip.Addr `json:"ip"`
	MAC     string     `json:"mac,omitempty"`
	State   string     `json:"state"`
	Expires time.Time  `json:"expires"`
}

// active reports whether the record still holds the address against others.
func (l *Lease) active(now time.Time) bool {
	return (l.State == leaseOffered || l.State == leaseBound || l.State == leaseDeclined) && now.Before(l.Expires)
}

// Leases is the lease database: in memory, and on disk when a path is
// given (a snapshot and a journal, see leasefile.go), synced after every
// change a client relies on (ACK, RELEASE, DECLINE) before the client hears
// of it, so an edge restart honours every lease it granted. Offers reach
// the disk only with such a change: a client that lost its offer in a
// restart simply DISCOVERs again.
type Leases struct {
	mu     sync.Mutex
	path   string
	byIP   map[netip.Addr]*Lease
	byMAC  map[string]netip.Addr     // the MAC's current address
	cursor map[netip.Addr]netip.Addr // range start -> where the next pool scan begins
	gen    uint64                    // bumped by every change that must reach the disk

	dirty map[netip.Addr]struct{} // records changed since the last commit

	// Group commit: one committer at a time writes every change made
	// since the previous write and fsyncs once; the ACKs that arrive while
	// it does wait for it (if it covers them) or for the next, written by
	// one of them. A rack powering on together costs a few fsyncs, not one
	// per machine. Waiters park on wake, which the committer closes when
	// its write is done, so they all resume at once; none queues on a lock
	// behind the disk (under load, hundreds handed a mutex on one by one
	// took longer than the fsync).
	waitMu  sync.Mutex
	writing bool          // a committer is writing
	wake    chan struct{} // closed when the current write ends
	saved   atomic.Uint64 // gen of the last write on disk

	// flushMu serialises the writer with Close.
	flushMu      sync.Mutex
	journal      *os.File // open for appending; nil until the first commit
	journalBytes int64
	compactMin   int64         // the journal is never compacted below this (compactMin; tests lower it)
	jseq         uint64        // the last commit written to the journal
	compacting   bool          // a snapshot is being written in the background
	compactDone  chan struct{} // closed when that snapshot is done
	compactAfter time.Time     // no compaction before (after a failed one)

	// snapMu guards what the background snapshot writer updates.
	snapMu        sync.Mutex
	snapshotBytes int64
	seq           uint64 // the last journaled commit the snapshot includes

	// synced, when set (tests), is called after each fsync of the journal
	// with the records it made durable, before any waiter returns.
	synced func(recs []Lease)
}

type leaseFile struct {
	V      int     `json:"v"`
	Seq    uint64  `json:"seq,omitempty"` // the last journal commit included
	Leases []Lease `json:"leases"`
}

// OpenLeases loads the lease file at path (a missing file is an empty
// database). An empty path keeps leases in memory only.
func OpenLeases(path string) (*Leases, error) {
	l := &Leases{path: path, byIP: map[netip.Addr]*Lease{}, byMAC: map[string]netip.Addr{}, cursor: map[netip.Addr]netip.Addr{},
		dirty: map[netip.Addr]struct{}{}, compactMin: compactMin, wake: make(chan struct{})}
	if path == "" {
		return l, nil
	}
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("dhcp: read lease file: %w", err)
	}
	if err == nil {
		var f leaseFile
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("dhcp: lease file %s is corrupt: %w", path, err)
		}
		for _, le := range f.Leases {
			l.applyLocked(le)
		}
		l.seq, l.jseq, l.snapshotBytes = f.Seq, f.Seq, int64(len(b))
	}
	found, err := l.replayJournal()
	if err != nil {
		return nil, err
	}
	if found {
		// Start from one snapshot: the replayed journal folded in, a
		// commit cut short by a crash gone with it.
		if err := l.compact(); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// All returns a copy of every record, sorted by address.
func (l *Leases) All() []Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.allLocked()
}

func (l *Leases) allLocked() []Lease {
	out := l.copyLocked()
	sortLeases(out)
	return out
}

// copyLocked copies every record, unsorted: the copy is all that needs the
// lock.
func (l *Leases) copyLocked() []Lease {
	out := make([]Lease, 0, len(l.byIP))
	for _, le := range l.byIP {
		out = append(out, *le)
	}
	return out
}

func sortLeases(ls []Lease) {
	slices.SortFunc(ls, func(a, b Lease) int { return a.IP.Compare(b.IP) })
}

// setLocked records le, replacing the address's record and moving the MAC.
func (l *Leases) setLocked(le Lease) {
	l.dirty[le.IP] = struct{}{}
	if old, ok := l.byIP[le.IP]; ok && old.MAC != "" && old.MAC != le.MAC && l.byMAC[old.MAC] == le.IP {
		delete(l.byMAC, old.MAC)
	}
	if le.MAC != "" {
		if prev, ok := l.byMAC[le.MAC]; ok && prev != le.IP {
			// A MAC holds one address: an unconfirmed offer elsewhere is
			// dropped, a bound one becomes history (still preferred later).
			if p := l.byIP[prev]; p != nil && p.State == leaseOffered {
				delete(l.byIP, prev)
				l.dirty[prev] = struct{}{}
			} else if p != nil && p.State == leaseBound {
				p.State = leaseReleased
				l.dirty[prev] = struct{}{}
			}
		}
		l.byMAC[le.MAC] = le.IP
	}
	c := le
	l.byIP[le.IP] = &c
}

// changedLocked notes a change that must reach the disk and returns its
// generation for commit.
func (l *Leases) changedLocked() uint64 {
	l.gen++
	return l.gen
}

// commit returns once a write that includes generation g is on disk. Call it
// without l.mu held.
func (l *Leases) commit(g uint64) error {
	if l.path == "" {
		return nil
	}
	for {
		if l.saved.Load() >= g {
			return nil // a write that started after our change covered it
		}
		l.waitMu.Lock()
		if l.saved.Load() >= g {
			l.waitMu.Unlock()
			return nil
		}
		if l.writing {
			// The write in progress may have started before our change:
			// wait for it, then look again (the next is ours to write
			// if nobody else starts it first).
			w := l.wake
			l.waitMu.Unlock()
			<-w
			continue
		}
		l.writing = true
		l.waitMu.Unlock()
		err := l.write()
		l.waitMu.Lock()
		l.writing = false
		close(l.wake)
		l.wake = make(chan struct{})
		l.waitMu.Unlock()
		if err != nil {
			return err
		}
	}
}

// write appends every change since the last write to the journal and
// fsyncs it. One committer at a time (commit's writing flag).
func (l *Leases) write() error {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.mu.Lock()
	recs := make([]Lease, 0, len(l.dirty))
	for ip := range l.dirty {
		if r := l.byIP[ip]; r != nil {
			recs = append(recs, *r)
		} else {
			recs = append(recs, Lease{IP: ip, State: leaseGone})
		}
	}
	clear(l.dirty)
	gen := l.gen
	l.mu.Unlock()
	if err := l.appendJournal(recs); err != nil {
		l.mu.Lock()
		for _, r := range recs {
			l.dirty[r.IP] = struct{}{} // for the next commit to try again
		}
		l.mu.Unlock()
		return err
	}
	if l.synced != nil {
		l.synced(recs)
	}
	l.saved.Store(gen)
	l.snapMu.Lock()
	due := l.journalBytes > max(l.compactMin, l.snapshotBytes)
	l.snapMu.Unlock()
	if due && !l.compacting && time.Now().After(l.compactAfter) {
		l.startCompaction()
	}
	return nil
}

// MACFor returns the MAC holding a lease on ip, or "" when none does. Other
// services of the edge (TFTP) use it to name the machine behind an address.
func (l *Leases) MACFor(ip netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if le, ok := l.byIP[ip]; ok {
		return le.MAC
	}
	return ""
}

// pool is what one network lets one client have: the dynamic range, the
// addresses never handed out, and the site's reservations. The handler
// builds it per request; Leases applies it under its own lock.
type pool struct {
	prefix     netip.Prefix
	start, end netip.Addr    // invalid when the network has no dynamic range
	exclude    [4]netip.Addr // never offered: network, broadcast, edge, router (invalid entries match nothing)
	own        netip.Addr    // the client's reservation on this network, if any
	owner      string        // the client's primary MAC (a host may boot from an extra NIC)
	// reserved names the host whose fixed address ip is (State.Reservation:
	// an index lookup, so a pool scan never lists the site's hosts).
	reserved func(ip netip.Addr) (mac string, ok bool)
}

func (p *pool) inRange(a netip.Addr) bool {
	return p.start.IsValid() && a.Compare(p.start) >= 0 && a.Compare(p.end) <= 0
}

func (p *pool) excluded(a netip.Addr) bool {
	for _, x := range p.exclude {
		if x.IsValid() && x == a {
			return true
		}
	}
	return false
}

// Ranks of a usable address, best first.
const (
	rankMine     = iota // already this client's
	rankFresh           // never used
	rankRecycled        // released or expired by another client
	rankNone
)

// rankLocked says whether mac may have a, and how good a choice it is.
// It is the one place that enforces "never outside the range or
// reservations, never another MAC's lease or reservation".
func (l *Leases) rankLocked(p *pool, a netip.Addr, mac string, now time.Time) int {
	if !a.IsValid() || !p.prefix.Contains(a) || p.excluded(a) {
		return rankNone
	}
	if a != p.own && !p.inRange(a) {
		return rankNone
	}
	// Asked for the client's own reservation too: while two hosts name
	// one address, it is the index's owner's alone.
	if owner, ok := p.reserved(a); ok && owner != p.owner {
		return rankNone
	}
	rec := l.byIP[a]
	switch {
	case rec == nil:
		return rankFresh
	case rec.MAC == mac && rec.State == leaseDeclined && rec.active(now):
		return rankNone
	case rec.MAC == mac:
		return rankMine
	case rec.active(now):
		return rankNone
	}
	return rankRecycled
}

// chooseLocked picks the address to offer: the reservation, the client's
// previous address, the address it asks for, then the pool (never-used
// addresses first, then the longest-expired).
func (l *Leases) chooseLocked(p *pool, mac string, requested netip.Addr, now time.Time) netip.Addr {
	if p.own.IsValid() {
		if owner, ok := p.reserved(p.own); ok && owner != p.owner {
			return netip.Addr{} // another host's while two name it: an offer would take its lease
		}
		return p.own
	}
	if prev, ok := l.byMAC[mac]; ok && l.rankLocked(p, prev, mac, now) < rankNone {
		return prev
	}
	if l.rankLocked(p, requested, mac, now) < rankNone {
		return requested
	}
	if !p.start.IsValid() {
		return netip.Addr{}
	}
	// Scan once around the range from where the last scan stopped, so a
	// filling pool costs O(1) per client instead of O(leases).
	var recycled netip.Addr
	var oldest time.Time
	start := l.cursor[p.start]
	if !p.inRange(start) {
		start = p.start
	}
	a := start
	for {
		switch l.rankLocked(p, a, mac, now) {
		case rankMine, rankFresh:
			l.cursor[p.start] = a.Next()
			return a
		case rankRecycled:
			if exp := l.byIP[a].Expires; !recycled.IsValid() || exp.Before(oldest) {
				recycled, oldest = a, exp
			}
		}
		if a = a.Next(); !p.inRange(a) {
			a = p.start
		}
		if a == start {
			return recycled
		}
	}
}

// Offer chooses an address of p for mac (requested is the client's wish,
// option 50) and holds it for mac until hold. It returns an invalid address
// when p has none to give. alreadyOurs reports that mac already holds the
// address (a live lease or its own decline-free record): such an address
// needs no conflict probe.
func (l *Leases) Offer(p *pool, mac string, requested netip.Addr, now, hold time.Time) (a netip.Addr, alreadyOurs bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a = l.chooseLocked(p, mac, requested, now)
	if !a.IsValid() {
		return a, false
	}
	rec := l.byIP[a]
	alreadyOurs = rec != nil && rec.MAC == mac && rec.active(now)
	if !alreadyOurs || rec.State == leaseOffered {
		l.setLocked(Lease{IP: a, MAC: mac, State: leaseOffered, Expires: hold})
	}
	return a, alreadyOurs
}

// MarkInUse records that something we do not know answers on a (a conflict
// probe for mac): nobody is offered it until until. It does nothing, and
// reports false, when a was bound to mac itself while the probe ran: a
// retransmitted DISCOVER of the same client was offered a at once (the
// pending offer was its own), the client took it, and then answered the
// first DISCOVER's ping on it. That is the client, not a conflict; holding
// a against it would NAK its next renewal.
func (l *Leases) MarkInUse(a netip.Addr, mac string, now, until time.Time) (marked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rec := l.byIP[a]; rec != nil && rec.MAC == mac && rec.State == leaseBound && rec.active(now) {
		return false
	}
	l.setLocked(Lease{IP: a, State: leaseDeclined, Expires: until})
	return true
}

// Bind grants a to mac for d from now and writes it to disk before
// returning, so the client hears of a lease only once it survives a
// restart. ok is false when a is not mac's to have under p.
func (l *Leases) Bind(p *pool, a netip.Addr, mac string, now time.Time, d time.Duration) (ok bool, err error) {
	l.mu.Lock()
	if p.own.IsValid() && a != p.own {
		l.mu.Unlock()
		return false, nil // a host with a reservation gets exactly that
	}
	if l.rankLocked(p, a, mac, now) == rankNone {
		l.mu.Unlock()
		return false, nil
	}
	l.setLocked(Lease{IP: a, MAC: mac, State: leaseBound, Expires: now.Add(d)})
	g := l.changedLocked()
	l.mu.Unlock()
	if err := l.commit(g); err != nil {
		return false, err
	}
	return true, nil
}

// ForgetOffer drops the address offered to mac, if it holds only an offer:
// the client took another server's.
func (l *Leases) ForgetOffer(mac string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a, ok := l.byMAC[mac]; ok && l.byIP[a] != nil && l.byIP[a].State == leaseOffered {
		delete(l.byIP, a)
		delete(l.byMAC, mac)
		l.dirty[a] = struct{}{}
	}
}

// Decline marks a in use by someone else until until, at the request of mac,
// which must be the address's holder (or nobody's). ok reports a change.
func (l *Leases) Decline(a netip.Addr, mac string, until time.Time) (ok bool, err error) {
	l.mu.Lock()
	if rec := l.byIP[a]; rec != nil && rec.MAC != mac {
		l.mu.Unlock()
		return false, nil // only the holder may decline its address
	}
	l.setLocked(Lease{IP: a, State: leaseDeclined, Expires: until})
	if l.byMAC[mac] == a {
		delete(l.byMAC, mac)
	}
	g := l.changedLocked()
	l.mu.Unlock()
	return true, l.commit(g)
}

// Release gives back mac's bound lease on a. The record keeps the MAC, so
// the client gets the same address next time. ok reports a change.
func (l *Leases) Release(a netip.Addr, mac string, now time.Time) (ok bool, err error) {
	l.mu.Lock()
	rec := l.byIP[a]
	if rec == nil || rec.MAC != mac || rec.State != leaseBound {
		l.mu.Unlock()
		return false, nil
	}
	rec.State, rec.Expires = leaseReleased, now
	l.dirty[a] = struct{}{}
	g := l.changedLocked()
	l.mu.Unlock()
	return true, l.commit(g)
}
