// Package service holds the coordinator's rules: it validates every change to
// sites, images and hosts and writes the JetStream KV buckets, which it is the
// only writer of. A rejected change writes nothing.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetboot/fleetboot/proto"
)

// Sentinel errors callers act on (the API maps them to reply codes).
var (
	ErrInvalid  = errors.New("invalid")
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// ArtifactChecker confirms an uploaded artifact is really in the store with
// the recorded size; nil skips the check.
type ArtifactChecker interface {
	CheckArtifact(ctx context.Context, a proto.Artifact) error
}

// Config holds the service's dependencies.
type Config struct {
	JS       jetstream.JetStream
	Replicas int // KV replicas; 1 for a single server, 3 on a cluster
	Checker  ArtifactChecker
	Logger   *slog.Logger
	Now      func() time.Time
}

// Service validates and applies desired-state changes.
type Service struct {
	// mu serialises this coordinator's writes; KV create/compare-and-set on
	// the index buckets keeps the uniqueness rules safe across coordinators.
	mu    sync.Mutex
	kv    map[string]jetstream.KeyValue
	js    jetstream.JetStream
	nc    *nats.Conn // leader reads (see read)
	check ArtifactChecker
	log   *slog.Logger
	now   func() time.Time
}

// New creates (or binds to) the KV buckets.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	s := &Service{kv: map[string]jetstream.KeyValue{}, js: cfg.JS, nc: cfg.JS.Conn(), check: cfg.Checker, log: cfg.Logger, now: cfg.Now}
	for _, b := range []string{proto.BucketSites, proto.BucketImages, proto.BucketHosts, proto.BucketMACs, bucketIPs, proto.BucketEdges, bucketFacts, bucketImageLocks} {
		kv, err := cfg.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:   b,
			History:  5,
			Replicas: cfg.Replicas,
			Storage:  jetstream.FileStorage,
		})
		if err != nil {
			return nil, fmt.Errorf("coordinator: create KV bucket %s: %w", b, err)
		}
		s.kv[b] = kv
	}
	return s, nil
}

// bucketIPs indexes reservations: key <site>.<ip> -> primary MAC key. It is
// the coordinator's own; edges never read it.
const bucketIPs = "ips"

// bucketImageLocks holds one entry per image that a removal and a new user
// of the image both change with compare-and-set (see pinImage), so two
// coordinators cannot remove an image and assign it at the same time.
const bucketImageLocks = "imagelocks"

const (
	lockInUse   = "in-use"
	lockRemoved = "removed"
)

// claimGrace is how long an index entry whose host does not (yet) carry it
// is taken for a claim in flight on another coordinator rather than for a
// leftover: longer than any request runs.
const claimGrace = time.Minute

