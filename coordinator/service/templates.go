package service

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/installtmpl"
)

// bucketTemplateLocks does for templates what bucketImageLocks does for images.
const bucketTemplateLocks = "templatelocks"

var templateObjects = lockedObjects{"template", proto.BucketTemplates, bucketTemplateLocks}

// AddTemplate stores (or replaces) an install template that parses.
func (s *Service) AddTemplate(ctx context.Context, t proto.Template) (proto.Template, error) {
	if err := proto.ValidName("template", t.Name); err != nil {
		return proto.Template{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := installtmpl.Parse(t.Name, t.Kind, t.Text); err != nil {
		return proto.Template{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	t.V, t.Updated = proto.Version, s.now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.storeLocked(ctx, templateObjects, t.Name, t); err != nil {
		return proto.Template{}, err
	}
	s.log.Info("template saved", "template", t.Name, "kind", t.Kind)
	return t, nil
}

// ListTemplates returns every template.
func (s *Service) ListTemplates(ctx context.Context) ([]proto.Template, error) {
	return list[proto.Template](ctx, s, proto.BucketTemplates, ">")
}

// GetTemplate returns one template.
func (s *Service) GetTemplate(ctx context.Context, name string) (proto.Template, error) {
	if err := proto.ValidName("template", name); err != nil {
		return proto.Template{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var t proto.Template
	if _, err := s.get(ctx, proto.BucketTemplates, name, &t); err != nil {
		return proto.Template{}, fmt.Errorf("template %s: %w", name, err)
	}
	return t, nil
}

// checkTemplate refuses a template that does not exist.
func (s *Service) checkTemplate(ctx context.Context, name string) error {
	_, err := s.GetTemplate(ctx, name)
	return err
}

// RemoveTemplate deletes a template no host or policy uses.
func (s *Service) RemoveTemplate(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeUnused(ctx, templateObjects, name, func(ctx context.Context) error {
		var users []string
		err := scan(ctx, s, proto.BucketHosts, ">", func(_ string, _ uint64, h proto.Host) error {
			if h.Template == name {
				users = append(users, h.MAC)
			}
			return nil
		})
		if err != nil {
			return err
		}
		slices.Sort(users)
		if len(users) > 0 {
			return fmt.Errorf("%w: template %s is used by %d host(s) (%s); set them another template first", ErrConflict, name, len(users), strings.Join(first(users, 3), ", "))
		}
		ps, err := s.compiledPolicies(ctx)
		if err != nil {
			return err
		}
		for _, p := range ps {
			if p.Template == name {
				return fmt.Errorf("%w: template %s is used by policy %s", ErrConflict, name, p.Name)
			}
		}
		return nil
	})
}
