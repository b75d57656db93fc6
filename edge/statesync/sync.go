// Package statesync keeps an edge's state in step with the coordinator: it watches
// the KV buckets (the site's config, the site's hosts under "<site>.>", and
// the images and loaders), applies every change to the in-memory state, and writes a
// snapshot to disk so that an edge restarted while NATS is unreachable still
// boots every machine it knew. When NATS comes back it resumes from the
// revisions it holds instead of reloading everything.
package statesync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	gosync "sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/edge/state"
	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/atomicfile"
)

// Config of a Syncer.
type Config struct {
	Site         string
	State        *state.State
	SnapshotPath string
	Logger       *slog.Logger
	// Reconcile is how often the syncer checks that its watches are alive
	// and re-reads what it should hold (default 30 s).
	Reconcile time.Duration
}

// Syncer applies desired-state changes from NATS to the edge's state.
type Syncer struct {
	cfg Config
	log *slog.Logger

	mu      gosync.Mutex
	revs    map[string]uint64 // bucket -> last applied revision
	live    map[string]bool   // bucket -> watch caught up and running
	heads   map[string]uint64 // bucket -> last sequence seen at the server
	dirty   chan struct{}
	applied chan struct{} // closed and replaced on every applied change (tests wait on it)

	// betweenReads, if set, runs in WriteSnapshot between its two reads
	// (tests use it to land a change in that window).
	betweenReads func()
}

// Snapshot is the on-disk form of an edge's state.
type Snapshot struct {
	V         int               `json:"v"`
	Site      *proto.Site       `json:"site,omitempty"`
	Hosts     []proto.Host      `json:"hosts"`
	Images    []proto.Image     `json:"images"`
	Loaders   []proto.Loader    `json:"loaders,omitempty"`
	Templates []proto.Template  `json:"templates,omitempty"`
	Revisions map[string]uint64 `json:"revisions"`
	Written   time.Time         `json:"written"`
}

// New creates a Syncer and loads the snapshot, if there is one, into the state.
func New(cfg Config) (*Syncer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Reconcile <= 0 {
		cfg.Reconcile = 30 * time.Second
	}
	s := &Syncer{cfg: cfg, log: cfg.Logger, revs: map[string]uint64{}, live: map[string]bool{}, heads: map[string]uint64{},
		dirty: make(chan struct{}, 1), applied: make(chan struct{})}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Syncer) load() error {
	data, err := os.ReadFile(s.cfg.SnapshotPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("statesync: read snapshot: %w", err)
	}
	var snap Snapshot
	if err := json.Unmarshal(data, &snap); err != nil {
		// A corrupt snapshot must not keep the edge down: start empty and
		// let the watch refill it.
		s.log.Error("snapshot unreadable; starting empty", "path", s.cfg.SnapshotPath, "err", err)
		return nil
	}
	st := s.cfg.State
	if snap.Site != nil {
		st.SetSite(*snap.Site)
	}
	for _, h := range snap.Hosts {
		st.PutHost(h)
	}
	for _, im := range snap.Images {
		st.PutImage(im)
	}
	for _, l := range snap.Loaders {
		st.PutLoader(l)
	}
	for _, t := range snap.Templates {
		st.PutTemplate(t)
	}
	for b, r := range snap.Revisions {
		s.revs[b] = r
	}
	st.SetRevision(s.total())
	s.log.Info("state loaded from snapshot", "hosts", len(snap.Hosts), "images", len(snap.Images), "written", snap.Written)
	return nil
}

func (s *Syncer) total() uint64 {
	var t uint64
	for _, r := range s.revs {
		t += r
	}
	return t
}

// Revision returns the sum of the applied revisions of the watched buckets and
// how far behind the server's heads the edge is (0 when all watches are live).
func (s *Syncer) Revision() (rev, lag uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for b, r := range s.revs {
		rev += r
		if !s.live[b] && s.heads[b] > r {
			lag += s.heads[b] - r
		}
	}
	return rev, lag
}

// Applied returns a channel closed at the next applied change.
func (s *Syncer) Applied() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied
}

// watch describes one bucket to follow.
type watch struct {
	bucket string
	filter string
	apply  func(e jetstream.KeyValueEntry) error
}

// Run follows the buckets until ctx ends, re-creating watches that end (a
// nats.go KV watcher can stop on a disconnect and not come back) and writing
// snapshots. getKV opens a bucket; it fails while NATS is unreachable.
func (s *Syncer) Run(ctx context.Context, js jetstream.JetStream) error {
	watches := []watch{
		{proto.BucketSites, s.cfg.Site, s.applySite},
		{proto.BucketHosts, s.cfg.Site + ".>", s.applyHost},
		{proto.BucketImages, ">", s.applyImage},
		{proto.BucketLoaders, ">", s.applyLoader},
		{proto.BucketTemplates, ">", s.applyTemplate},
	}
	var wg gosync.WaitGroup
	for _, w := range watches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.follow(ctx, js, w)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.snapshotLoop(ctx)
	}()
	wg.Wait()
	return nil
}

