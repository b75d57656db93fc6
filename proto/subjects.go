package proto

import (
	"fmt"
	"strings"
	"time"
)

// KV buckets holding the desired state. The coordinator is their only writer.
const (
	BucketSites  = "sites"  // key: site name
	BucketImages = "images" // key: image name
	BucketHosts  = "hosts"  // key: HostKey(site, mac)
	BucketMACs   = "macs"   // key: MAC as 12 hex digits -> HostKey; keeps a MAC unique across sites
	BucketEdges  = "edges"  // key: edge name -> EdgeStatus (last heartbeat)
)

// BucketLoaders holds the boot loaders (key: loader name -> Loader). Global
// like images: every edge reads it.
const BucketLoaders = "loaders"

// BucketIdentities is the registry of enrolled credentials of a coordinator
// on a NATS cluster (--auth --nats-url), shared by every coordinator and
// written with compare-and-set. Only coordinators read or write it; people's
// permissions deny it and edges' do not list it.
const BucketIdentities = "identities"

// EventsDuplicateWindow is how long the EVENTS stream remembers message IDs
// (Nats-Msg-Id). It is part of the contract: an edge may resend an event it
// is not sure was stored for up to this long after the first publish, and the
// stream must drop the copy. Whoever creates the stream uses this value.
const EventsDuplicateWindow = 15 * time.Minute

// Streams.
const (
	StreamEvents = "EVENTS" // subjects: SubjectEventsPrefix + ".>"
	StreamAudit  = "AUDIT"
)

// Subjects.
const (
	// APIPrefix is the request-reply group of the coordinator's admin API.
	// The full subject is APIPrefix + "." + one of the API* endpoint names.
	APIPrefix = "fleetboot.api.v1"
	// SubjectEventsPrefix: events are published to
	// fleetboot.events.<site>.<edge>.<mac12>.
	SubjectEventsPrefix = "fleetboot.events"
	// SubjectStatusPrefix: heartbeats are published to fleetboot.status.<site>.<edge>.
	SubjectStatusPrefix = "fleetboot.status"
	// ServiceName is the micro service name the coordinators register under;
	// several coordinators form one queue group.
	ServiceName = "fleetboot-coordinator"
)

// API endpoint names, relative to APIPrefix.
const (
	APISiteAdd   = "site.add"
	APISiteList  = "site.list"
	APISiteGet   = "site.get"
	APISiteRm    = "site.rm"
	APIImageAdd  = "image.add"
	APIImageList = "image.list"
	APIImageGet  = "image.get"
	APIImageRm   = "image.rm"
	APIHostSet   = "host.set"
	APIHostList  = "host.list"
	APIHostGet   = "host.get"
	APIHostRm    = "host.rm"
	APIEdgeList  = "edge.list"
	APIHostDone  = "host.done"  // an installer reported done (from an edge)
	APIHostFacts = "host.facts" // an installer reported facts (from an edge)
	APIStoreInfo = "store.info"
	// Image revisions (revision.go) and BMC power control (bmc.go).
	APIImageHistory  = "image.history.list"
	APIImageRollback = "image.rollback"
	APIHostBMC       = "host.bmc"
	APIHostBMCKeys   = "host.bmckeys.get" // the curve keys of the edges a host's BMC password is sealed to
	APIHostPower     = "host.power"
)

// Boot loader endpoints (proto.Loader), relative to APIPrefix.
const (
	APILoaderAdd  = "loader.add"
	APILoaderList = "loader.list"
	APILoaderGet  = "loader.get"
	APILoaderRm   = "loader.rm"
)

// Discovery, labels and policies (issue 15), relative to APIPrefix.
const (
	APIDiscoveredList = "discovered.list" // ListRequest -> []Discovered
	APIFactsGet       = "facts.get"       // MACRequest -> FactsReply
	APIPolicyAdd      = "policy.add"      // Policy -> PolicyAddReply
	APIPolicyList     = "policy.list"     // ListRequest -> []PolicyView
	APIPolicyGet      = "policy.get"      // NameRequest -> PolicyView
	APIPolicyRm       = "policy.rm"       // NameRequest
	APIPolicyEnable   = "policy.enable"   // PolicyEnableRequest -> PolicyView
	APIPolicyExplain  = "policy.explain"  // MACRequest -> PolicyDecision
	APITemplateAdd    = "template.add"    // Template -> Template
	APITemplateList   = "template.list"   // ListRequest -> []Template
	APITemplateGet    = "template.get"    // NameRequest -> Template
	APITemplateRm     = "template.rm"     // NameRequest
	APIHostImport     = "host.import"     // HostImportRequest -> HostImportReply
	APIHostBulkSet    = "host.bulkset"    // HostBulkSetRequest -> HostBulkSetReply
)

