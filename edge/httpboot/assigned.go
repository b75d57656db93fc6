package httpboot

import (
	"sync"
	"sync/atomic"
)

// assigned answers whether an image is served at this site: one that a host
// of the site boots, or the site's discovery image; and likewise a loader
// (the site's or a host's). Any other image of the
// fleet is refused before the cache sees the request, so a client cannot
// make the edge download images the site never boots.
//
// The set is rebuilt from State.AssignedImages (a walk over every host) only
// after the state changed, when the state says so (OnChange); a state that
// cannot say is asked on every request.
type assigned struct {
	st      State
	tracked bool          // st reports changes
	changes atomic.Uint64 // bumped by every change of st
	mu      sync.Mutex    // one rebuild at a time
	cur     atomic.Pointer[imageSet]
}

type imageSet struct {
	gen     uint64 // changes when it was built
	names   map[string]bool
	loaders map[string]bool
}

// changeNotifier is the part of *state.State that reports changes.
type changeNotifier interface {
	OnChange(func())
}

func newAssigned(st State) *assigned {
	a := &assigned{st: st}
	if n, ok := st.(changeNotifier); ok {
		a.tracked = true
		n.OnChange(func() { a.changes.Add(1) })
	}
	return a
}

func (a *assigned) has(image string) bool { return a.current().names[image] }

// hasLoader: a loader the site or one of its hosts boots with.
func (a *assigned) hasLoader(loader string) bool { return a.current().loaders[loader] }

func (a *assigned) current() *imageSet {
	if !a.tracked {
		return a.build(0)
	}
	gen := a.changes.Load()
	set := a.cur.Load()
	if set == nil || set.gen != gen {
		a.mu.Lock()
		if set = a.cur.Load(); set == nil || set.gen != a.changes.Load() {
			// Read the generation before the state: a change during
			// the walk leaves the set stale and the next call rebuilds.
			set = a.build(a.changes.Load())
			a.cur.Store(set)
		}
		a.mu.Unlock()
	}
	return set
}

func (a *assigned) build(gen uint64) *imageSet {
	s := &imageSet{gen: gen, names: map[string]bool{}, loaders: map[string]bool{}}
	for _, n := range a.st.AssignedImages() {
		s.names[n] = true
	}
	for _, n := range a.st.AssignedLoaders() {
		s.loaders[n] = true
	}
	return s
}
