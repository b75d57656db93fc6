package proto

import (
	"encoding/json"
	"fmt"
	"time"
)

// Version is the schema version this build writes. Readers accept any version
// and ignore fields they do not know.
const Version = 1

// DHCP modes of a site.
const (
	DHCPFull         = "full"         // addresses from the range and reservations
	DHCPReservations = "reservations" // full mode, but answer known MACs only
	DHCPProxy        = "proxy"        // another server hands out addresses; answer PXE clients only
	DHCPOff          = "off"
)

// Policies for machines the coordinator does not know.
const (
	UnknownIgnore   = "ignore"   // no answer at all (the default: never install an unknown machine)
	UnknownDiscover = "discover" // boot the site's discovery image
	UnknownExit     = "exit"     // answer, but the script exits to the next boot device
)

// Boot states of a host.
const (
	StateBoot  = "boot"  // boot its image
	StateLocal = "local" // exit to local disk (after install)
)

// Artifact roles.
const (
	RoleKernel = "kernel"
	RoleInitrd = "initrd"
	RoleISO    = "iso"
)

// Site is one L2/L3 place with its networks and DHCP behaviour.
type Site struct {
	V              int       `json:"v"`
	Name           string    `json:"name"`
	Networks       []Network `json:"networks"`
	DHCP           string    `json:"dhcp"`                      // DHCPFull, DHCPReservations, DHCPProxy or DHCPOff
	Unknown        string    `json:"unknown,omitempty"`         // UnknownIgnore (default), UnknownDiscover, UnknownExit
	DiscoveryImage string    `json:"discovery_image,omitempty"` // image for UnknownDiscover
	Loader         string    `json:"loader,omitempty"`          // boot chain of its hosts; "" = iPXE from the edge's --boot-dir
	Updated        time.Time `json:"updated"`
}

// Network is one subnet served at a site, directly or through a relay.
type Network struct {
	Subnet       string   `json:"subnet"`                // CIDR
	RangeStart   string   `json:"range_start,omitempty"` // dynamic pool; empty = reservations only
	RangeEnd     string   `json:"range_end,omitempty"`
	Router       string   `json:"router,omitempty"`
	DNS          []string `json:"dns,omitempty"`
	Domain       string   `json:"domain,omitempty"`
	LeaseSeconds int      `json:"lease_seconds,omitempty"`
}

// Artifact is one file of an image, stored content-addressed in the artifact store.
type Artifact struct {
	Role   string `json:"role"` // RoleKernel, RoleInitrd, RoleISO
	Name   string `json:"name"` // file name as the booting machine sees it (vmlinuz, initrd.img)
	Key    string `json:"key"`  // object key in the store
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lower-case hex
}

// Image is a bootable set of artifacts with its kernel command line.
type Image struct {
	V         int        `json:"v"`
	Name      string     `json:"name"`
	Arch      string     `json:"arch"` // x86_64 or arm64
	Cmdline   string     `json:"cmdline,omitempty"`
	Artifacts []Artifact `json:"artifacts"`
	Updated   time.Time  `json:"updated"`
	Revision  int        `json:"revision,omitempty"` // see revision.go; 0: written before revisions (counts as 1)
}

// Artifact returns the image's artifact with the given role.
func (im Image) Artifact(role string) (Artifact, bool) {
	for _, a := range im.Artifacts {
		if a.Role == role {
			return a, true
		}
	}
	return Artifact{}, false
}

// Host is one machine, keyed by its primary MAC. Any of its MACs identifies it.
type Host struct {
	V         int               `json:"v"`
	MAC       string            `json:"mac"` // canonical colon form
	ExtraMACs []string          `json:"extra_macs,omitempty"`
	Site      string            `json:"site"`
	IP        string            `json:"ip,omitempty"` // DHCP reservation
	Hostname  string            `json:"hostname,omitempty"`
	Image     string            `json:"image,omitempty"`
	Loader    string            `json:"loader,omitempty"` // boot chain; "" = the site's
	Vars      map[string]string `json:"vars,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`   // set by admins, imports and policies; selectors read them
	Template  string            `json:"template,omitempty"` // install template the edge renders for it
	Policy    string            `json:"policy,omitempty"`   // the policy that claimed it from discovery
	State     string            `json:"state"`              // StateBoot or StateLocal
	Once      bool              `json:"once,omitempty"`     // switch to StateLocal after the install reports done
	Updated   time.Time         `json:"updated"`
	BMC       *BMC              `json:"bmc,omitempty"` // power control (bmc.go)
	// Facts is a copy of the last facts the machine reported (the
	// coordinator's facts bucket holds them by MAC): the edge mirrors only
	// its site's hosts, and renders install templates' {{.Facts}} from it.
	Facts json.RawMessage `json:"facts,omitempty"`
}

// MACs returns the primary and extra MACs.
func (h Host) MACs() []string { return append([]string{h.MAC}, h.ExtraMACs...) }