// BucketTemplates holds the install templates (key: name -> Template).
// Global like images: every edge reads it, to render them for its hosts.
const BucketTemplates = "templates"

// APISubject returns the full subject for an endpoint name.
func APISubject(endpoint string) string { return APIPrefix + "." + endpoint }

// HostKey is the KV key of a host: <site>.<12 hex digits>, so an edge can
// watch "<site>.>" and be permitted to read only that.
func HostKey(site, mac string) (string, error) {
	k, err := MACKey(mac)
	if err != nil {
		return "", err
	}
	return site + "." + k, nil
}

// SplitHostKey returns the site and canonical MAC of a host key.
func SplitHostKey(key string) (site, mac string, ok bool) {
	i := strings.LastIndexByte(key, '.')
	if i <= 0 {
		return "", "", false
	}
	m, err := MACFromKey(key[i+1:])
	if err != nil {
		return "", "", false
	}
	return key[:i], m, true
}

// EventSubject is where an edge publishes an event about a MAC. mac may be
// empty for events about no machine in particular.
func EventSubject(site, edge, mac string) string {
	k, err := MACKey(mac)
	if err != nil {
		k = "none"
	}
	return SubjectEventsPrefix + "." + site + "." + edge + "." + k
}

// StatusSubject is where an edge publishes its heartbeat.
func StatusSubject(site, edge string) string {
	return SubjectStatusPrefix + "." + site + "." + edge
}

// ParseStatusSubject returns the site and edge of a heartbeat subject. NATS
// permissions confine which of these subjects an edge may publish on, so
// they, not the body, say who sent a heartbeat.
func ParseStatusSubject(subject string) (site, edge string, ok bool) {
	rest, found := strings.CutPrefix(subject, SubjectStatusPrefix+".")
	if !found {
		return "", "", false
	}
	site, edge, found = strings.Cut(rest, ".")
	if !found || site == "" || edge == "" || strings.Contains(edge, ".") {
		return "", "", false
	}
	return site, edge, true
}

// ParseEventSubject returns the site, edge and MAC key (12 hex digits, or
// "none") of an event subject.
func ParseEventSubject(subject string) (site, edge, macKey string, ok bool) {
	rest, found := strings.CutPrefix(subject, SubjectEventsPrefix+".")
	if !found {
		return "", "", "", false
	}
	t := strings.Split(rest, ".")
	if len(t) != 3 || t[0] == "" || t[1] == "" || t[2] == "" {
		return "", "", "", false
	}
	return t[0], t[1], t[2], true
}

// CheckEventSubject tells whether an event's body names the site, edge and
// MAC its subject carries. Readers drop an event that does not: an edge may
// publish only under its own site and name, but it writes the body itself.
func CheckEventSubject(subject string, ev Event) error {
	site, edge, key, ok := ParseEventSubject(subject)
	if !ok {
		return fmt.Errorf("subject %q is not an event subject", subject)
	}
	if ev.Site != site || ev.Edge != edge {
		return fmt.Errorf("body says site %q edge %q, subject %q", ev.Site, ev.Edge, subject)
	}
	bodyKey, err := MACKey(ev.MAC)
	if err != nil {
		bodyKey = "none" // EventSubject's word for "no machine"
	}
	if bodyKey != key {
		return fmt.Errorf("body says MAC %q, subject %q", ev.MAC, subject)
	}
	return nil
}

// BulkRequestTimeout is how long a request touching every host of a fleet
// (BulkEndpoint) may take, at the coordinator and in the CLI's wait: a scan
// of 100 000 hosts outlasts the default request limit.
const BulkRequestTimeout = 5 * time.Minute

// BulkEndpoint tells the endpoints that may scan or write every host (a
// rollout's start selects among every host and holds each it picks).
func BulkEndpoint(endpoint string) bool {
	return endpoint == APIHostImport || endpoint == APIHostBulkSet || endpoint == APIRolloutStart
}
