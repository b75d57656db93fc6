//go:build !e2e

package bench

// extraTargets is empty until the fleetboot edge is wired into the binary;
// fleetboot_bench_test.go (build tag e2e) supplies it then.
func extraTargets() []target { return nil }
