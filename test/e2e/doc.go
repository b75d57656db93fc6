// Package e2e is fleetboot's end-to-end harness: it builds the boot assets (a
// Debian cloud kernel and a busybox initramfs that prints a marker), builds
// network namespaces with a bridge inside them, runs QEMU virtual machines
// (SeaBIOS + iPXE, or OVMF) on that bridge, and runs reference servers
// (dnsmasq, a Go HTTP file server) or fleetboot itself next to them.
//
// Everything here needs root: the tests skip with a message saying so
// otherwise. Nothing is ever bridged to a host interface; servers run inside
// the namespaces the harness creates, on their own veth or loopback.
//
// Each test that boots VMs has its own network, so they run in parallel
// (t.Parallel; `go test -parallel N`, by default as many as CPUs): much of
// a boot is firmware and iPXE waiting on timers, not CPU. Scenarios that
// share a deployment run one after another inside their test.
package e2e
