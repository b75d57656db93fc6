package service

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/fleetboot/fleetboot/proto"
)

// AddLoader registers or replaces a boot loader whose files are already
// stored.
func (s *Service) AddLoader(ctx context.Context, in proto.Loader) (proto.Loader, error) {
	if err := validateLoader(in); err != nil {
		return proto.Loader{}, err
	}
	if s.check != nil {
		for _, f := range in.Files {
			if err := s.check.CheckArtifact(ctx, f.Artifact); err != nil {
				return proto.Loader{}, fmt.Errorf("%w: loader file %s: %v", ErrInvalid, f.Name, err)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in.V = proto.Version
	in.Updated = s.now().UTC()
	if err := s.storeLocked(ctx, loaderObjects, in.Name, in); err != nil {
		return proto.Loader{}, err
	}
	s.log.Info("loader saved", "loader", in.Name, "kind", in.Kind)
	return in, nil
}

// validateLoader checks a loader's name, kind and files: each file has a
// digest, a role its kind uses, a firmware, a name unique in the loader's
// directory, and the loader boots at least one firmware.
func validateLoader(in proto.Loader) error {
	if err := proto.ValidName("loader", in.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := proto.ValidLoaderKind(in.Kind); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	roles := map[string][]string{
		proto.LoaderIPXE:     {proto.RoleIPXE},
		proto.LoaderShimGrub: {proto.RoleShim, proto.RoleGrub, proto.RoleGrubModule},
		proto.LoaderGrub:     {proto.RoleGrub, proto.RoleGrubModule},
	}[in.Kind]
	seen := map[string]bool{}
	names := map[string]bool{}
	for _, f := range in.Files {
		if !slices.Contains(roles, f.Role) {
			return invalid("loader kind %s has no %q file (want %s)", in.Kind, f.Role, strings.Join(roles, ", "))
		}
		switch f.Firmware {
		case proto.FirmwareBIOS, proto.FirmwareX64, proto.FirmwareARM64:
		default:
			return invalid("invalid firmware %q of %s: want bios, x64 or arm64", f.Firmware, f.Name)
		}
		if f.Firmware == proto.FirmwareBIOS && in.Kind != proto.LoaderIPXE {
			return invalid("a %s loader cannot boot bios firmware; use an ipxe loader there", in.Kind)
		}
		if f.Role == proto.RoleGrubModule {
			// Any number of modules, each under GRUB's directory for
			// its firmware (x86_64-efi/http.mod), where GRUB asks.
			if err := proto.ValidGrubModuleName(f.Firmware, f.Name); err != nil {
				return fmt.Errorf("%w: %v", ErrInvalid, err)
			}
		} else {
			if seen[f.Firmware+"/"+f.Role] {
				return invalid("two %s %s files", f.Firmware, f.Role)
			}
			seen[f.Firmware+"/"+f.Role] = true
			if err := proto.ValidFileName(f.Name); err != nil {
				return fmt.Errorf("%w: %v", ErrInvalid, err)
			}
		}
		if names[f.Name] {
			return invalid("two files named %s", f.Name)
		}
		names[f.Name] = true
		if in.Kind == proto.LoaderShimGrub && f.Role == proto.RoleGrub && f.Name != proto.GrubName(f.Firmware) {
			// shim asks for this name from its own directory, nothing else.
			return invalid("shim fetches GRUB as %s, not %s", proto.GrubName(f.Firmware), f.Name)
		}
		if !hexRE.MatchString(f.SHA256) || f.Size <= 0 || f.Key == "" {
			return invalid("loader file %s needs a key, a size and a sha256", f.Name)
		}
	}
	if len(in.Firmwares()) == 0 {
		return invalid("loader %s boots no firmware: a %s loader needs %s for one of bios, x64 or arm64", in.Name, in.Kind, strings.Join(roles, " and "))
	}
	return nil
}

// ListLoaders returns all loaders.
func (s *Service) ListLoaders(ctx context.Context) ([]proto.Loader, error) {
	return list[proto.Loader](ctx, s, proto.BucketLoaders, ">")
}

// GetLoader returns one loader.
func (s *Service) GetLoader(ctx context.Context, name string) (proto.Loader, error) {
	if err := proto.ValidName("loader", name); err != nil {
		return proto.Loader{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var l proto.Loader
	if _, err := s.get(ctx, proto.BucketLoaders, name, &l); err != nil {
		return proto.Loader{}, fmt.Errorf("loader %s: %w", name, err)
	}
	return l, nil
}

// checkLoader tells whether loader name exists and boots one of the
// firmwares (any, when none is given) a user of it needs.
func (s *Service) checkLoader(ctx context.Context, name string, firmwares []string) error {
	l, err := s.GetLoader(ctx, name)
	if err != nil {
		return err
	}
	has := l.Firmwares()
	if len(firmwares) == 0 {
		return nil
	}
	for _, fw := range firmwares {
		if slices.Contains(has, fw) {
			return nil
		}
	}
	return invalid("loader %s boots %s firmware, not %s", name, strings.Join(has, ", "), strings.Join(firmwares, " or "))
}

// RemoveLoader deletes a loader no site or host uses. Like RemoveImage, it
// marks the loader's lock with compare-and-set, so a user added meanwhile
// on another coordinator (pin) makes one of the two fail.
func (s *Service) RemoveLoader(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeUnused(ctx, loaderObjects, name, func(ctx context.Context) error {
		sites, err := s.ListSites(ctx)
		if err != nil {
			return err
		}
		for _, site := range sites {
			if site.Loader == name {
				return fmt.Errorf("%w: loader %s is the loader of site %s", ErrConflict, name, site.Name)
			}
		}
		hosts, err := s.listHosts(ctx, "")
		if err != nil {
			return err
		}
		var users []string
		for _, h := range hosts {
			if h.Loader == name {
				users = append(users, h.MAC)
			}
		}
		slices.Sort(users)
		if len(users) > 0 {
			return fmt.Errorf("%w: loader %s is used by %d host(s) (%s); set them another loader first", ErrConflict, name, len(users), strings.Join(first(users, 3), ", "))
		}
		return nil
	})
}