// bucketFacts keeps the last facts an installer reported per MAC (12 hex digits).
const bucketFacts = "facts"

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// ---- sites ----

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
	if in.DiscoveryImage != "" {
		if _, err := s.getImage(ctx, in.DiscoveryImage); err != nil {
			return proto.Site{}, fmt.Errorf("discovery image: %w", err)
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
	if in.DiscoveryImage != "" {
		if err := s.pinImage(ctx, in.DiscoveryImage); err != nil {
			// Put the site back as it was: the image went away meanwhile.
			kv, bg := s.kv[proto.BucketSites], context.WithoutCancel(ctx)
			if prevErr == nil {
				_, _ = kv.Put(bg, in.Name, prev.value)
			} else {
				_ = kv.Delete(bg, in.Name)
			}
			return proto.Site{}, fmt.Errorf("discovery image: %w", err)
		}
	}
	s.log.Info("site saved", "site", in.Name)
	return in, nil
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

// ---- images ----

var archs = []string{"x86_64", "arm64"}

var hexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// AddImage registers or replaces an image whose artifacts are already stored.
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
		if roles[a.Role] {
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
	in.V = proto.Version
	in.Updated = s.now().UTC()
	if err := s.put(ctx, proto.BucketImages, in.Name, in); err != nil {
		return proto.Image{}, err
	}
	// A removal of an earlier image of this name may have left its lock
	// "removed"; the new image is usable.
	if _, err := s.kv[bucketImageLocks].Put(ctx, in.Name, []byte(lockInUse)); err != nil {
		return proto.Image{}, fmt.Errorf("coordinator: image lock %s: %w", in.Name, err)
	}
	s.log.Info("image saved", "image", in.Name)
	return in, nil
}

// ListImages returns all images.
func (s *Service) ListImages(ctx context.Context) ([]proto.Image, error) {
	return list[proto.Image](ctx, s, proto.BucketImages, ">")
}

// GetImage returns one image.
func (s *Service) GetImage(ctx context.Context, name string) (proto.Image, error) {
	if err := proto.ValidName("image", name); err != nil {
		return proto.Image{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return s.getImage(ctx, name)
}

func (s *Service) getImage(ctx context.Context, name string) (proto.Image, error) {
	var im proto.Image
	if _, err := s.get(ctx, proto.BucketImages, name, &im); err != nil {
		return proto.Image{}, fmt.Errorf("image %s: %w", name, err)
	}
	return im, nil
}

// RemoveImage deletes an image no host or site uses.
func (s *Service) RemoveImage(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := proto.ValidName("image", name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	img, err := s.read(ctx, proto.BucketImages, name)
	if err != nil {
		return fmt.Errorf("image %s: %w", name, err)
	}
	// Read the lock before looking for users: a user added on another
	// coordinator after this point changes it (pinImage), and the
	// compare-and-set below then fails instead of removing a used image.
	lock, lockErr := s.read(ctx, bucketImageLocks, name)
	if lockErr != nil && !errors.Is(lockErr, ErrNotFound) {
		return lockErr
	}
	hosts, err := s.listHosts(ctx, "")
	if err != nil {
		return err
	}
	var users []string
	for _, h := range hosts {
		if h.Image == name {
			users = append(users, h.MAC)
		}
	}
	slices.Sort(users)
	if len(users) > 0 {
		return fmt.Errorf("%w: image %s is used by %d host(s) (%s); assign them another image first", ErrConflict, name, len(users), strings.Join(first(users, 3), ", "))
	}
	sites, err := s.ListSites(ctx)
	if err != nil {
		return err
	}
	for _, site := range sites {
		if site.DiscoveryImage == name {
			return fmt.Errorf("%w: image %s is the discovery image of site %s", ErrConflict, name, site.Name)
		}
	}
	locks := s.kv[bucketImageLocks]
	var rev uint64
	if lockErr == nil {
		rev, err = locks.Update(ctx, name, []byte(lockRemoved), lock.rev)
	} else {
		rev, err = locks.Create(ctx, name, []byte(lockRemoved))
	}
	if err != nil {
		return fmt.Errorf("%w: image %s got a new user concurrently; retry", ErrConflict, name)
	}
	if err := s.kv[proto.BucketImages].Delete(ctx, name, jetstream.LastRevision(img.rev)); err != nil {
		_, _ = locks.Update(context.WithoutCancel(ctx), name, []byte(lockInUse), rev)
		return fmt.Errorf("%w: image %s changed concurrently; retry", ErrConflict, name)
	}
	return nil
}

// pinImage tells a removal of the image on any coordinator that the image
// has just got a user: called after the user (host or site) is written, it
// changes the image's lock entry with compare-and-set, and fails if the
// removal marked it first. Either the removal saw the user, or its own
// compare-and-set fails, or this one does: never both succeed.
func (s *Service) pinImage(ctx context.Context, name string) error {
	kv := s.kv[bucketImageLocks]
	for range 10 {
		e, err := s.read(ctx, bucketImageLocks, name)
		switch {
		case errors.Is(err, ErrNotFound):
			_, err = kv.Create(ctx, name, []byte(lockInUse))
		case err != nil:
			return err
		case string(e.value) == lockRemoved:
			return fmt.Errorf("image %s: %w (removed meanwhile)", name, ErrNotFound)
		default:
			_, err = kv.Update(ctx, name, []byte(lockInUse), e.rev)
		}
		if err == nil {
			return nil
		}
		if !casConflict(err) {
			return fmt.Errorf("coordinator: image lock %s: %w", name, err)
		}
	}
	return fmt.Errorf("%w: image %s is changing concurrently; retry", ErrConflict, name)
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

// ---- hosts ----

// SetHost creates or updates a host.
func (s *Service) SetHost(ctx context.Context, req proto.HostSetRequest) (proto.Host, error) {
	mac, err := proto.ParseMAC(req.MAC)
	if err != nil {
		return proto.Host{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	cur, curRev, err := s.hostByMAC(ctx, mac)
	exists := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return proto.Host{}, err
	}
	if exists && cur.MAC != mac {
		return proto.Host{}, fmt.Errorf("%w: %s is an extra MAC of host %s; address the host by its primary MAC", ErrConflict, mac, cur.MAC)
	}
	h := cur
	if !exists {
		h = proto.Host{MAC: mac, State: proto.StateBoot}
	}
	if req.Site != nil {
		h.Site = *req.Site
	}
	if h.Site == "" {
		sites, err := s.ListSites(ctx)
		if err != nil {
			return proto.Host{}, err
		}
		if len(sites) != 1 {
			return proto.Host{}, invalid("host %s needs --site (there are %d sites)", mac, len(sites))
		}
		h.Site = sites[0].Name
	}
	site, err := s.GetSite(ctx, h.Site)
	if err != nil {
		return proto.Host{}, err
	}
	if req.Image != nil {
		h.Image = *req.Image
	}
	if h.Image != "" {
		if _, err := s.getImage(ctx, h.Image); err != nil {
			return proto.Host{}, err
		}
	}
	if req.Hostname != nil {
		h.Hostname = *req.Hostname
	}
	if h.Hostname != "" {
		if err := proto.ValidHostname(h.Hostname); err != nil {
			return proto.Host{}, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if req.State != nil {
		h.State = *req.State
	}
	if h.State != proto.StateBoot && h.State != proto.StateLocal {
		return proto.Host{}, invalid("invalid state %q: want boot or local", h.State)
	}
	if req.Once != nil {
		h.Once = *req.Once
	}
	if len(req.Vars) > 0 || len(req.UnsetVars) > 0 {
		vars := map[string]string{}
		for k, v := range h.Vars {
			vars[k] = v
		}
		for _, k := range req.UnsetVars {
			delete(vars, k)
		}
		for k, v := range req.Vars {
			if err := proto.ValidVar(k, v); err != nil {
				return proto.Host{}, fmt.Errorf("%w: %v", ErrInvalid, err)
			}
			vars[k] = v
		}
		h.Vars = vars
		if len(vars) == 0 {
			h.Vars = nil
		}
	}
	if req.ExtraMACs != nil {
		h.ExtraMACs = nil
		for _, m := range *req.ExtraMACs {
			c, err := proto.ParseMAC(m)
			if err != nil {
				return proto.Host{}, fmt.Errorf("%w: extra MAC: %v", ErrInvalid, err)
			}
			if c == mac || slices.Contains(h.ExtraMACs, c) {
				continue
			}
			h.ExtraMACs = append(h.ExtraMACs, c)
		}
	}
	if req.IP != nil {
		h.IP = *req.IP
	}
	if h.IP != "" {
		ip, err := netip.ParseAddr(h.IP)
		if err != nil || !ip.Is4() {
			return proto.Host{}, invalid("invalid IP address %q", h.IP)
		}
		if _, ok := networkFor(site, ip); !ok {
			return proto.Host{}, invalid("IP %s is not inside any subnet of site %s (%s)", ip, site.Name, subnets(site))
		}
		h.IP = ip.String()
	}

	key, _ := proto.HostKey(h.Site, mac)
	oldKey := ""
	if exists {
		oldKey, _ = proto.HostKey(cur.Site, cur.MAC)
	}
	// Claim the indexes first (MACs across sites, IP within the site); roll
	// them back if a later step fails, so a rejected change writes nothing.
	var undo []func()
	rollback := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	for _, m := range h.MACs() {
		u, err := s.claim(ctx, proto.BucketMACs, mustMACKey(m), key, oldKey, fmt.Sprintf("MAC %s", m))
		if err != nil {
			rollback()
			return proto.Host{}, err
		}
		undo = append(undo, u...)
	}
	if h.IP != "" {
		u, err := s.claim(ctx, bucketIPs, h.Site+"."+h.IP, key, oldKey, fmt.Sprintf("IP %s at site %s", h.IP, h.Site))
		if err != nil {
			rollback()
			return proto.Host{}, err
		}
		undo = append(undo, u...)
	}
	h.V = proto.Version
	h.Updated = s.now().UTC()
	data, _ := json.Marshal(h)
	if exists && oldKey == key {
		_, err = s.kv[proto.BucketHosts].Update(ctx, key, data, curRev)
	} else {
		_, err = s.kv[proto.BucketHosts].Create(ctx, key, data)
	}
	if err != nil {
		rollback()
		if casConflict(err) {
			return proto.Host{}, fmt.Errorf("%w: host %s changed concurrently; retry", ErrConflict, mac)
		}
		return proto.Host{}, fmt.Errorf("coordinator: write host %s: %w", mac, err)
	}
	if h.Image != "" && (!exists || cur.Image != h.Image) {
		if err := s.pinImage(ctx, h.Image); err != nil {
			bg := context.WithoutCancel(ctx)
			if exists && oldKey == key {
				old, _ := json.Marshal(cur)
				_, _ = s.kv[proto.BucketHosts].Put(bg, key, old)
			} else {
				_ = s.kv[proto.BucketHosts].Delete(bg, key)
			}
			rollback()
			return proto.Host{}, err
		}
	}
	// The change is in; release what the old version held and no longer needs.
	if exists {
		if oldKey != key {
			_ = s.kv[proto.BucketHosts].Delete(ctx, oldKey)
		}
		for _, m := range cur.MACs() {
			if !slices.Contains(h.MACs(), m) {
				s.release(ctx, proto.BucketMACs, mustMACKey(m), key, oldKey)
			}
		}
		if cur.IP != "" && (cur.IP != h.IP || cur.Site != h.Site) {
			s.release(ctx, bucketIPs, cur.Site+"."+cur.IP, key, oldKey)
		}
	}
	s.log.Info("host saved", "mac", mac, "site", h.Site, "image", h.Image, "state", h.State)
	return h, nil
}

func subnets(site proto.Site) string {
	var out []string
	for _, n := range site.Networks {
		out = append(out, n.Subnet)
	}
	return strings.Join(out, ", ")
}

func mustMACKey(m string) string {
	k, _ := proto.MACKey(m)
	return k
}

// claim makes index key k point at owner, failing if a host other than owner
// or prev (the host's key before this change) holds it. It returns how to undo
// what it changed.
func (s *Service) claim(ctx context.Context, bucket, k, owner, prev, what string) ([]func(), error) {
	kv := s.kv[bucket]
	e, err := s.read(ctx, bucket, k)
	if err == nil {
		if string(e.value) == owner {
			return nil, nil
		}
		holder := string(e.value)
		if hs, hm, ok := proto.SplitHostKey(holder); ok {
			holder = fmt.Sprintf("host %s at site %s", hm, hs)
		}
		// The host's own entry (when it moves site) or a stale one (its host
		// moved or vanished) may be taken over. A young entry whose host
		// does not carry it is a claim in flight on another coordinator
		// (index first, host after), not a leftover.
		if string(e.value) != prev && (time.Since(e.created) < claimGrace || !s.indexStale(ctx, bucket, k, string(e.value))) {
			return nil, fmt.Errorf("%w: %s is already used by %s", ErrConflict, what, holder)
		}
		if _, err := kv.Update(ctx, k, []byte(owner), e.rev); err != nil {
			return nil, fmt.Errorf("%w: %s changed concurrently; retry", ErrConflict, what)
		}
		return []func(){func() { _, _ = kv.Put(context.WithoutCancel(ctx), k, e.value) }}, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("coordinator: read index %s: %w", bucket, err)
	}
	if _, err := kv.Create(ctx, k, []byte(owner)); err != nil {
		if casConflict(err) {
			return nil, fmt.Errorf("%w: %s was just taken by another request; retry", ErrConflict, what)
		}
		return nil, fmt.Errorf("coordinator: write index %s: %w", bucket, err)
	}
	return []func(){func() { _ = kv.Delete(context.WithoutCancel(ctx), k) }}, nil
}

// indexStale reports whether an index entry no longer matches its host.
func (s *Service) indexStale(ctx context.Context, bucket, k, hostKey string) bool {
	var h proto.Host
	if _, err := s.get(ctx, proto.BucketHosts, hostKey, &h); err != nil {
		return errors.Is(err, ErrNotFound)
	}
	switch bucket {
	case proto.BucketMACs:
		for _, m := range h.MACs() {
			if mustMACKey(m) == k {
				return false
			}
		}
		return true
	case bucketIPs:
		return h.Site+"."+h.IP != k
	}
	return false
}

// release deletes index key k if it still points at one of owners.
func (s *Service) release(ctx context.Context, bucket, k string, owners ...string) {
	e, err := s.read(ctx, bucket, k)
	if err != nil {
		return
	}
	if slices.Contains(owners, string(e.value)) {
		_ = s.kv[bucket].Delete(ctx, k, jetstream.LastRevision(e.rev))
	}
}

// hostByMAC finds a host by any of its MACs.
func (s *Service) hostByMAC(ctx context.Context, mac string) (proto.Host, uint64, error) {
	e, err := s.read(ctx, proto.BucketMACs, mustMACKey(mac))
	if errors.Is(err, ErrNotFound) {
		return proto.Host{}, 0, fmt.Errorf("host %s: %w", mac, ErrNotFound)
	}
	if err != nil {
		return proto.Host{}, 0, err
	}
	var h proto.Host
	rev, err := s.get(ctx, proto.BucketHosts, string(e.value), &h)
	if err != nil {
		return proto.Host{}, 0, fmt.Errorf("host %s: %w", mac, err)
	}
	return h, rev, nil
}

// GetHost returns a host by any of its MACs.
func (s *Service) GetHost(ctx context.Context, mac string) (proto.Host, error) {
	m, err := proto.ParseMAC(mac)
	if err != nil {
		return proto.Host{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	h, _, err := s.hostByMAC(ctx, m)
	return h, err
}

// ListHosts returns the hosts of one site, or of all sites when site is "".
func (s *Service) ListHosts(ctx context.Context, site string) ([]proto.Host, error) {
	if site != "" {
		if _, err := s.GetSite(ctx, site); err != nil {
			return nil, err
		}
	}
	return s.listHosts(ctx, site)
}

func (s *Service) listHosts(ctx context.Context, site string) ([]proto.Host, error) {
	filter := ">"
	if site != "" {
		filter = site + ".>"
	}
	return list[proto.Host](ctx, s, proto.BucketHosts, filter)
}

// RemoveHost deletes a host and its index entries.
func (s *Service) RemoveHost(ctx context.Context, mac string) error {
	m, err := proto.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h, rev, err := s.hostByMAC(ctx, m)
	if err != nil {
		return err
	}
	key, _ := proto.HostKey(h.Site, h.MAC)
	if err := s.kv[proto.BucketHosts].Delete(ctx, key, jetstream.LastRevision(rev)); err != nil {
		return fmt.Errorf("coordinator: delete host %s: %w", h.MAC, err)
	}
	for _, x := range h.MACs() {
		s.release(ctx, proto.BucketMACs, mustMACKey(x), key)
	}
	if h.IP != "" {
		s.release(ctx, bucketIPs, h.Site+"."+h.IP, key)
	}
	return nil
}

// InstallDone records an installer's "done": a host set with --once switches
// to local-disk boot, so its next boot does not reinstall it.
func (s *Service) InstallDone(ctx context.Context, mac string) (proto.Host, error) {
	h, err := s.GetHost(ctx, mac)
	if err != nil {
		return proto.Host{}, err
	}
	if !h.Once {
		return h, nil
	}
	return s.SetHost(ctx, proto.HostSetRequest{MAC: h.MAC, State: ptrTo(proto.StateLocal), Once: ptrTo(false)})
}

// RecordFacts keeps what an installer reported about a known host.
func (s *Service) RecordFacts(ctx context.Context, mac string, facts json.RawMessage) error {
	h, err := s.GetHost(ctx, mac)
	if err != nil {
		return err
	}
	if !json.Valid(facts) {
		return invalid("facts are not valid JSON")
	}
	if len(facts) > 64<<10 {
		return invalid("facts larger than 64 KiB")
	}
	_, err = s.kv[bucketFacts].Put(ctx, mustMACKey(h.MAC), facts)
	return err
}

// Facts returns the last facts reported for a host, or nil.
func (s *Service) Facts(ctx context.Context, mac string) (json.RawMessage, error) {
	h, err := s.GetHost(ctx, mac)
	if err != nil {
		return nil, err
	}
	e, err := s.kv[bucketFacts].Get(ctx, mustMACKey(h.MAC))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return e.Value(), nil
}

func ptrTo[T any](v T) *T { return &v }

// ---- edges ----

// RecordStatus stores an edge's heartbeat.
func (s *Service) RecordStatus(ctx context.Context, st proto.EdgeStatus) error {
	if err := proto.ValidEdgeName(st.Name); err != nil {
		return err
	}
	return s.put(ctx, proto.BucketEdges, st.Name, st)
}

// ListEdges returns every edge's last heartbeat, flagged stale when it is
// older than three intervals.
func (s *Service) ListEdges(ctx context.Context) ([]proto.EdgeView, error) {
	sts, err := list[proto.EdgeStatus](ctx, s, proto.BucketEdges, ">")
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := make([]proto.EdgeView, 0, len(sts))
	for _, st := range sts {
		iv := time.Duration(st.IntervalSecs) * time.Second
		if iv <= 0 {
			iv = 5 * time.Second
		}
		out = append(out, proto.EdgeView{EdgeStatus: st, Stale: now.Sub(st.Time) > 3*iv})
	}
	return out, nil
}

// ---- KV helpers ----

func (s *Service) put(ctx context.Context, bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("coordinator: encode %s/%s: %w", bucket, key, err)
	}
	if _, err := s.kv[bucket].Put(ctx, key, data); err != nil {
		return fmt.Errorf("coordinator: write %s/%s: %w", bucket, key, err)
	}
	return nil
}

func (s *Service) get(ctx context.Context, bucket, key string, v any) (uint64, error) {
	e, err := s.read(ctx, bucket, key)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(e.value, v); err != nil {
		return 0, fmt.Errorf("coordinator: decode %s/%s: %w", bucket, key, err)
	}
	return e.rev, nil
}

// list reads every value of a bucket whose key matches filter, in key order.
// The keys come from STREAM.INFO, which the stream leader answers, and the
// values from read: both see every acknowledged write.
func list[T any](ctx context.Context, s *Service, bucket, filter string) ([]T, error) {
	st, err := s.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("coordinator: list %s: %w", bucket, err)
	}
	pre := "$KV." + bucket + "."
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(pre+filter))
	if err != nil {
		return nil, fmt.Errorf("coordinator: list %s: %w", bucket, err)
	}
	keys := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		keys = append(keys, strings.TrimPrefix(subj, pre))
	}
	slices.Sort(keys)
	out := make([]T, 0, len(keys))
	for _, k := range keys {
		e, err := s.read(ctx, bucket, k)
		if errors.Is(err, ErrNotFound) {
			continue // deleted (a delete marker keeps its subject)
		}
		if err != nil {
			return nil, err
		}
		var v T
		if err := json.Unmarshal(e.value, &v); err != nil {
			return nil, fmt.Errorf("coordinator: decode %s/%s: %w", bucket, k, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// entry is one KV value as the stream leader has it.
type entry struct {
	value   []byte
	rev     uint64
	created time.Time
}

// read returns the latest value of key from the stream leader. On a
// replicated bucket a KV Get is a direct get that any replica may answer, and
// a replica may not have applied a write another coordinator has just had
// acknowledged; the rules must not decide on such a read. STREAM.MSG.GET is
// answered by the leader only.
func (s *Service) read(ctx context.Context, bucket, key string) (entry, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	m, err := s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return entry{}, fmt.Errorf("coordinator: read %s/%s: %w", bucket, key, err)
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Seq    uint64    `json:"seq"`
			Header []byte    `json:"hdrs"`
			Data   []byte    `json:"data"`
			Time   time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return entry{}, fmt.Errorf("coordinator: read %s/%s: %w", bucket, key, err)
	}
	if resp.Error != nil {
		if jetstream.ErrorCode(resp.Error.ErrCode) == jetstream.JSErrCodeMessageNotFound {
			return entry{}, ErrNotFound
		}
		return entry{}, fmt.Errorf("coordinator: read %s/%s: %s", bucket, key, resp.Error.Description)
	}
	if resp.Message == nil {
		return entry{}, fmt.Errorf("coordinator: read %s/%s: empty reply", bucket, key)
	}
	if op := kvOperation(resp.Message.Header); op == "DEL" || op == "PURGE" {
		return entry{}, ErrNotFound
	}
	return entry{value: resp.Message.Data, rev: resp.Message.Seq, created: resp.Message.Time}, nil
}

// kvOperation is the KV-Operation header of a stored message ("" for a put).
func kvOperation(hdr []byte) string {
	for _, line := range strings.Split(string(hdr), "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "KV-Operation") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
