package service

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
)

var archs = []string{"x86_64", "arm64"}

var hexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// AddImage registers an image whose artifacts are already stored: a new
// image, or a new revision of an existing one, which becomes its current
// revision (see revisions.go).
func (s *Service) AddImage(ctx context.Context, in proto.Image) (proto.Image, error) {
	if err := proto.ValidName("image", in.Name); err != nil {
		return proto.Image{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if in.Arch == "" {
		in.Arch = "x86_64"
	}
	if !slices.Contains(archs, in.Arch) {
		return proto.Image{}, invalid("invalid arch %q: want x86_64 or arm64", in.Arch)
	}
	if strings.ContainsAny(in.Cmdline, "\r\n\x00") {
		return proto.Image{}, invalid("kernel command line must be one line")
	}
	roles := map[string]bool{}
	names := map[string]bool{}
	for _, a := range in.Artifacts {
		switch a.Role {
		case proto.RoleKernel, proto.RoleInitrd, proto.RoleISO:
		default:
			return proto.Image{}, invalid("invalid artifact role %q", a.Role)
		}
		// Several initrds are loaded in order (early microcode, then the
		// initrd); a kernel or an ISO is one file.
		if roles[a.Role] && a.Role != proto.RoleInitrd {
			return proto.Image{}, invalid("two %s artifacts", a.Role)
		}
		roles[a.Role] = true
		if err := proto.ValidName("artifact file", a.Name); err != nil {
			return proto.Image{}, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if names[a.Name] {
			return proto.Image{}, invalid("two artifacts named %s", a.Name)
		}
		names[a.Name] = true
		if !hexRE.MatchString(a.SHA256) || a.Size <= 0 || a.Key == "" {
			return proto.Image{}, invalid("artifact %s needs a key, a size and a sha256", a.Name)
		}
	}
	if !roles[proto.RoleKernel] || !roles[proto.RoleInitrd] {
		return proto.Image{}, invalid("image %s needs a kernel and an initrd", in.Name)
	}
	if s.check != nil {
		for _, a := range in.Artifacts {
			if err := s.check.CheckArtifact(ctx, a); err != nil {
				return proto.Image{}, fmt.Errorf("%w: artifact %s: %v", ErrInvalid, a.Name, err)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addRevisionLocked(ctx, in)
}

// ListImages returns all images, each at its current revision.
func (s *Service) ListImages(ctx context.Context) ([]proto.Image, error) {
	keys, ims, err := listKeyed[proto.Image](ctx, s, proto.BucketImages, ">")
	if err != nil {
		return nil, err
	}
	out := ims[:0]
	for i, im := range ims {
		if !proto.IsImageRevisionKey(keys[i]) {
			out = append(out, im)
		}
	}
	return out, nil
}

// GetImage returns one image at its current revision (NAME) or one
// revision of it (NAME@N).
func (s *Service) GetImage(ctx context.Context, ref string) (proto.Image, error) {
	if err := proto.ValidImageRef(ref); err != nil {
		return proto.Image{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return s.getImage(ctx, ref)
}

// getImage reads NAME (its current revision) or NAME@N.
func (s *Service) getImage(ctx context.Context, ref string) (proto.Image, error) {
	name, rev, err := proto.ParseImageRef(ref)
	if err != nil {
		return proto.Image{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var im proto.Image
	if _, err := s.get(ctx, proto.BucketImages, name, &im); err != nil {
		return proto.Image{}, fmt.Errorf("image %s: %w", name, err)
	}
	if rev == 0 || rev == im.CurrentRevision() {
		return im, nil
	}
	// A fresh value: decoding over the current revision would keep its
	// fields that the older one leaves out (an empty cmdline).
	var old proto.Image
	if _, err := s.get(ctx, proto.BucketImages, proto.ImageRevisionKey(name, rev), &old); err != nil {
		return proto.Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	return old, nil
}

// RemoveImage deletes an image (NAME: with all its revisions) or one
// revision (NAME@N) that no host or site uses.
func (s *Service) RemoveImage(ctx context.Context, ref string) error {
	name, rev, err := proto.ParseImageRef(ref)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev > 0 {
		return s.removeRevisionLocked(ctx, name, rev)
	}
	if err := s.removeUnused(ctx, imageObjects, name, func(ctx context.Context) error {
		// NAME and every NAME@N keep the image.
		return s.imageUnused(ctx, name, func(ref string) bool { return ref == name || strings.HasPrefix(ref, name+"@") })
	}); err != nil {
		return err
	}
	s.dropRevisions(ctx, name)
	return nil
}

// imageUnused fails when a host or a site's discovery image is one that
// uses says belongs to what is being removed (called image ref).
func (s *Service) imageUnused(ctx context.Context, ref string, uses func(string) bool) error {
	hosts, err := s.listHosts(ctx, "")
	if err != nil {
		return err
	}
	var users []string
	for _, h := range hosts {
		if uses(h.Image) {
			users = append(users, h.MAC)
		}
	}
	slices.Sort(users)
	if len(users) > 0 {
		return fmt.Errorf("%w: image %s is used by %d host(s) (%s); assign them another image first", ErrConflict, ref, len(users), strings.Join(first(users, 3), ", "))
	}
	sites, err := s.ListSites(ctx)
	if err != nil {
		return err
	}
	for _, site := range sites {
		if uses(site.DiscoveryImage) {
			return fmt.Errorf("%w: image %s is the discovery image of site %s", ErrConflict, ref, site.Name)
		}
	}
	ps, err := s.compiledPolicies(ctx)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if uses(p.Image) {
			return fmt.Errorf("%w: image %s is used by policy %s", ErrConflict, ref, p.Name)
		}
	}
	return nil
}

// lockedObjects are named values (images, loaders) that hosts and sites
// use: each has a lock key that a new user changes (pin) and a removal
// compare-and-sets, so a removal and a new user on two coordinators cannot
// both win.
type lockedObjects struct{ kind, bucket, locks string }

var (
	imageObjects  = lockedObjects{"image", proto.BucketImages, bucketImageLocks}
	loaderObjects = lockedObjects{"loader", proto.BucketLoaders, bucketLoaderLocks}
)

// storeLocked writes a new or replaced object and marks its lock in use: a
// removal of an earlier one of this name may have left it "removed", and
// the new one is usable. Callers hold s.mu.
func (s *Service) storeLocked(ctx context.Context, o lockedObjects, name string, v any) error {
	if err := s.put(ctx, o.bucket, name, v); err != nil {
		return err
	}
	if _, err := s.kv[o.locks].Put(ctx, name, []byte(lockInUse)); err != nil {
		return fmt.Errorf("coordinator: %s lock %s: %w", o.kind, name, err)
	}
	return nil
}

// removeUnused removes an object unless unused says it has a user. The lock
// is read before unused looks: a user added on another coordinator after
// that changes the lock (pin), and the compare-and-set then fails instead of
// removing an object in use. Callers hold s.mu.
func (s *Service) removeUnused(ctx context.Context, o lockedObjects, name string, unused func(context.Context) error) error {
	if err := proto.ValidName(o.kind, name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return s.removeKeyUnused(ctx, o, name, name, unused)
}

// removeKeyUnused is removeUnused for any key (a revision key included),
// named what in its errors.
func (s *Service) removeKeyUnused(ctx context.Context, o lockedObjects, name, what string, unused func(context.Context) error) error {
	cur, err := s.read(ctx, o.bucket, name)
	if err != nil {
		return fmt.Errorf("%s %s: %w", o.kind, what, err)
	}
	lock, lockErr := s.read(ctx, o.locks, name)
	if lockErr != nil && !errors.Is(lockErr, ErrNotFound) {
		return lockErr
	}
	if err := unused(ctx); err != nil {
		return err
	}
	locks := s.kv[o.locks]
	var rev uint64
	if lockErr == nil {
		rev, err = locks.Update(ctx, name, []byte(lockRemoved), lock.rev)
	} else {
		rev, err = locks.Create(ctx, name, []byte(lockRemoved))
	}
	if err != nil {
		return fmt.Errorf("%w: %s %s got a new user concurrently; retry", ErrConflict, o.kind, what)
	}
	if err := s.kv[o.bucket].Delete(ctx, name, jetstream.LastRevision(cur.rev)); err != nil {
		_, _ = locks.Update(context.WithoutCancel(ctx), name, []byte(lockInUse), rev)
		return fmt.Errorf("%w: %s %s changed concurrently; retry", ErrConflict, o.kind, what)
	}
	return nil
}

// pinImage tells a removal of the image on any coordinator that the image
// has just got a user: called after the user (host or site) is written, it
// changes the image's lock entry with compare-and-set, and fails if the
// removal marked it first. Either the removal saw the user, or its own
// compare-and-set fails, or this one does: never both succeed.
//
// A pinned revision (NAME@N) pins both the image, whose removal takes every
// revision, and the revision's own lock, which its removal changes.
func (s *Service) pinImage(ctx context.Context, ref string) error {
	name, rev, err := proto.ParseImageRef(ref)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := s.pin(ctx, bucketImageLocks, "image", name); err != nil {
		return err
	}
	if rev == 0 {
		return nil
	}
	return s.pin(ctx, bucketImageLocks, "image revision", proto.ImageRevisionKey(name, rev))
}

// pin is pinImage for any lock bucket: imagelocks, loaderlocks.
func (s *Service) pin(ctx context.Context, bucket, kind, name string) error {
	kv := s.kv[bucket]
	for range 10 {
		e, err := s.read(ctx, bucket, name)
		switch {
		case errors.Is(err, ErrNotFound):
			_, err = kv.Create(ctx, name, []byte(lockInUse))
		case err != nil:
			return err
		case string(e.value) == lockRemoved:
			return fmt.Errorf("%s %s: %w (removed meanwhile)", kind, name, ErrNotFound)
		default:
			_, err = kv.Update(ctx, name, []byte(lockInUse), e.rev)
		}
		if err == nil {
			return nil
		}
		if !casConflict(err) {
			return fmt.Errorf("coordinator: %s lock %s: %w", kind, name, err)
		}
	}
	return fmt.Errorf("%w: %s %s is changing concurrently; retry", ErrConflict, kind, name)
}

// casConflict reports a failed KV create or compare-and-set: the key exists,
// or its revision moved. Replicated buckets report the latter with their own
// error code (10164), which ErrKeyExists does not match.
func casConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) ||
		(errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant))
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], "…")
	}
	return s
}
