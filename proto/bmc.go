package proto

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Power control through a host's BMC. The host record carries the BMC's
// address and user and its password sealed (nkeys xkeys: curve25519,
// XSalsa20-Poly1305) to the curve key of each edge of the host's site, which
// every edge publishes in its heartbeat (EdgeStatus.XKey) on a subject its
// NATS permissions confine to its own name. Only that edge holds the seed:
// the password is in clear only in the CLI that sealed it and in the edge,
// for the ipmitool call it makes.

// Power actions.
const (
	PowerOn     = "on"
	PowerOff    = "off"
	PowerCycle  = "cycle"
	PowerStatus = "status"
)

// PowerActions lists the actions in the order help shows them.
var PowerActions = []string{PowerOn, PowerOff, PowerCycle, PowerStatus}

// EventPower is a power action an edge took on a host's BMC: detail action,
// pxe ("true" when the next boot was set to PXE first), result ("ok" or
// "failed"), power (the state after it: "on" or "off") and error.
const EventPower = "power"

// SubjectPowerPrefix: the coordinator asks an edge to drive a BMC with a
// request to fleetboot.power.<site>.<edge>; only that edge may subscribe.
const SubjectPowerPrefix = "fleetboot.power"

// PowerSubject is where an edge takes power requests.
func PowerSubject(site, edge string) string { return SubjectPowerPrefix + "." + site + "." + edge }

// BMC is a host's baseboard management controller (IPMI over LAN, lanplus).
type BMC struct {
	Address string `json:"address"` // HOST:PORT
	User    string `json:"user"`
	// Sealed is the password, sealed to each edge of the host's site that
	// may drive it, by edge name.
	Sealed map[string]SealedSecret `json:"sealed"`
}

// SealedSecret is a secret only the holder of the curve key XKey can open.
type SealedSecret struct {
	XKey   string `json:"xkey"`   // the recipient edge's public curve key
	Sender string `json:"sender"` // the one-time public curve key it was sealed with
	Box    []byte `json:"box"`
}

// HostBMCRequest sets a host's BMC. The CLI seals the password itself (to
// the keys host.bmckeys.get names): the coordinator never sees it.
type HostBMCRequest struct {
	V       int                     `json:"v"`
	MAC     string                  `json:"mac"`
	Address string                  `json:"address"`
	User    string                  `json:"user"`
	Sealed  map[string]SealedSecret `json:"sealed"`
}

// EdgeKey is an edge's public curve key.
type EdgeKey struct {
	Edge string `json:"edge"`
	XKey string `json:"xkey"`
}

// BMCKeys answers host.bmckeys.get: the edges of the host's site that
// published a curve key.
type BMCKeys struct {
	V    int       `json:"v"`
	MAC  string    `json:"mac"`
	Site string    `json:"site"`
	Keys []EdgeKey `json:"keys"`
}

// PowerRequest asks for a power action on a host (CLI → coordinator, and
// coordinator → edge).
type PowerRequest struct {
	V      int    `json:"v"`
	MAC    string `json:"mac"`
	Action string `json:"action"` // PowerOn, PowerOff, PowerCycle, PowerStatus
	PXE    bool   `json:"pxe,omitempty"`
}

// PowerReply is what the edge did.
type PowerReply struct {
	V      int    `json:"v"`
	MAC    string `json:"mac"`
	Edge   string `json:"edge"`
	Action string `json:"action"`
	PXE    bool   `json:"pxe,omitempty"`
	Power  string `json:"power"` // "on" or "off" after the action
	Error  string `json:"error,omitempty"`
}

// ValidPowerAction checks an action name.
func ValidPowerAction(a string) error {
	for _, x := range PowerActions {
		if a == x {
			return nil
		}
	}
	return fmt.Errorf("invalid power action %q: want %s", a, strings.Join(PowerActions, ", "))
}

// ParseBMCAddress checks HOST[:PORT] (IPv6 in brackets) and returns it with
// the port, 623 (IPMI's) when none is given.
func ParseBMCAddress(s string) (string, error) {
	host, port := s, "623"
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	} else if strings.Count(s, ":") == 1 {
		return "", fmt.Errorf("invalid BMC address %q: want HOST[:PORT]", s)
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("invalid BMC address %q: bad port", s)
	}
	if host == "" || (net.ParseIP(host) == nil && ValidHostname(host) != nil) {
		return "", fmt.Errorf("invalid BMC address %q: want an IP address or a host name", s)
	}
	return net.JoinHostPort(host, strconv.Itoa(n)), nil
}

// ValidBMCUser checks an IPMI user name (at most 16 bytes in IPMI 2.0).
func ValidBMCUser(u string) error {
	if u == "" || len(u) > 16 || strings.ContainsFunc(u, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return fmt.Errorf("invalid BMC user %q: want 1 to 16 printable characters without spaces", u)
	}
	return nil
}
