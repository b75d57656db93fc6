package dhcp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/fleetboot/fleetboot/proto"
)

const defaultLease = time.Hour

// network is a site network with its addresses parsed once per request.
type network struct {
	proto.Network
	pool
	router       netip.Addr
	leaseSeconds int
}

// pickNetwork chooses the site network for a request: the one containing the
// relay's address, or, for a client on our own segment, the edge's address.
// It costs the same at a site of ten hosts as at one of 100 000: other
// hosts' reservations are looked up per address (Policy.Reservation), never
// listed.
func (h *Handler) pickNetwork(r *request) (*network, error) {
	key := h.serverIP
	if r.m.Relayed() {
		key = r.m.GIAddr
	}
	for _, n := range r.site.Networks {
		p, err := netip.ParsePrefix(n.Subnet)
		if err != nil || !p.Addr().Is4() {
			continue // the coordinator validates subnets; skip rather than fail every client
		}
		p = p.Masked()
		if !p.Contains(key) {
			continue
		}
		nw := &network{Network: n}
		nw.prefix, nw.reserved = p, h.cfg.Policy.Reservation
		if s, err := netip.ParseAddr(n.RangeStart); err == nil && p.Contains(s) {
			if e, err := netip.ParseAddr(n.RangeEnd); err == nil && p.Contains(e) && s.Compare(e) <= 0 {
				nw.start, nw.end = s, e
			}
		}
		nw.router, _ = netip.ParseAddr(n.Router)
		nw.exclude = [4]netip.Addr{p.Addr(), lastAddr(p), h.serverIP, nw.router}
		nw.owner = r.m.MAC
		if r.known {
			nw.owner = r.host.MAC
			if a, err := netip.ParseAddr(r.host.IP); err == nil && p.Contains(a) {
				nw.own = a
			}
		}
		nw.leaseSeconds = n.LeaseSeconds
		if nw.leaseSeconds <= 0 {
			nw.leaseSeconds = int(defaultLease / time.Second)
		}
		return nw, nil
	}
	return nil, fmt.Errorf("no site network contains %s", key)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	bits := p.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= uint32(1)<<(32-bits) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// offer reserves an address for the client, probing the segment first so a
// conflict never turns into a NAK (firmware that gets a NAK often gives up
// and boots from disk).
func (h *Handler) offer(ctx context.Context, r *request, n *network) netip.Addr {
	l := h.cfg.Leases
	for range h.cfg.MaxProbes {
		now := h.cfg.Now()
		a, alreadyOurs := l.Offer(&n.pool, r.m.MAC, r.m.RequestedIP, now, now.Add(h.cfg.OfferHold))
		// The client's own reservation or live lease is not probed: the
		// client itself may still answer on it.
		if !a.IsValid() || h.cfg.Prober == nil || a == n.own || alreadyOurs {
			return a
		}
		inUse, err := h.cfg.Prober.InUse(ctx, a)
		if err != nil {
			r.log.Warn("dhcp: conflict probe failed; offering anyway", "ip", a.String(), "err", err)
			return a
		}
		if !inUse {
			return a
		}
		if !l.MarkInUse(a, r.m.MAC, h.cfg.Now(), now.Add(h.cfg.DeclineHold)) {
			return a // the client itself, on the lease it took meanwhile
		}
		r.log.Warn("dhcp: address answers on the segment; marked in use", "ip", a.String())
	}
	return netip.Addr{}
}

// full serves full and reservations-only modes.
func (h *Handler) full(ctx context.Context, r *request) (*dhcpv4.DHCPv4, error) {
	n, err := h.pickNetwork(r)
	if err != nil {
		r.log.Warn("dhcp: dropped", "reason", err.Error())
		h.emitReceived(r, netip.Addr{}, "ignored: "+err.Error())
		return nil, nil
	}
	switch r.m.Type {
	case dhcpv4.MessageTypeDiscover:
		return h.discover(ctx, r, n)
	case dhcpv4.MessageTypeRequest:
		return h.request(r, n)
	case dhcpv4.MessageTypeDecline:
		return nil, h.decline(r)
	case dhcpv4.MessageTypeRelease:
		return nil, h.release(r)
	case dhcpv4.MessageTypeInform:
		return h.inform(r, n)
	}
	return nil, nil
}

func (h *Handler) discover(ctx context.Context, r *request, n *network) (*dhcpv4.DHCPv4, error) {
	a := h.offer(ctx, r, n)
	if !a.IsValid() {
		reason := "pool exhausted"
		if !n.start.IsValid() {
			reason = "no reservation and the network has no dynamic range"
		}
		r.log.Warn("dhcp: no address to offer", "subnet", n.Subnet, "reason", reason)
		h.emitReceived(r, netip.Addr{}, "ignored: "+reason)
		return nil, nil
	}
	h.emitReceived(r, a, r.decision())
	resp, err := h.newReply(r, dhcpv4.MessageTypeOffer)
	if err != nil {
		return nil, err
	}
	h.addAddress(resp, n, a)
	h.addBoot(r, resp, false)
	h.emit(proto.EventDHCPOffer, r, a, r.decision())
	r.log.Info("dhcp: offer", "ip", a.String(), "file", r.boot.File, "reason", r.boot.Reason)
	return resp, nil
}

// request handles the three REQUEST states of RFC 2131 §4.3.2: SELECTING
// (server id + requested address), INIT-REBOOT (requested address only) and
// RENEWING/REBINDING (ciaddr only).
func (h *Handler) request(r *request, n *network) (*dhcpv4.DHCPv4, error) {
	if r.m.ServerID.IsValid() && r.m.ServerID != h.serverIP {
		// The client chose another server's offer: free ours quietly.
		h.cfg.Leases.ForgetOffer(r.m.MAC)
		r.log.Debug("dhcp: request for another server", "server_id", r.m.ServerID.String())
		return nil, nil
	}
	a := r.m.RequestedIP
	if !a.IsValid() {
		a = r.m.CIAddr
	}
	if !a.IsValid() {
		r.log.Info("dhcp: dropped: REQUEST names no address")
		return nil, nil
	}
	h.emitReceived(r, a, r.decision())
	reason := ""
	if !n.prefix.Contains(a) {
		reason = fmt.Sprintf("address %s is not on network %s", a, n.Subnet)
	} else if ok, err := h.cfg.Leases.Bind(&n.pool, a, r.m.MAC, h.cfg.Now(), time.Duration(n.leaseSeconds)*time.Second); err != nil {
		return nil, err
	} else if !ok {
		reason = fmt.Sprintf("address %s is not available to this client", a)
	}
	if reason != "" {
		resp, err := h.newReply(r, dhcpv4.MessageTypeNak)
		if err != nil {
			return nil, err
		}
		resp.UpdateOption(dhcpv4.OptMessage(reason))
		if r.m.Relayed() {
			resp.SetBroadcast() // RFC 2131 §4.3.2: the relay broadcasts NAKs
		}
		h.emit(proto.EventDHCPNak, r, a, reason)
		r.log.Info("dhcp: nak", "ip", a.String(), "reason", reason)
		return resp, nil
	}
	resp, err := h.newReply(r, dhcpv4.MessageTypeAck)
	if err != nil {
		return nil, err
	}
	resp.ClientIPAddr = r.req.ClientIPAddr
	h.addAddress(resp, n, a)
	h.addBoot(r, resp, false)
	h.emit(proto.EventDHCPAck, r, a, r.decision())
	r.log.Info("dhcp: ack", "ip", a.String(), "file", r.boot.File, "reason", r.boot.Reason)
	return resp, nil
}

func (h *Handler) decline(r *request) error {
	a := r.m.RequestedIP
	h.emitReceived(r, a, "address in use by another machine")
	if !a.IsValid() {
		return nil
	}
	ok, err := h.cfg.Leases.Decline(a, r.m.MAC, h.cfg.Now().Add(h.cfg.DeclineHold))
	if ok {
		r.log.Warn("dhcp: client declined its address: in use on the segment", "ip", a.String())
	}
	return err
}

func (h *Handler) release(r *request) error {
	a := r.m.CIAddr
	h.emitReceived(r, a, "released")
	ok, err := h.cfg.Leases.Release(a, r.m.MAC, h.cfg.Now())
	if ok {
		r.log.Info("dhcp: release", "ip", a.String())
	}
	return err
}

// inform answers a client that has its address: options, no yiaddr, no lease.
func (h *Handler) inform(r *request, n *network) (*dhcpv4.DHCPv4, error) {
	if !r.m.CIAddr.IsValid() {
		return nil, nil
	}
	resp, err := h.newReply(r, dhcpv4.MessageTypeAck)
	if err != nil {
		return nil, err
	}
	resp.ClientIPAddr = r.req.ClientIPAddr
	h.addOptions(resp, n)
	h.addBoot(r, resp, false)
	h.emit(proto.EventDHCPAck, r, r.m.CIAddr, "inform; "+r.decision())
	r.log.Info("dhcp: inform ack", "ciaddr", r.m.CIAddr.String())
	return resp, nil
}

func (h *Handler) addAddress(resp *dhcpv4.DHCPv4, n *network, a netip.Addr) {
	resp.YourIPAddr = net.IP(a.AsSlice())
	lt := time.Duration(n.leaseSeconds) * time.Second
	resp.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lt))
	resp.UpdateOption(dhcpv4.OptRenewTimeValue(lt / 2))
	resp.UpdateOption(dhcpv4.OptRebindingTimeValue(lt * 7 / 8))
	h.addOptions(resp, n)
}

// addOptions sets the network's configuration options.
func (h *Handler) addOptions(resp *dhcpv4.DHCPv4, n *network) {
	resp.UpdateOption(dhcpv4.OptSubnetMask(net.CIDRMask(n.prefix.Bits(), 32)))
	if n.router.IsValid() {
		resp.UpdateOption(dhcpv4.OptRouter(n.router.AsSlice()))
	}
	var dns []net.IP
	for _, d := range n.DNS {
		if a, err := netip.ParseAddr(d); err == nil && a.Is4() {
			dns = append(dns, a.AsSlice())
		}
	}
	if len(dns) > 0 {
		resp.UpdateOption(dhcpv4.OptDNS(dns...))
	}
	if n.Domain != "" {
		resp.UpdateOption(dhcpv4.OptDomainName(n.Domain))
	}
}
