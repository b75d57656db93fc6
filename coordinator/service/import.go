package service

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/fleetboot/fleetboot/proto"
	"github.com/fleetboot/fleetboot/shared/selector"
)

// importRow is one row of an import on its way: checked, then written.
type importRow struct {
	proto.ImportRow
	mac, key string
	h        proto.Host  // what is stored
	prev     *proto.Host // the host as it was, nil for a new one
	prevRev  uint64
	macRev   uint64 // a stale MAC index entry to take over (0: create it)
	ipRev    uint64 // a stale IP index entry to take over (0: create it)
	claimIP  bool   // h.IP is new to the host
	refused  string // why the row is refused ("" while it is fine)
	undo     []func(context.Context)
}

func (r *importRow) refuse(format string, a ...any) {
	if r.refused == "" {
		r.refused = fmt.Sprintf(format, a...)
	}
}

func (r *importRow) same() bool { return r.prev != nil && sameHost(*r.prev, r.h) }

// sameHost tells whether two versions of a host differ in anything but
// their write time.
func sameHost(a, b proto.Host) bool {
	a.Updated, b.Updated, a.V, b.V = time.Time{}, time.Time{}, 0, 0
	return reflect.DeepEqual(a, b)
}

// ImportHosts checks one chunk of an import file and, unless req.Check,
// writes its good rows: the MAC and IP indexes first, then the hosts, then
// the images the rows newly use are pinned, each step pipelined (writeAll).
// A row whose write fails (another request took its MAC or IP meanwhile) is
// refused and its earlier writes undone; the other rows stand. Every row is
// checked as `host set` checks one host. Rows may not move a host between
// sites (host set --site does that).
func (s *Service) ImportHosts(ctx context.Context, req proto.HostImportRequest) (proto.HostImportReply, error) {
	if len(req.Rows) > proto.MaxImportRows {
		return proto.HostImportReply{}, invalid("%d rows in one request: at most %d (the CLI sends a file in chunks)", len(req.Rows), proto.MaxImportRows)
	}
	rows, err := s.checkImport(ctx, req.Rows)
	if err != nil {
		return proto.HostImportReply{}, err
	}
	if !req.Check {
		s.mu.Lock()
		s.applyImport(ctx, rows)
		s.mu.Unlock()
	}
	rep := proto.HostImportReply{V: proto.Version}
	for _, r := range rows {
		switch {
		case r.refused != "":
			rep.Refused = append(rep.Refused, proto.ImportProblem{Line: r.Line, MAC: r.MAC, Reason: r.refused})
		case r.prev == nil:
			rep.Created++
		case r.same():
			rep.Unchanged++
			if req.Check {
				rep.UnchangedLines = append(rep.UnchangedLines, r.Line)
			}
		default:
			rep.Changed++
		}
	}
	if !req.Check {
		s.log.Info("hosts imported", "rows", len(rows), "created", rep.Created, "changed", rep.Changed, "unchanged", rep.Unchanged, "refused", len(rep.Refused))
	}
	return rep, nil
}

// checkImport turns rows into hosts and refuses, with a reason, every row
// that is bad on its own, repeats an earlier row's MAC or IP, or conflicts
// with what is stored.
func (s *Service) checkImport(ctx context.Context, in []proto.ImportRow) ([]*importRow, error) {
	rows := make([]*importRow, len(in))
	sites := map[string]*proto.Site{}
	siteErr := map[string]error{}
	images := map[string]error{}
	confined, isConfined := confinedSite(ctx)
	seenMAC, seenIP := map[string]int{}, map[string]int{}
	defaultSite := ""
	for i, row := range in {
		r := &importRow{ImportRow: row}
		rows[i] = r
		mac, err := proto.ParseMAC(row.MAC)
		if err != nil {
			r.refuse("%v", err)
			continue
		}
		r.mac = mac
		if l, dup := seenMAC[mac]; dup {
			r.refuse("MAC %s is on line %d already", mac, l)
			continue
		}
		seenMAC[mac] = row.Line
		site := row.Site
		if site == "" {
			if defaultSite == "" {
				if defaultSite, err = s.onlySite(ctx, mac); err != nil {
					return nil, fmt.Errorf("%w (or give each line its site)", err)
				}
			}
			site = defaultSite
		}
		if isConfined && site != confined {
			r.refuse("may be imported only at site %s, not %q", confined, site)
			continue
		}
		if _, ok := sites[site]; !ok && siteErr[site] == nil {
			st, err := s.GetSite(ctx, site)
			if err != nil {
				siteErr[site] = err
			} else {
				sites[site] = &st
			}
		}
		if err := siteErr[site]; err != nil {
			r.refuse("%s", errorText(err))
			continue
		}
		if row.Image != "" {
			if _, ok := images[row.Image]; !ok {
				_, images[row.Image] = s.getImage(ctx, row.Image)
			}
			if err := images[row.Image]; err != nil {
				r.refuse("%s", errorText(err))
				continue
			}
		}
		r.h = proto.Host{MAC: mac, Site: site, Image: row.Image, Hostname: row.Hostname, Labels: row.Labels, Vars: row.Vars, State: proto.StateBoot}
		if row.IP != "" {
			ip, err := netip.ParseAddr(row.IP)
			if err != nil || !ip.Is4() {
				r.refuse("invalid IP address %q", row.IP)
				continue
			}
			r.h.IP = ip.String()
			k := site + "." + r.h.IP
			if l, dup := seenIP[k]; dup {
				r.refuse("IP %s at site %s is on line %d already", r.h.IP, site, l)
				continue
			}
			seenIP[k] = row.Line
		}
		if err := (candidate{r.h}).validate(*sites[site]); err != nil {
			r.refuse("%s", errorText(err))
			continue
		}
		r.key, _ = proto.HostKey(site, mac)
	}
	if err := s.checkStored(ctx, rows); err != nil {
		return nil, err
	}
	return rows, nil
}

