package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/fleetboot/fleetboot/proto"
)

// Image revisions (proto/revision.go has the KV layout): every `image add`
// of new content records an immutable revision under its own key, then
// makes it current by replacing the NAME entry, which is what hosts that
// follow NAME boot. A rollback points NAME at the previous revision again;
// nothing is uploaded, and the files are those the edges already cached.

// addRevisionLocked records in as the next revision of its image and makes
// it current. Content equal to the current revision's adds nothing: adding
// the same files twice is not a change. Callers hold s.mu.
func (s *Service) addRevisionLocked(ctx context.Context, in proto.Image) (proto.Image, error) {
	kv := s.kv[proto.BucketImages]
	cur, err := s.read(ctx, proto.BucketImages, in.Name)
	exists := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return proto.Image{}, err
	}
	var curIm proto.Image
	if exists {
		if err := json.Unmarshal(cur.value, &curIm); err != nil {
			return proto.Image{}, fmt.Errorf("coordinator: decode image %s: %w", in.Name, err)
		}
		if sameContent(curIm, in) {
			return curIm, nil
		}
	}
	revs, err := s.revisions(ctx, in.Name)
	if err != nil {
		return proto.Image{}, err
	}
	next := 1
	if len(revs) > 0 {
		next = revs[len(revs)-1].Revision + 1
	}
	if exists && curIm.Revision == 0 && len(revs) == 0 {
		// Written before revisions existed: it becomes revision 1, so a
		// rollback can return to it.
		legacy := curIm
		legacy.Revision = 1
		data, _ := json.Marshal(legacy)
		if _, err := kv.Create(ctx, proto.ImageRevisionKey(in.Name, 1), data); err != nil && !casConflict(err) {
			return proto.Image{}, fmt.Errorf("coordinator: record image %s revision 1: %w", in.Name, err)
		}
		next = 2
	}
	if exists && curIm.CurrentRevision() >= next {
		next = curIm.CurrentRevision() + 1
	}
	in.V = proto.Version
	in.Updated = s.now().UTC()
	in.Revision = next
	data, _ := json.Marshal(in)
	revKey := proto.ImageRevisionKey(in.Name, next)
	// Create, never Put: two coordinators adding at once cannot both
	// write revision N; the loser retries.
	if _, err := kv.Create(ctx, revKey, data); err != nil {
		if casConflict(err) {
			return proto.Image{}, fmt.Errorf("%w: image %s got another revision concurrently; retry", ErrConflict, in.Name)
		}
		return proto.Image{}, fmt.Errorf("coordinator: record image %s revision %d: %w", in.Name, next, err)
	}
	if exists {
		_, err = kv.Update(ctx, in.Name, data, cur.rev)
	} else {
		_, err = kv.Create(ctx, in.Name, data)
	}
	if err != nil {
		_ = kv.Delete(context.WithoutCancel(ctx), revKey)
		if casConflict(err) {
			return proto.Image{}, fmt.Errorf("%w: image %s changed concurrently; retry", ErrConflict, in.Name)
		}
		return proto.Image{}, fmt.Errorf("coordinator: write image %s: %w", in.Name, err)
	}
	// The image is usable again even if a removal had marked its lock.
	if _, err := s.kv[bucketImageLocks].Put(ctx, in.Name, []byte(lockInUse)); err != nil {
		return proto.Image{}, fmt.Errorf("coordinator: image lock %s: %w", in.Name, err)
	}
	s.log.Info("image revision saved", "image", in.Name, "revision", next)
	return in, nil
}

// sameContent tells whether two image records boot the same thing.
func sameContent(a, b proto.Image) bool {
	return a.Arch == b.Arch && a.Cmdline == b.Cmdline && slices.Equal(a.Artifacts, b.Artifacts)
}

// revisions returns the recorded revisions of an image, oldest first.
func (s *Service) revisions(ctx context.Context, name string) ([]proto.Image, error) {
	keys, ims, err := listKeyed[proto.Image](ctx, s, proto.BucketImages, proto.ImageRevisionFilter(name))
	if err != nil {
		return nil, err
	}
	out := make([]proto.Image, 0, len(ims))
	for i, im := range ims {
		n, rev, ok := proto.ParseImageRevisionKey(keys[i])
		if !ok || n != name {
			continue
		}
		im.Revision = rev // the key is the authority
		out = append(out, im)
	}
	slices.SortFunc(out, func(a, b proto.Image) int { return a.Revision - b.Revision })
	return out, nil
}

