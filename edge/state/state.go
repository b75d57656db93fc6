// Package state is the edge's in-memory view of its site's desired state: the
// site, its hosts (found by any of their MACs), the images and the loaders. The sync
// package fills it from NATS or from the on-disk snapshot; the DHCP, TFTP and
// HTTP handlers read it. Readers get copies, never shared mutable values.
package state

import (
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/fleetboot/fleetboot/proto"
)

// State is safe for concurrent use.
type State struct {
	mu      sync.RWMutex
	site    proto.Site
	hasSite bool
	hosts   map[string]proto.Host // primary MAC -> host
	byMAC   map[string]string     // any MAC -> primary MAC
	// reserved indexes the hosts' fixed addresses: IP -> primary MACs of
	// the hosts that name it, sorted (one, unless two hosts briefly claim
	// the same address while a move is applied). DHCP asks it for every
	// address it considers, so it must not cost a pass over the hosts.
	reserved map[netip.Addr][]string
	images   map[string]proto.Image
	loaders  map[string]proto.Loader
	tmpls    map[string]proto.Template
	revision uint64
	onChange []func()
}

// New returns an empty state.
func New() *State {
	return &State{hosts: map[string]proto.Host{}, byMAC: map[string]string{}, reserved: map[netip.Addr][]string{},
		images: map[string]proto.Image{}, loaders: map[string]proto.Loader{}, tmpls: map[string]proto.Template{}}
}

// OnChange registers f to run (without locks held) after every change.
func (s *State) OnChange(f func()) {
	s.mu.Lock()
	s.onChange = append(s.onChange, f)
	s.mu.Unlock()
}

func (s *State) changed() {
	s.mu.RLock()
	fs := slices.Clone(s.onChange)
	s.mu.RUnlock()
	for _, f := range fs {
		f()
	}
}

// Site returns the site config; ok is false until one arrived.
func (s *State) Site() (proto.Site, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return cloneSite(s.site), s.hasSite
}

// SetSite replaces the site config.
func (s *State) SetSite(site proto.Site) {
	s.mu.Lock()
	s.site, s.hasSite = cloneSite(site), true
	s.mu.Unlock()
	s.changed()
}

// Host finds a host by any of its MACs (canonical colon form).
func (s *State) Host(mac string) (proto.Host, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.byMAC[mac]
	if !ok {
		return proto.Host{}, false
	}
	return cloneHost(s.hosts[p]), true
}

// Hosts returns all hosts sorted by MAC.
func (s *State) Hosts() []proto.Host {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedValues(s.hosts, cloneHost)
}

// PutHost adds or replaces a host.
func (s *State) PutHost(h proto.Host) {
	s.mu.Lock()
	s.deleteHostLocked(h.MAC)
	h = cloneHost(h)
	s.hosts[h.MAC] = h
	for _, m := range h.MACs() {
		s.byMAC[m] = h.MAC
	}
	if a, ok := reservedIP(h); ok {
		owners := s.reserved[a]
		i, _ := slices.BinarySearch(owners, h.MAC)
		s.reserved[a] = slices.Insert(owners, i, h.MAC)
	}
	s.mu.Unlock()
	s.changed()
}

// DeleteHost removes a host by its primary MAC.
func (s *State) DeleteHost(mac string) {
	s.mu.Lock()
	s.deleteHostLocked(mac)
	s.mu.Unlock()
	s.changed()
}

func (s *State) deleteHostLocked(mac string) {
	old, ok := s.hosts[mac]
	if !ok {
		return
	}
	for _, m := range old.MACs() {
		if s.byMAC[m] == mac {
			delete(s.byMAC, m)
		}
	}
	if a, ok := reservedIP(old); ok {
		owners := slices.DeleteFunc(s.reserved[a], func(m string) bool { return m == mac })
		if len(owners) == 0 {
			delete(s.reserved, a)
		} else {
			s.reserved[a] = owners
		}
	}
	delete(s.hosts, mac)
}