// EdgeStatus is an edge's heartbeat.
type EdgeStatus struct {
	V            int       `json:"v"`
	Name         string    `json:"name"`
	Site         string    `json:"site"`
	Version      string    `json:"version"`
	Interfaces   []string  `json:"interfaces,omitempty"`
	CacheBytes   int64     `json:"cache_bytes"`
	HitRatio     float64   `json:"hit_ratio"`
	Revision     uint64    `json:"revision"` // last applied KV revision
	Lag          uint64    `json:"lag"`      // revisions behind the coordinator
	Time         time.Time `json:"time"`
	HTTPAddr     string    `json:"http_addr,omitempty"`
	IntervalSecs int       `json:"interval_secs,omitempty"`
	XKey         string    `json:"xkey,omitempty"` // public curve key BMC passwords are sealed to (bmc.go)
}

// Event kinds recorded along the boot chain.
const (
	EventDHCPDiscover  = "dhcp.discover"
	EventDHCPOffer     = "dhcp.offer"
	EventDHCPRequest   = "dhcp.request"
	EventDHCPAck       = "dhcp.ack"
	EventDHCPNak       = "dhcp.nak"
	EventDHCPDecline   = "dhcp.decline"
	EventDHCPRelease   = "dhcp.release"
	EventTFTPStart     = "tftp.start"
	EventTFTPDone      = "tftp.done"
	EventTFTPError     = "tftp.error"
	EventScript        = "script.served"
	EventArtifactStart = "artifact.start"
	EventArtifactEnd   = "artifact.end"
	EventCallbackDone  = "callback.done"
	EventCallbackFacts = "callback.facts"
	EventDropped       = "events.dropped" // an edge's buffer overflowed; detail says how many
	// Kinds a client can repeat at will. The edge records the first few
	// per source address and window as they come, and the rest as one
	// event of the same kind with no MAC and detail count, source, window.
	EventScriptUnknown   = "script.unknown"   // a script asked for by a MAC the coordinator does not know
	EventCallbackRefused = "callback.refused" // no valid token, or not from the machine's address; detail reason
	EventHTTPLimited     = "http.limited"     // HTTP requests over the per-address rate
	EventTFTPLimited     = "tftp.limited"     // TFTP requests over the per-address rate
)

// Counted DHCP events, one per window and reason, with detail "count": the
// edge's answer to floods of random MACs (events of unknown MACs beyond a
// budget) and to requests its rate limits refused.
const (
	EventDHCPUnknown     = "dhcp.unknown"
	EventDHCPRateLimited = "dhcp.ratelimited"
)

// Event is one step of a machine's boot, recorded by an edge.
type Event struct {
	V      int               `json:"v"`
	ID     string            `json:"id"` // unique; used as Nats-Msg-Id for deduplication
	Time   time.Time         `json:"time"`
	Site   string            `json:"site"`
	Edge   string            `json:"edge"`
	MAC    string            `json:"mac,omitempty"`
	Kind   string            `json:"kind"`
	Detail map[string]string `json:"detail,omitempty"`
}

// Reply is the envelope of every API answer: an error line, or data.
type Reply struct {
	V     int             `json:"v"`
	Error string          `json:"error,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// NameRequest addresses a site, image or edge by name.
type NameRequest struct {
	V    int    `json:"v"`
	Name string `json:"name"`
}

// MACRequest addresses a host by any of its MACs.
type MACRequest struct {
	V   int    `json:"v"`
	MAC string `json:"mac"`
}

// ListRequest filters a listing.
type ListRequest struct {
	V    int    `json:"v"`
	Site string `json:"site,omitempty"`
}

// StoreInfo tells clients where artifacts go, without credentials.
type StoreInfo struct {
	V   int    `json:"v"`
	URL string `json:"url"`
}

// isToken says whether s is a lower-case letter or digit followed by lower-case
// letters, digits, '_', '-' and, with dot, '.'. A loop, not a regexp: the
// edge checks names on every request, and matching them with regexps cost
// about 6 % of a cached 4 KiB hit's CPU.
func isToken(s string, dot bool) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '_' || c == '-' || dot && c == '.'):
		default:
			return false
		}
	}
	return true
}

// ValidName checks an image, edge or user name.
func ValidName(kind, s string) error {
	if len(s) > 64 || !isToken(s, true) {
		return fmt.Errorf("invalid %s name %q: use lower-case letters, digits, '.', '_' or '-', starting with a letter or digit (at most 64)", kind, s)
	}
	return nil
}

// ValidEdgeName is as strict as ValidSiteName: an edge name is a token of
// event and heartbeat subjects, so it cannot hold '.'.
func ValidEdgeName(s string) error {
	if len(s) > 64 || !isToken(s, false) {
		return fmt.Errorf("invalid edge name %q: use lower-case letters, digits, '_' or '-', starting with a letter or digit (at most 64, no '.')", s)
	}
	return nil
}

// ValidSiteName is stricter than ValidName: no '.', because a site name is the
// first token of host keys and subjects, and "lab" must not match "lab.x".
func ValidSiteName(s string) error {
	if len(s) > 64 || !isToken(s, false) {
		return fmt.Errorf("invalid site name %q: use lower-case letters, digits, '_' or '-', starting with a letter or digit (at most 64, no '.')", s)
	}
	return nil
}