// checkStored reads, for the rows still good, the hosts they update (all
// at once, see readMany), merges each row into its host, and checks new
// reservations against the IP index. A row's host is first read at its own
// key (site and MAC): a host stored there holds that MAC, so a row that
// updates a host, and an unchanged one above all, costs that one read. Only
// the rest (new MACs, MACs held at another site or as an extra MAC, leftover
// index entries) are looked up in the MAC index (checkByIndex).
func (s *Service) checkStored(ctx context.Context, rows []*importRow) error {
	good := func() []*importRow {
		var out []*importRow
		for _, r := range rows {
			if r.refused == "" {
				out = append(out, r)
			}
		}
		return out
	}
	live := good()
	keys := make([]string, len(live))
	for i, r := range live {
		keys[i] = r.key
	}
	vals, errs := s.readMany(ctx, proto.BucketHosts, keys)
	var rest []*importRow
	for i, r := range live {
		if errors.Is(errs[i], ErrNotFound) {
			rest = append(rest, r)
			continue
		}
		if errs[i] != nil {
			return errs[i]
		}
		var h proto.Host
		if err := jsonUnmarshal(vals[i].value, &h); err != nil {
			return err
		}
		if h.MAC != r.mac {
			rest = append(rest, r) // not this MAC's host: the index tells
			continue
		}
		r.prev, r.prevRev = &h, vals[i].rev
		r.h = mergeImport(h, r.ImportRow, r.h)
	}
	if err := s.checkByIndex(ctx, rest); err != nil {
		return err
	}
	// A new host carries the facts its MAC reported already (a machine
	// discovered, then imported): see proto.Host.Facts.
	var fresh []*importRow
	var factKeys []string
	for _, r := range good() {
		if r.prev == nil {
			fresh = append(fresh, r)
			factKeys = append(factKeys, mustMACKey(r.mac))
		}
	}
	facts, factErrs := s.readMany(ctx, bucketFacts, factKeys)
	for i, r := range fresh {
		switch {
		case factErrs[i] == nil:
			r.h.Facts = facts[i].value
		case !errors.Is(factErrs[i], ErrNotFound):
			return factErrs[i]
		}
	}
	// New reservations: free, or held by a leftover entry.
	var ipRows []*importRow
	var ipKeys []string
	for _, r := range good() {
		if r.h.IP != "" && (r.prev == nil || r.prev.IP != r.h.IP) {
			r.claimIP = true
			ipRows = append(ipRows, r)
			ipKeys = append(ipKeys, r.h.Site+"."+r.h.IP)
		}
	}
	ips, ipErrs := s.readMany(ctx, bucketIPs, ipKeys)
	for i, r := range ipRows {
		switch {
		case errors.Is(ipErrs[i], ErrNotFound):
		case ipErrs[i] != nil:
			return ipErrs[i]
		case string(ips[i].value) == r.key:
		case time.Since(ips[i].created) >= claimGrace && s.indexStale(ctx, bucketIPs, ipKeys[i], string(ips[i].value)):
			r.ipRev = ips[i].rev
		default:
			holder := string(ips[i].value)
			if hs, hm, ok := proto.SplitHostKey(holder); ok {
				holder = fmt.Sprintf("host %s at site %s", hm, hs)
			}
			r.refuse("IP %s at site %s is already used by %s", r.h.IP, r.h.Site, holder)
		}
	}
	return nil
}