// reservedIP is h's fixed address, if it has a valid one. The coordinator
// validates addresses; one that does not parse reserves nothing.
func reservedIP(h proto.Host) (netip.Addr, bool) {
	if h.IP == "" {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(h.IP)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// Reservation returns the primary MAC of the host whose fixed address is ip.
// When two hosts name the same address (a move applied in two steps), the
// lowest MAC is returned and the address stays reserved until both are gone.
func (s *State) Reservation(ip netip.Addr) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	owners := s.reserved[ip.Unmap()]
	if len(owners) == 0 {
		return "", false
	}
	return owners[0], true
}

// Image returns an image by name (its current revision) or one revision of
// it by NAME@N; the image's Name is what was asked for.
func (s *State) Image(ref string) (proto.Image, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	im, ok := s.images[ref]
	if !ok {
		// The current revision of an image written before revisions
		// existed has no revision entry: it is revision 1.
		name, rev, err := proto.ParseImageRef(ref)
		if err != nil || rev == 0 {
			return proto.Image{}, false
		}
		if im, ok = s.images[name]; !ok || im.CurrentRevision() != rev {
			return proto.Image{}, false
		}
		im.Name = ref
	}
	return cloneImage(im), ok
}

// PreviousRevision returns the revision of image name before its current
// one, if the state has it: what a rollback would make current, whose
// files the cache keeps longest.
func (s *State) PreviousRevision(name string) (proto.Image, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	cur, ok := s.images[name]
	if !ok {
		return proto.Image{}, false
	}
	var prev proto.Image
	found := false
	for ref, im := range s.images {
		n, rev, err := proto.ParseImageRef(ref)
		if err != nil || n != name || rev == 0 || rev >= cur.CurrentRevision() {
			continue
		}
		if !found || rev > prev.Revision {
			prev, found = im, true
			prev.Revision = rev
		}
	}
	return cloneImage(prev), found
}

// Images returns all images.
func (s *State) Images() []proto.Image {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedValues(s.images, cloneImage)
}

// PutImage adds or replaces an image.
func (s *State) PutImage(im proto.Image) {
	s.mu.Lock()
	s.images[im.Name] = cloneImage(im)
	s.mu.Unlock()
	s.changed()
}

// DeleteImage removes an image.
func (s *State) DeleteImage(name string) {
	s.mu.Lock()
	delete(s.images, name)
	s.mu.Unlock()
	s.changed()
}

// Loader returns a loader by name (the DHCP handler's dhcp.LoaderSource).
func (s *State) Loader(name string) (proto.Loader, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l, ok := s.loaders[name]
	return cloneLoader(l), ok
}

// Loaders returns all loaders.
func (s *State) Loaders() []proto.Loader {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedValues(s.loaders, cloneLoader)
}

// PutLoader adds or replaces a loader.
func (s *State) PutLoader(l proto.Loader) {
	s.mu.Lock()
	s.loaders[l.Name] = cloneLoader(l)
	s.mu.Unlock()
	s.changed()
}

// DeleteLoader removes a loader.
func (s *State) DeleteLoader(name string) {
	s.mu.Lock()
	delete(s.loaders, name)
	s.mu.Unlock()
	s.changed()
}

// Template returns an install template by name.
func (s *State) Template(name string) (proto.Template, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.tmpls[name]
	return t, ok
}

// Templates returns all install templates.
func (s *State) Templates() []proto.Template {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedValues(s.tmpls, func(t proto.Template) proto.Template { return t })
}

// PutTemplate adds or replaces an install template.
func (s *State) PutTemplate(t proto.Template) {
	s.mu.Lock()
	s.tmpls[t.Name] = t
	s.mu.Unlock()
	s.changed()
}

// DeleteTemplate removes an install template.
func (s *State) DeleteTemplate(name string) {
	s.mu.Lock()
	delete(s.tmpls, name)
	s.mu.Unlock()
	s.changed()
}

// Revision is the highest KV revision applied.
func (s *State) Revision() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.revision
}

// SetRevision records the highest KV revision applied.
func (s *State) SetRevision(r uint64) {
	s.mu.Lock()
	if r > s.revision {
		s.revision = r
	}
	s.mu.Unlock()
}

// AssignedImages returns the images some host of the site boots, as the
// hosts name them: NAME or a pinned revision NAME@N.
func (s *State) AssignedImages() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	set := map[string]bool{}
	for _, h := range s.hosts {
		if h.Image != "" {
			set[h.Image] = true
		}
	}
	if s.site.DiscoveryImage != "" {
		set[s.site.DiscoveryImage] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// AssignedLoaders names the loaders this site boots with: the site's and
// those of its hosts. Only their files are served and prefetched.
func (s *State) AssignedLoaders() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	set := map[string]bool{}
	for _, h := range s.hosts {
		if h.Loader != "" {
			set[h.Loader] = true
		}
	}
	if s.site.Loader != "" {
		set[s.site.Loader] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// sortedValues returns copies of m's values in the order of their keys (the
// primary MAC or the image name).
func sortedValues[V any](m map[string]V, clone func(V) V) []V {
	out := make([]V, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, clone(m[k]))
	}
	return out
}

func cloneSite(s proto.Site) proto.Site {
	s.Networks = slices.Clone(s.Networks)
	for i := range s.Networks {
		s.Networks[i].DNS = slices.Clone(s.Networks[i].DNS)
	}
	return s
}

func cloneHost(h proto.Host) proto.Host {
	h.ExtraMACs = slices.Clone(h.ExtraMACs)
	h.Vars = maps.Clone(h.Vars)
	if h.BMC != nil {
		b := *h.BMC
		b.Sealed = maps.Clone(b.Sealed)
		h.BMC = &b
	}
	h.Labels = maps.Clone(h.Labels)
	return h
}

func cloneImage(im proto.Image) proto.Image {
	im.Artifacts = slices.Clone(im.Artifacts)
	return im
}

func cloneLoader(l proto.Loader) proto.Loader {
	l.Files = slices.Clone(l.Files)
	return l
}
