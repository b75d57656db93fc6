package dhcp

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/fleetboot/fleetboot/shared/atomicfile"
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

// Leases is the lease database: in memory, and in a JSON file when a path is
// given, rewritten atomically after every change a client relies on (ACK,
// RELEASE, DECLINE), so an edge restart honours every lease it granted.
// Offers are not written: a client that lost its offer in a restart simply
// DISCOVERs again.
type Leases struct {
	mu     sync.Mutex
	path   string
	byIP   map[netip.Addr]*Lease
	byMAC  map[string]netip.Addr     // the MAC's current address
	cursor map[netip.Addr]netip.Addr // range start -> where the next pool scan begins
	gen    uint64                    // bumped by every change that must reach the disk

	// flushMu serialises writers. ACKs that arrive while a write is in
	// progress are all covered by the next one (group commit), so a rack
	// powering on together costs a few fsyncs, not one per machine.
	flushMu sync.Mutex
	saved   uint64 // gen of the last write
}

type leaseFile struct {
	V      int     `json:"v"`
	Leases []Lease `json:"leases"`
}

// OpenLeases loads the lease file at path (a missing file is an empty
// database). An empty path keeps leases in memory only.
func OpenLeases(path string) (*Leases, error) {
	l := &Leases{path: path, byIP: map[netip.Addr]*Lease{}, byMAC: map[string]netip.Addr{}, cursor: map[netip.Addr]netip.Addr{}}
	if path == "" {
		return l, nil
	}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dhcp: read lease file: %w", err)
	}
	var f leaseFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("dhcp: lease file %s is corrupt: %w", path, err)
	}
	for _, le := range f.Leases {
		if !le.IP.Is4() {
			continue
		}
		le := le
		l.byIP[le.IP] = &le
		if le.MAC != "" {
			l.byMAC[le.MAC] = le.IP
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
	out := make([]Lease, 0, len(l.byIP))
	for _, le := range l.byIP {
		out = append(out, *le)
	}
	slices.SortFunc(out, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	return out
}

// setLocked records le, replacing the address's record and moving the MAC.
func (l *Leases) setLocked(le Lease) {
	if old, ok := l.byIP[le.IP]; ok && old.MAC != "" && old.MAC != le.MAC && l.byMAC[old.MAC] == le.IP {
		delete(l.byMAC, old.MAC)
	}
	if le.MAC != "" {
		if prev, ok := l.byMAC[le.MAC]; ok && prev != le.IP {
			// A MAC holds one address: an unconfirmed offer elsewhere is
			// dropped, a bound one becomes history (still preferred later).
			if p := l.byIP[prev]; p != nil && p.State == leaseOffered {
				delete(l.byIP, prev)
			} else if p != nil && p.State == leaseBound {
				p.State = leaseReleased
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
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	if l.saved >= g {
		return nil // a write that started after our change already covered it
	}
	l.mu.Lock()
	snap, gen := l.allLocked(), l.gen
	l.mu.Unlock()
	if err := l.write(snap); err != nil {
		return err
	}
	l.saved = gen
	return nil
}

// write stores the database atomically: a temporary file in the same
// directory, fsync, rename over the old file, fsync of the directory. A crash
// leaves either the old or the new file, never a torn one.
func (l *Leases) write(all []Lease) error {
	b, err := json.Marshal(leaseFile{V: 1, Leases: all})
	if err != nil {
		return fmt.Errorf("dhcp: encode leases: %w", err)
	}
	if err := atomicfile.WriteFile(l.path, b, 0o600); err != nil {
		return fmt.Errorf("dhcp: save leases: %w", err)
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