// follow keeps one bucket's watch alive.
func (s *Syncer) follow(ctx context.Context, js jetstream.JetStream, w watch) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := s.watchOnce(ctx, js, w)
		s.setLive(w.bucket, false)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("state watch ended; retrying", "bucket", w.bucket, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (s *Syncer) watchOnce(ctx context.Context, js jetstream.JetStream, w watch) error {
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	kv, err := js.KeyValue(octx, w.bucket)
	cancel()
	if err != nil {
		return fmt.Errorf("open bucket %s: %w", w.bucket, err)
	}
	s.mu.Lock()
	from := s.revs[w.bucket]
	s.mu.Unlock()
	opts := []jetstream.WatchOpt{}
	if from > 0 {
		opts = append(opts, jetstream.ResumeFromRevision(from+1))
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	watcher, err := kv.Watch(wctx, w.filter, opts...)
	if err != nil {
		return fmt.Errorf("watch %s %s: %w", w.bucket, w.filter, err)
	}
	defer watcher.Stop()
	if from > 0 {
		// Resuming cannot see keys purged while we were away: re-list once.
		if err := s.dropVanished(ctx, kv, w); err != nil {
			return err
		}
	}
	tick := time.NewTicker(s.cfg.Reconcile)
	defer tick.Stop()
	quiet := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-watcher.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			if e == nil { // caught up with the current values
				s.setLive(w.bucket, true)
				s.log.Info("state in sync", "bucket", w.bucket, "revision", s.rev(w.bucket))
				continue
			}
			quiet = 0
			if err := w.apply(e); err != nil {
				s.log.Warn("ignoring bad state entry", "bucket", w.bucket, "key", e.Key(), "err", err)
			}
			s.setRev(w.bucket, e.Revision())
		case <-tick.C:
			// Is the server ahead of us while the watch is silent? Then the
			// watch is dead even though its channel is open: start over.
			head, err := s.head(ctx, kv)
			if err != nil {
				return fmt.Errorf("status of %s: %w", w.bucket, err)
			}
			if head > s.rev(w.bucket) {
				quiet++
				if quiet >= 2 {
					return fmt.Errorf("watch of %s silent while the bucket moved to %d", w.bucket, head)
				}
			}
		}
	}
}

// head returns the bucket's last sequence. Other sites' changes move it too,
// so it is only a hint that something may have been missed.
func (s *Syncer) head(ctx context.Context, kv jetstream.KeyValue) (uint64, error) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := kv.Status(sctx)
	if err != nil {
		return 0, err
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, nil
	}
	head := bs.StreamInfo().State.LastSeq
	s.mu.Lock()
	s.heads[kv.Bucket()] = head
	s.mu.Unlock()
	if kv.Bucket() != proto.BucketImages && kv.Bucket() != proto.BucketLoaders && kv.Bucket() != proto.BucketTemplates {
		// Sites and hosts are watched through a filter: other sites' changes
		// move the head but never our revision, so the head says nothing.
		return 0, nil
	}
	return head, nil
}

// dropVanished removes from the state what the bucket no longer has.
func (s *Syncer) dropVanished(ctx context.Context, kv jetstream.KeyValue, w watch) error {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lister, err := kv.ListKeysFiltered(lctx, w.filter)
	if err != nil {
		return fmt.Errorf("list %s: %w", w.bucket, err)
	}
	have := map[string]bool{}
	for k := range lister.Keys() {
		have[k] = true
	}
	st := s.cfg.State
	switch w.bucket {
	case proto.BucketHosts:
		for _, h := range st.Hosts() {
			if k, _ := proto.HostKey(s.cfg.Site, h.MAC); !have[k] {
				st.DeleteHost(h.MAC)
			}
		}
	case proto.BucketImages:
		for _, im := range st.Images() {
			if !have[imageKey(im.Name)] {
				st.DeleteImage(im.Name)
			}
		}
	case proto.BucketLoaders:
		for _, l := range st.Loaders() {
			if !have[l.Name] {
				st.DeleteLoader(l.Name)
			}
		}
	case proto.BucketTemplates:
		for _, t := range st.Templates() {
			if !have[t.Name] {
				st.DeleteTemplate(t.Name)
			}
		}
	}
	s.markDirty()
	return nil
}

func (s *Syncer) rev(bucket string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revs[bucket]
}

func (s *Syncer) setRev(bucket string, r uint64) {
	s.mu.Lock()
	if r > s.revs[bucket] {
		s.revs[bucket] = r
	}
	total := s.total()
	close(s.applied)
	s.applied = make(chan struct{})
	s.mu.Unlock()
	s.cfg.State.SetRevision(total)
	s.markDirty()
}

