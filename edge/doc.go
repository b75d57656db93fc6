// Package edge holds the agent that runs on each site: it answers DHCP and
// TFTP on its segment, renders boot scripts per MAC and serves artifacts from
// its disk cache. Its parts live in the sub-packages (dhcp, tftp, httpboot,
// cache, sync, events, state); package edge wires them together.
package edge
