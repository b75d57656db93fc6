// Package bench measures fleetboot's edge against reference servers run
// side by side in the same network namespace and the same run: dnsmasq for
// DHCP and TFTP, nginx for HTTP. Each measurement is bounded in count and
// time. Run with `go test -run '^$' -bench . -benchtime 1x ./test/bench/`
// (root). The fleetboot side (the built binary's coordinator and edge) is
// added by fleetboot_bench_test.go through extraTargets; each benchmark logs
// fleetboot's rate as a ratio to the reference's.
package bench
