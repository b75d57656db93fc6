package proto

import "encoding/json"

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

// FactsRequest carries what an installer reported about a machine.
type FactsRequest struct {
	V     int             `json:"v"`
	MAC   string          `json:"mac"`
	Facts json.RawMessage `json:"facts"`
}