func (s *Syncer) setLive(bucket string, live bool) {
	s.mu.Lock()
	s.live[bucket] = live
	s.mu.Unlock()
}

func (s *Syncer) markDirty() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

func deleted(e jetstream.KeyValueEntry) bool {
	return e.Operation() == jetstream.KeyValueDelete || e.Operation() == jetstream.KeyValuePurge
}

func (s *Syncer) applySite(e jetstream.KeyValueEntry) error {
	if deleted(e) {
		// A site removed at the coordinator: keep serving the last config
		// rather than stopping DHCP for machines mid-install.
		s.log.Warn("site deleted at the coordinator; keeping the last config", "site", s.cfg.Site)
		return nil
	}
	var site proto.Site
	if err := json.Unmarshal(e.Value(), &site); err != nil {
		return err
	}
	s.cfg.State.SetSite(site)
	return nil
}

func (s *Syncer) applyHost(e jetstream.KeyValueEntry) error {
	_, mac, ok := proto.SplitHostKey(e.Key())
	if !ok {
		return fmt.Errorf("bad host key %q", e.Key())
	}
	if deleted(e) {
		s.cfg.State.DeleteHost(mac)
		return nil
	}
	var h proto.Host
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return err
	}
	if h.MAC != mac {
		return fmt.Errorf("host key %q holds MAC %s", e.Key(), h.MAC)
	}
	s.cfg.State.PutHost(h)
	return nil
}

// applyImage applies an image (key NAME, its current revision) or one of
// its revisions (proto.ImageRevisionKey), which the state holds under the
// name hosts pin it by, NAME@N.
func (s *Syncer) applyImage(e jetstream.KeyValueEntry) error {
	ref := e.Key()
	if name, rev, ok := proto.ParseImageRevisionKey(e.Key()); ok {
		ref = proto.ImageRef(name, rev)
	} else if proto.IsImageRevisionKey(e.Key()) {
		return fmt.Errorf("bad image revision key %q", e.Key())
	}
	if deleted(e) {
		s.cfg.State.DeleteImage(ref)
		return nil
	}
	var im proto.Image
	if err := json.Unmarshal(e.Value(), &im); err != nil {
		return err
	}
	im.Name = ref
	s.cfg.State.PutImage(im)
	return nil
}

// imageKey is the images bucket key of a name the state holds (NAME or NAME@N).
func imageKey(ref string) string {
	name, rev, err := proto.ParseImageRef(ref)
	if err != nil || rev == 0 {
		return ref
	}
	return proto.ImageRevisionKey(name, rev)
}

func (s *Syncer) applyLoader(e jetstream.KeyValueEntry) error {
	if deleted(e) {
		s.cfg.State.DeleteLoader(e.Key())
		return nil
	}
	var l proto.Loader
	if err := json.Unmarshal(e.Value(), &l); err != nil {
		return err
	}
	s.cfg.State.PutLoader(l)
	return nil
}

func (s *Syncer) applyTemplate(e jetstream.KeyValueEntry) error {
	if deleted(e) {
		s.cfg.State.DeleteTemplate(e.Key())
		return nil
	}
	var t proto.Template
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return err
	}
	s.cfg.State.PutTemplate(t)
	return nil
}

// snapshotLoop writes the snapshot after changes, at most once a second.
func (s *Syncer) snapshotLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			if err := s.WriteSnapshot(); err != nil {
				s.log.Error("final snapshot", "err", err)
			}
			return
		case <-s.dirty:
		}
		if err := s.WriteSnapshot(); err != nil {
			s.log.Error("snapshot not written", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// WriteSnapshot writes the state atomically: temp file, fsync, rename, fsync dir.
//
// The revisions are read before the state. A change is applied to the state
// before its revision is recorded, so state read afterwards holds at least
// every change the revisions claim; it may hold newer ones too, which the
// next start replays harmlessly. Read the other way round, a change landing
// in between would be claimed but missing, and skipped for good on resume.
func (s *Syncer) WriteSnapshot() error {
	snap := Snapshot{V: proto.Version, Revisions: map[string]uint64{}}
	s.mu.Lock()
	for b, r := range s.revs {
		snap.Revisions[b] = r
	}
	hook := s.betweenReads
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	st := s.cfg.State
	snap.Hosts, snap.Images, snap.Loaders, snap.Templates, snap.Written = st.Hosts(), st.Images(), st.Loaders(), st.Templates(), time.Now().UTC()
	if site, ok := st.Site(); ok {
		snap.Site = &site
	}
	data, err := json.MarshalIndent(snap, "", " ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(s.cfg.SnapshotPath, data, 0o600); err != nil {
		return fmt.Errorf("statesync: write snapshot: %w", err)
	}
	return nil
}