// ImageHistory lists an image's revisions and says which is current.
func (s *Service) ImageHistory(ctx context.Context, name string) (proto.ImageHistory, error) {
	if err := proto.ValidName("image", name); err != nil {
		return proto.ImageHistory{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	cur, err := s.getImage(ctx, name)
	if err != nil {
		return proto.ImageHistory{}, err
	}
	revs, err := s.revisions(ctx, name)
	if err != nil {
		return proto.ImageHistory{}, err
	}
	if len(revs) == 0 { // written before revisions existed
		cur.Revision = 1
		revs = []proto.Image{cur}
	}
	return proto.ImageHistory{V: proto.Version, Name: name, Current: cur.CurrentRevision(), Revisions: revs}, nil
}

// RollbackImage makes the revision before the current one current again.
// Hosts that follow the name boot it from their next boot on; hosts pinned
// to a revision do not move.
func (s *Service) RollbackImage(ctx context.Context, name string) (proto.Image, error) {
	if err := proto.ValidName("image", name); err != nil {
		return proto.Image{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := s.read(ctx, proto.BucketImages, name)
	if err != nil {
		return proto.Image{}, fmt.Errorf("image %s: %w", name, err)
	}
	var curIm proto.Image
	if err := json.Unmarshal(cur.value, &curIm); err != nil {
		return proto.Image{}, fmt.Errorf("coordinator: decode image %s: %w", name, err)
	}
	revs, err := s.revisions(ctx, name)
	if err != nil {
		return proto.Image{}, err
	}
	var prev *proto.Image
	for i := range revs {
		if revs[i].Revision < curIm.CurrentRevision() {
			prev = &revs[i]
		}
	}
	if prev == nil {
		return proto.Image{}, fmt.Errorf("%w: image %s has no revision before %d to roll back to", ErrConflict, name, curIm.CurrentRevision())
	}
	// The revision gets a user, as a pinning host does: a concurrent
	// removal of it on another coordinator fails, or this does.
	if err := s.pin(ctx, bucketImageLocks, "image revision", proto.ImageRevisionKey(name, prev.Revision)); err != nil {
		return proto.Image{}, fmt.Errorf("image %s@%d: %w", name, prev.Revision, err)
	}
	data, _ := json.Marshal(*prev)
	if _, err := s.kv[proto.BucketImages].Update(ctx, name, data, cur.rev); err != nil {
		if casConflict(err) {
			return proto.Image{}, fmt.Errorf("%w: image %s changed concurrently; retry", ErrConflict, name)
		}
		return proto.Image{}, fmt.Errorf("coordinator: write image %s: %w", name, err)
	}
	s.log.Info("image rolled back", "image", name, "from", curIm.CurrentRevision(), "to", prev.Revision)
	return *prev, nil
}

// removeRevisionLocked removes one revision no host or site pins and that
// is not current. Callers hold s.mu.
func (s *Service) removeRevisionLocked(ctx context.Context, name string, rev int) error {
	ref := proto.ImageRef(name, rev)
	return s.removeKeyUnused(ctx, imageObjects, proto.ImageRevisionKey(name, rev), ref, func(ctx context.Context) error {
		var cur proto.Image
		if _, err := s.get(ctx, proto.BucketImages, name, &cur); err == nil && cur.CurrentRevision() == rev {
			return fmt.Errorf("%w: %s is the current revision of image %s; add a new revision or roll back first", ErrConflict, ref, name)
		}
		return s.imageUnused(ctx, ref, func(r string) bool { return r == ref })
	})
}

// dropRevisions deletes the revisions of a removed image. Nothing can pin
// them any more: a pin of NAME@N pins NAME first, whose lock the removal
// marked.
func (s *Service) dropRevisions(ctx context.Context, name string) {
	revs, err := s.revisions(ctx, name)
	if err != nil {
		s.log.Warn("image removed; its revisions stay", "image", name, "err", err)
		return
	}
	for _, r := range revs {
		if err := s.kv[proto.BucketImages].Delete(ctx, proto.ImageRevisionKey(name, r.Revision)); err != nil {
			s.log.Warn("image revision not deleted", "image", name, "revision", r.Revision, "err", err)
		}
	}
}
