package proto

import (
	"encoding/json"
	"time"
)

// HostSetRequest creates or updates a host. Nil fields keep their current
// value on an update, so `host set MAC --image X` changes only the image.
type HostSetRequest struct {
	V           int               `json:"v"`
	MAC         string            `json:"mac"`
	Site        *string           `json:"site,omitempty"`
	IP          *string           `json:"ip,omitempty"` // "" removes the reservation
	Hostname    *string           `json:"hostname,omitempty"`
	Image       *string           `json:"image,omitempty"`
	Loader      *string           `json:"loader,omitempty"` // "" = the site's
	State       *string           `json:"state,omitempty"`
	Once        *bool             `json:"once,omitempty"`
	ExtraMACs   *[]string         `json:"extra_macs,omitempty"`
	Vars        map[string]string `json:"vars,omitempty"`         // set or replace these
	UnsetVars   []string          `json:"unset_vars,omitempty"`   // remove these
	Labels      map[string]string `json:"labels,omitempty"`       // set or replace these
	UnsetLabels []string          `json:"unset_labels,omitempty"` // remove these
	Template    *string           `json:"template,omitempty"`     // "" = none
}

// EdgeView is an edge's last heartbeat as the coordinator sees it.
type EdgeView struct {
	EdgeStatus
	Stale bool `json:"stale"`
}

// FactsRequest carries what an installer or the discovery system reported
// about a machine. Site is read only for a MAC the coordinator does not
// know, and only from a caller that is not confined to a site (auth off, an
// admin): an edge's reports always count for the edge's own site, whatever
// the body says.
type FactsRequest struct {
	V     int             `json:"v"`
	MAC   string          `json:"mac"`
	Site  string          `json:"site,omitempty"`
	Facts json.RawMessage `json:"facts"`
}

// Host states shown beside StateBoot and StateLocal: a machine that
// reported its facts from the discovery system and is not a host yet.
const StateDiscovered = "discovered"

// Discovered is a machine the coordinator does not know that booted the
// discovery system at a site with --unknown discover and reported its facts.
// It waits, discovered, until a policy claims it or an admin assigns it.
type Discovered struct {
	V        int             `json:"v"`
	MAC      string          `json:"mac"` // the MAC it booted from (canonical)
	Site     string          `json:"site"`
	First    time.Time       `json:"first"` // first report
	Last     time.Time       `json:"last"`  // latest report
	Reports  int             `json:"reports"`
	Decision string          `json:"decision,omitempty"` // the last policy evaluation, in words
	Facts    json.RawMessage `json:"facts,omitempty"`
}

// FactsReply is what `host show MAC --facts` shows: the machine as a host
// (when it is one) or as discovered, and its last reported facts.
type FactsReply struct {
	V          int             `json:"v"`
	MAC        string          `json:"mac"`
	State      string          `json:"state"` // the host's, or StateDiscovered
	Host       *Host           `json:"host,omitempty"`
	Discovered *Discovered     `json:"discovered,omitempty"`
	Facts      json.RawMessage `json:"facts,omitempty"`
}