// checkByIndex reads the MAC index for rows whose host is not stored at
// their own key, and the hosts it points at: a MAC held by another site's
// host or as an extra MAC refuses the row, an entry whose host is gone is
// taken over, and a MAC the index does not know is new.
func (s *Service) checkByIndex(ctx context.Context, live []*importRow) error {
	macKeys := make([]string, len(live))
	for i, r := range live {
		macKeys[i] = mustMACKey(r.mac)
	}
	idx, errs := s.readMany(ctx, proto.BucketMACs, macKeys)
	var holders []string
	for i := range live {
		if errs[i] == nil {
			holders = append(holders, string(idx[i].value))
		} else if !errors.Is(errs[i], ErrNotFound) {
			return errs[i]
		}
	}
	hostVals, hostErrs := s.readMany(ctx, proto.BucketHosts, holders)
	byKey := map[string]int{}
	for i, k := range holders {
		byKey[k] = i
	}
	for i, r := range live {
		if errs[i] != nil {
			continue // a new MAC
		}
		holder := string(idx[i].value)
		j := byKey[holder]
		if errors.Is(hostErrs[j], ErrNotFound) {
			r.macRev = idx[i].rev // a leftover entry: its host is gone
			continue
		}
		if hostErrs[j] != nil {
			return hostErrs[j]
		}
		var h proto.Host
		if err := jsonUnmarshal(hostVals[j].value, &h); err != nil {
			return err
		}
		switch {
		case h.MAC != r.mac:
			r.refuse("MAC %s is an extra MAC of host %s", r.mac, h.MAC)
		case h.Site != r.h.Site:
			r.refuse("host %s is at site %s, not %s (move it with `fleetboot host set %s --site %s`)", r.mac, h.Site, r.h.Site, r.mac, r.h.Site)
		}
		if r.refused != "" {
			continue
		}
		if site, ok := confinedSite(ctx); ok && h.Site != site {
			r.refuse("host %s is not of site %s", r.mac, site)
			continue
		}
		r.prev, r.prevRev = &h, hostVals[j].rev
		r.h = mergeImport(h, r.ImportRow, r.h)
	}
	return nil
}

// mergeImport is what a row makes of a stored host: the fields it gives
// replace, its labels and vars are added; the rest stays.
func mergeImport(cur proto.Host, row proto.ImportRow, parsed proto.Host) proto.Host {
	h := cur
	h.Labels, h.Vars = maps.Clone(cur.Labels), maps.Clone(cur.Vars)
	for _, f := range []struct{ dst, v *string }{{&h.Image, &parsed.Image}, {&h.IP, &parsed.IP}, {&h.Hostname, &parsed.Hostname}} {
		if *f.v != "" {
			*f.dst = *f.v
		}
	}
	h.Labels = mergeMap(h.Labels, row.Labels, nil)
	h.Vars = mergeMap(h.Vars, row.Vars, nil)
	return h
}

// applyImport writes the good rows that change something. Callers hold s.mu.
func (s *Service) applyImport(ctx context.Context, rows []*importRow) {
	var todo []*importRow
	now := s.now().UTC()
	for _, r := range rows {
		if r.refused == "" && !r.same() {
			r.h.V, r.h.Updated = proto.Version, now
			todo = append(todo, r)
		}
	}
	// 1. Indexes: each new MAC, each new reservation.
	var ops []kvOp
	var owners []*importRow
	for _, r := range todo {
		if r.prev == nil {
			ops = append(ops, kvOp{bucket: proto.BucketMACs, key: mustMACKey(r.mac), value: []byte(r.key), rev: r.macRev})
			owners = append(owners, r)
		}
		if r.claimIP {
			ops = append(ops, kvOp{bucket: bucketIPs, key: r.h.Site + "." + r.h.IP, value: []byte(r.key), rev: r.ipRev})
			owners = append(owners, r)
		}
	}
	for i, err := range s.writeAll(ctx, ops) {
		r, op := owners[i], ops[i]
		if err != nil {
			what := "MAC " + r.mac
			if op.bucket == bucketIPs {
				what = fmt.Sprintf("IP %s at site %s", r.h.IP, r.h.Site)
			}
			r.refuse("%s was just taken by another request; retry", what)
			continue
		}
		r.undo = append(r.undo, func(ctx context.Context) { s.release(ctx, op.bucket, op.key, r.key) })
	}
	// 2. The hosts, each with compare-and-set at the version checked.
	ops, owners = ops[:0], owners[:0]
	for _, r := range todo {
		if r.refused != "" {
			undoAll(r.undo, ctx)
			continue
		}
		ops = append(ops, kvOp{bucket: proto.BucketHosts, key: r.key, value: mustJSON(r.h), rev: r.prevRev})
		owners = append(owners, r)
	}
	for i, err := range s.writeAll(ctx, ops) {
		r := owners[i]
		if err != nil {
			r.refuse("host %s changed concurrently; retry", r.mac)
			undoAll(r.undo, ctx)
			continue
		}
		if r.prev == nil {
			r.undo = append(r.undo, func(ctx context.Context) { _ = s.kv[proto.BucketHosts].Delete(ctx, r.key) })
		} else {
			prev := mustJSON(*r.prev)
			r.undo = append(r.undo, func(ctx context.Context) { _, _ = s.kv[proto.BucketHosts].Put(ctx, r.key, prev) })
		}
	}
	// 3. Pin the images rows newly use (see pinImage): an image removed
	// meanwhile takes back the rows that use it.
	pinned := map[string]error{}
	for _, r := range owners {
		if r.refused != "" || r.h.Image == "" || (r.prev != nil && r.prev.Image == r.h.Image) {
			continue
		}
		if _, done := pinned[r.h.Image]; !done {
			pinned[r.h.Image] = s.pinImage(ctx, r.h.Image)
		}
		if err := pinned[r.h.Image]; err != nil {
			r.refuse("%s", errorText(err))
			undoAll(r.undo, ctx)
		}
	}
	// 4. Reservations the changed hosts gave up.
	for _, r := range owners {
		if r.refused == "" && r.prev != nil && r.prev.IP != "" && r.prev.IP != r.h.IP {
			s.release(ctx, bucketIPs, r.prev.Site+"."+r.prev.IP, r.key)
		}
	}
}

