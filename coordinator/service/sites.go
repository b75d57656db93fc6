package service

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"

	"github.com/fleetboot/fleetboot/proto"
)

// AddSite creates or replaces a site.
func (s *Service) AddSite(ctx context.Context, in proto.Site) (proto.Site, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := proto.ValidSiteName(in.Name); err != nil {
		return proto.Site{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := validateSite(&in); err != nil {
		return proto.Site{}, err
	}
	var needs []string // firmwares the site's loader must boot
	if in.DiscoveryImage != "" {
		im, err := s.getImage(ctx, in.DiscoveryImage)
		if err != nil {
			return proto.Site{}, fmt.Errorf("discovery image: %w", err)
		}
		needs = proto.FirmwareOfArch(im.Arch)
	}
	if in.Loader != "" {
		if err := s.checkLoader(ctx, in.Loader, needs); err != nil {
			return proto.Site{}, err
		}
	}
	// Existing reservations must stay inside the new networks.
	hosts, err := s.listHosts(ctx, in.Name)
	if err != nil {
		return proto.Site{}, err
	}
	for _, h := range hosts {
		if h.IP == "" {
			continue
		}
		ip, _ := netip.ParseAddr(h.IP)
		if _, ok := networkFor(in, ip); !ok {
			return proto.Site{}, invalid("host %s has reservation %s outside the site's new subnets", h.MAC, h.IP)
		}
	}
	in.V = proto.Version
	in.Updated = s.now().UTC()
	prev, prevErr := s.read(ctx, proto.BucketSites, in.Name)
	if prevErr != nil && !errors.Is(prevErr, ErrNotFound) {
		return proto.Site{}, prevErr
	}
	if err := s.put(ctx, proto.BucketSites, in.Name, in); err != nil {
		return proto.Site{}, err
	}
	if err := s.pinSiteUses(ctx, in); err != nil {
		// Put the site back as it was: the image or loader went away meanwhile.
		kv, bg := s.kv[proto.BucketSites], context.WithoutCancel(ctx)
		if prevErr == nil {
			_, _ = kv.Put(bg, in.Name, prev.value)
		} else {
			_ = kv.Delete(bg, in.Name)
		}
		return proto.Site{}, err
	}
	s.log.Info("site saved", "site", in.Name)
	return in, nil
}

// pinSiteUses pins the site's discovery image and loader (see pinImage).
func (s *Service) pinSiteUses(ctx context.Context, in proto.Site) error {
	if in.DiscoveryImage != "" {
		if err := s.pinImage(ctx, in.DiscoveryImage); err != nil {
			return fmt.Errorf("discovery image: %w", err)
		}
	}
	if in.Loader != "" {
		if err := s.pin(ctx, bucketLoaderLocks, "loader", in.Loader); err != nil {
			return err
		}
	}
	return nil
}

func validateSite(in *proto.Site) error {
	if in.DHCP == "" {
		in.DHCP = proto.DHCPFull
	}
	switch in.DHCP {
	case proto.DHCPFull, proto.DHCPReservations, proto.DHCPProxy, proto.DHCPOff:
	default:
		return invalid("invalid dhcp mode %q: want full, reservations, proxy or off", in.DHCP)
	}
	if in.Unknown == "" {
		in.Unknown = proto.UnknownIgnore
	}
	switch in.Unknown {
	case proto.UnknownIgnore, proto.UnknownExit:
	case proto.UnknownDiscover:
		if in.DiscoveryImage == "" {
			return invalid("unknown-host policy discover needs a discovery image")
		}
	default:
		return invalid("invalid unknown-host policy %q: want ignore, discover or exit", in.Unknown)
	}
	if len(in.Networks) == 0 {
		return invalid("site %s needs at least one subnet", in.Name)
	}
	var prefixes []netip.Prefix
	for i := range in.Networks {
		n := &in.Networks[i]
		p, err := netip.ParsePrefix(n.Subnet)
		if err != nil || !p.Addr().Is4() {
			return invalid("invalid subnet %q: want an IPv4 CIDR such as 10.0.0.0/24", n.Subnet)
		}
		if p.Masked() != p {
			return invalid("invalid subnet %q: host bits set (did you mean %s?)", n.Subnet, p.Masked())
		}
		if p.Bits() > 30 {
			return invalid("subnet %s is too small for DHCP", p)
		}
		for _, q := range prefixes {
			if q.Overlaps(p) {
				return invalid("subnets %s and %s overlap", q, p)
			}
		}
		prefixes = append(prefixes, p)
		n.Subnet = p.String()
		if (n.RangeStart == "") != (n.RangeEnd == "") {
			return invalid("range of %s needs both a start and an end", p)
		}
		if n.RangeStart != "" {
			a, err1 := netip.ParseAddr(n.RangeStart)
			b, err2 := netip.ParseAddr(n.RangeEnd)
			if err1 != nil || err2 != nil {
				return invalid("invalid range %s-%s: want two IPv4 addresses", n.RangeStart, n.RangeEnd)
			}
			if !usable(p, a) || !usable(p, b) {
				return invalid("range %s-%s is not inside subnet %s (network and broadcast addresses excluded)", a, b, p)
			}
			if b.Less(a) {
				return invalid("range %s-%s ends before it starts", a, b)
			}
		}
		if n.Router != "" {
			r, err := netip.ParseAddr(n.Router)
			if err != nil || !usable(p, r) {
				return invalid("router %q is not an address inside %s", n.Router, p)
			}
		}
		for _, d := range n.DNS {
			if a, err := netip.ParseAddr(d); err != nil || !a.Is4() {
				return invalid("invalid DNS server %q: want an IPv4 address", d)
			}
		}
		if n.Domain != "" && !domainRE.MatchString(n.Domain) {
			return invalid("invalid domain %q", n.Domain)
		}
		if n.LeaseSeconds < 0 {
			return invalid("negative lease time")
		}
		if n.LeaseSeconds == 0 {
			n.LeaseSeconds = 3600
		}
	}
	return nil
}

var domainRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,62}\.)*[a-zA-Z0-9-]{1,63}$`)

// usable reports whether a is a host address of p (not network, not broadcast).
func usable(p netip.Prefix, a netip.Addr) bool {
	if !a.Is4() || !p.Contains(a) || a == p.Addr() {
		return false
	}
	return a != broadcast(p)
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := 32 - p.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= (1 << host) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func networkFor(site proto.Site, ip netip.Addr) (proto.Network, bool) {
	for _, n := range site.Networks {
		p, err := netip.ParsePrefix(n.Subnet)
		if err == nil && usable(p, ip) {
			return n, true
		}
	}
	return proto.Network{}, false
}

// ListSites returns all sites.
func (s *Service) ListSites(ctx context.Context) ([]proto.Site, error) {
	return list[proto.Site](ctx, s, proto.BucketSites, ">")
}

// GetSite returns one site.
func (s *Service) GetSite(ctx context.Context, name string) (proto.Site, error) {
	if err := proto.ValidSiteName(name); err != nil {
		return proto.Site{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var site proto.Site
	if _, err := s.get(ctx, proto.BucketSites, name, &site); err != nil {
		return proto.Site{}, fmt.Errorf("site %s: %w", name, err)
	}
	return site, nil
}

// RemoveSite deletes a site that has no hosts.
func (s *Service) RemoveSite(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.GetSite(ctx, name); err != nil {
		return err
	}
	hosts, err := s.listHosts(ctx, name)
	if err != nil {
		return err
	}
	if len(hosts) > 0 {
		return fmt.Errorf("%w: site %s still has %d host(s); remove them first", ErrConflict, name, len(hosts))
	}
	return s.kv[proto.BucketSites].Delete(ctx, name)
}