// Policy claims discovered machines whose labels and facts match its
// selector: each becomes a host with the policy's image, labels and
// template. Among the enabled policies that match a machine, the highest
// priority wins (then the name, in order); one that has claimed Max
// machines (0: no limit) is skipped.
type Policy struct {
	V        int               `json:"v"`
	Name     string            `json:"name"`
	Match    string            `json:"match"` // selector (shared/selector)
	Image    string            `json:"image"`
	Template string            `json:"template,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Max      int               `json:"max,omitempty"`
	Priority int               `json:"priority,omitempty"`
	Site     string            `json:"site,omitempty"` // "" = every site
	Disabled bool              `json:"disabled,omitempty"`
	Updated  time.Time         `json:"updated"`
}

// PolicyView is a policy with what it has claimed.
type PolicyView struct {
	Policy
	Claimed []string `json:"claimed,omitempty"` // MACs of the hosts it created
}

// PolicyAddReply is a stored policy and the discovered machines it claimed
// when it was added.
type PolicyAddReply struct {
	V       int        `json:"v"`
	Policy  PolicyView `json:"policy"`
	Claimed []string   `json:"claimed,omitempty"`
}

// PolicyEnableRequest enables or disables a policy.
type PolicyEnableRequest struct {
	V        int    `json:"v"`
	Name     string `json:"name"`
	Disabled bool   `json:"disabled"`
}

// PolicyVerdict is what one policy made of one machine.
type PolicyVerdict struct {
	Policy   string `json:"policy"`
	Priority int    `json:"priority"`
	Matched  bool   `json:"matched"`
	Reason   string `json:"reason"`
}

// PolicyDecision explains which policy decided a machine's fate, and why
// every other did not.
type PolicyDecision struct {
	V        int             `json:"v"`
	MAC      string          `json:"mac"`
	Site     string          `json:"site"`
	State    string          `json:"state"`            // the host's, or StateDiscovered
	Policy   string          `json:"policy,omitempty"` // the deciding policy; "" when none claimed it
	Reason   string          `json:"reason"`
	Verdicts []PolicyVerdict `json:"verdicts,omitempty"` // every policy, highest priority first
}

// Template is an install template (cloud-init, kickstart, preseed,
// ignition, script): Go text/template text that the edge renders per host
// (shared/installtmpl), served at /t/NAME?mac=... and, for cloud-init, in
// the NoCloud layout /t/NAME/<mac>/user-data.
type Template struct {
	V       int       `json:"v"`
	Name    string    `json:"name"`
	Kind    string    `json:"kind"`
	Text    string    `json:"text"`
	Updated time.Time `json:"updated"`
}

// ImportRow is one host of an import file (CSV or YAML), with its line.
// Empty fields keep an existing host's value; labels and vars are set
// (added or replaced), never removed, by an import.
type ImportRow struct {
	Line     int               `json:"line"`
	MAC      string            `json:"mac"`
	Site     string            `json:"site,omitempty"`
	Image    string            `json:"image,omitempty"`
	IP       string            `json:"ip,omitempty"`
	Hostname string            `json:"hostname,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Vars     map[string]string `json:"vars,omitempty"`
}

// MaxImportRows bounds one host.import request; the CLI sends a file in
// chunks of at most this many rows (and well under NATS's message size).
const MaxImportRows = 5000

// HostImportRequest is one chunk of an import. Check only validates: the
// CLI checks every chunk first and, unless told to skip bad lines, applies
// nothing when any line is bad.
type HostImportRequest struct {
	V     int         `json:"v"`
	Check bool        `json:"check,omitempty"`
	Rows  []ImportRow `json:"rows"`
}

// ImportProblem is a refused line and why.
type ImportProblem struct {
	Line   int    `json:"line"`
	MAC    string `json:"mac,omitempty"`
	Reason string `json:"reason"`
}

// HostImportReply counts what a chunk did (or, checked, would do).
type HostImportReply struct {
	V         int             `json:"v"`
	Created   int             `json:"created"`
	Changed   int             `json:"changed"`
	Unchanged int             `json:"unchanged"`
	Refused   []ImportProblem `json:"refused,omitempty"`
	// UnchangedLines, in a checked chunk's reply, are the lines that
	// match their stored host already: the client need not send them
	// again to apply the import, so an unchanged row costs one read.
	UnchangedLines []int `json:"unchanged_lines,omitempty"`
}

// HostBulkSetRequest changes every host a selector matches in one request
// (host set --selector): for now their image.
type HostBulkSetRequest struct {
	V        int    `json:"v"`
	Selector string `json:"selector"`
	Site     string `json:"site,omitempty"` // only this site's hosts
	Image    string `json:"image"`
	DryRun   bool   `json:"dry_run,omitempty"`
}

// HostBulkSetReply says which hosts matched and what became of them.
type HostBulkSetReply struct {
	V         int             `json:"v"`
	Matched   []string        `json:"matched"` // MACs, in order
	Changed   int             `json:"changed"`
	Unchanged int             `json:"unchanged"`
	Refused   []ImportProblem `json:"refused,omitempty"`
}