// errorText is an error as the CLI shows it (see the API's errorLine).
func errorText(err error) string {
	msg := err.Error()
	for _, s := range []error{ErrInvalid, ErrConflict} {
		msg = strings.TrimPrefix(msg, s.Error()+": ")
	}
	return msg
}

// BulkSetHosts gives every host the selector matches (at req.Site, or at
// every site) the image, in one request: `host set --selector`. DryRun only
// says which match. The writes are an import's (applyImport): pipelined,
// each host with compare-and-set at the version matched.
func (s *Service) BulkSetHosts(ctx context.Context, req proto.HostBulkSetRequest) (proto.HostBulkSetReply, error) {
	sel, err := selector.Parse(req.Selector)
	if err != nil {
		return proto.HostBulkSetReply{}, fmt.Errorf("%w: --selector: %v", ErrInvalid, err)
	}
	if len(sel.Reqs) == 0 {
		return proto.HostBulkSetReply{}, invalid("an empty selector would change every host; name what to match")
	}
	if req.Image == "" {
		return proto.HostBulkSetReply{}, invalid("--image is required")
	}
	if _, err := s.getImage(ctx, req.Image); err != nil {
		return proto.HostBulkSetReply{}, err
	}
	site := req.Site
	if c, ok := confinedSite(ctx); ok {
		if site != "" && site != c {
			return proto.HostBulkSetReply{}, invalid("may change only hosts of site %s, not %q", c, site)
		}
		site = c
	}
	filter := ">"
	if site != "" {
		if _, err := s.GetSite(ctx, site); err != nil {
			return proto.HostBulkSetReply{}, err
		}
		filter = site + ".>"
	}
	var rows []*importRow
	err = scan(ctx, s, proto.BucketHosts, filter, func(key string, rev uint64, h proto.Host) error {
		rows = append(rows, &importRow{ImportRow: proto.ImportRow{MAC: h.MAC}, mac: h.MAC, key: key, h: h, prev: &h, prevRev: rev})
		return nil
	})
	if err != nil {
		return proto.HostBulkSetReply{}, err
	}
	var facts []entry
	var factErrs []error
	if sel.UsesFacts() {
		keys := make([]string, len(rows))
		for i, r := range rows {
			keys[i] = mustMACKey(r.mac)
		}
		facts, factErrs = s.readMany(ctx, bucketFacts, keys)
	}
	rep := proto.HostBulkSetReply{V: proto.Version, Matched: []string{}}
	matched := rows[:0]
	for i, r := range rows {
		var f []byte
		if facts != nil && factErrs[i] == nil {
			f = facts[i].value
		}
		if !sel.Match(subjectOf(r.mac, r.h.Site, r.prev, f)) {
			continue
		}
		rep.Matched = append(rep.Matched, r.mac)
		r.h.Image = req.Image
		matched = append(matched, r)
	}
	slices.Sort(rep.Matched)
	if req.DryRun {
		return rep, nil
	}
	s.mu.Lock()
	s.applyImport(ctx, matched)
	s.mu.Unlock()
	for _, r := range matched {
		switch {
		case r.refused != "":
			rep.Refused = append(rep.Refused, proto.ImportProblem{MAC: r.mac, Reason: r.refused})
		case r.same():
			rep.Unchanged++
		default:
			rep.Changed++
		}
	}
	s.log.Info("hosts set by selector", "selector", sel.String(), "image", req.Image, "matched", len(matched), "changed", rep.Changed)
	return rep, nil
}
