// Package bench measures fleetboot's edge against reference servers run
// side by side in the same network namespace and the same run: dnsmasq for
// DHCP and TFTP, nginx for HTTP. Each measurement is bounded in count and
// time. Run with `go test -run '^$' -bench . -benchtime 1x ./test/bench/`
// (root). The fleetboot side is added by fleetboot_bench_test.go (build tag
// e2e) through extraTargets; ratios are reported as metrics.
package bench
