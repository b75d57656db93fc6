package web

import (
	"math"
	"sync"
	"time"

	"github.com/fleetboot/fleetboot/proto"
)

// EdgeHistory keeps, in memory, each edge's cache hit ratio over the last
// day, one sample per slot (the slot's last heartbeat), for the site
// page's sparklines. The edges bucket keeps only an edge's last heartbeat,
// so the history starts when this coordinator did; every coordinator
// receives every heartbeat, so each has the same. Safe for concurrent use.
type EdgeHistory struct {
	slot  time.Duration
	slots int

	mu    sync.Mutex
	edges map[string]*edgeRing // by site/edge
}

type edgeRing struct {
	at  []int64 // slot number (Unix time / slot) of each sample; 0 = none
	hit []float64
}

// Bounds: a sample every 10 minutes for a day, for at most maxEdges edges
// (a heartbeat names an edge its credential allows, so there are as many as
// were enrolled; the bound stops a bug from growing it).
const (
	historySlot  = 10 * time.Minute
	historySlots = 144
	maxEdges     = 10_000
)

// NewEdgeHistory returns an empty history.
func NewEdgeHistory() *EdgeHistory {
	return &EdgeHistory{slot: historySlot, slots: historySlots, edges: map[string]*edgeRing{}}
}

// Record keeps a heartbeat received at now.
func (e *EdgeHistory) Record(now time.Time, st proto.EdgeStatus) {
	if e == nil || math.IsNaN(st.HitRatio) {
		return
	}
	key := st.Site + "/" + st.Name
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.edges[key]
	if r == nil {
		if len(e.edges) >= maxEdges {
			return
		}
		r = &edgeRing{at: make([]int64, e.slots), hit: make([]float64, e.slots)}
		e.edges[key] = r
	}
	n := now.UnixNano() / int64(e.slot)
	i := n % int64(e.slots)
	r.at[i], r.hit[i] = n, min(max(st.HitRatio, 0), 1)
}

// HitRatios returns an edge's hit ratio in each slot of the last day up
// to now, oldest first, NaN where no heartbeat came.
func (e *EdgeHistory) HitRatios(site, edge string, now time.Time) []float64 {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.edges[site+"/"+edge]
	if r == nil {
		return nil
	}
	out := make([]float64, e.slots)
	cur := now.UnixNano() / int64(e.slot)
	for k := range out {
		n := cur - int64(e.slots-1-k)
		out[k] = math.NaN()
		if i := n % int64(e.slots); n >= 0 && r.at[i] == n {
			out[k] = r.hit[i]
		}
	}
	return out
}
