// Package dhcp is the edge's DHCPv4 server: it hands out addresses on the
// site's networks (full and reservations-only modes) or answers only network
// boot clients next to another DHCP server (proxy mode), and tells every
// firmware which bootstrap to load, following the boot chain of DESIGN.md §1.
//
// The decision is a pure step, Handler.Handle: a request and its context in,
// a reply out (nil means stay silent). It parses the packet into a Machine,
// asks the Policy (the edge's desired state) and builds the reply. Server is
// the thin adapter that owns the sockets, broadcasts and relay replies.
package dhcp
