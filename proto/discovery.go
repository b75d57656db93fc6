package proto

// The discovery system (`fleetboot discover`) talks to the edge that booted
// it over HTTP, with the callback token the edge rendered into its kernel
// command line (fleetboot.token=, and the edge's URL as fleetboot.edge=).
const (
	// DiscoveryFactsPath takes a POST of Facts (JSON), ?mac=&token=.
	DiscoveryFactsPath = "/api/v1/facts"
	// DiscoveryNextPath answers a GET ?mac=&token= with a NextAnswer.
	DiscoveryNextPath = "/api/v1/next"
)

// Actions of a NextAnswer.
const (
	NextWait   = "wait"   // nothing assigned yet: ask again later
	NextReboot = "reboot" // the machine is assigned (an image, or local boot): reboot into it
)

// NextAnswer is the edge's answer to the discovery system's "what next?",
// from the edge's synced state.
type NextAnswer struct {
	V      int    `json:"v"`
	Action string `json:"action"`          // NextWait or NextReboot
	Image  string `json:"image,omitempty"` // the image it will boot, if any
	Reason string `json:"reason"`
}

// EventDiscoveryNext: the edge told a discovery system to reboot into its
// assignment (detail action, image, reason). Waits are not recorded: they
// repeat every few seconds.
const EventDiscoveryNext = "discovery.next"
