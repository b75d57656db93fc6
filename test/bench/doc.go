// Package bench measures fleetboot against the servers people use today,
// run side by side in network namespaces the benchmarks create, in the same
// run, and prints each figure with fleetboot's ratio to each reference:
//
//   - DHCP: perfdhcp (kea-admin) as a relay, rate stepped up until drops
//     appear, against dnsmasq and Kea (BenchmarkDHCP);
//   - TFTP: a 16 MiB file at blksize 512 and 1468 against tftpd-hpa and
//     dnsmasq (BenchmarkTFTP);
//   - HTTP: cache hits against nginx: a 1 GiB artifact to 1, 8 and 64
//     clients at once, a 4 KiB artifact's requests/s, and the per-MAC
//     script at 100 000 hosts (scripts/s, p50, p99) against nginx serving a
//     static 1 KiB file (BenchmarkHTTP); cold misses, one client on 1 GiB
//     and 50 at once on 128 MiB, against a direct GET from MinIO
//     (BenchmarkHTTPCold);
//   - boot: power-on to userspace of QEMU VMs (BIOS iPXE ROM, UEFI PXE
//     with snponly.efi, a BIOS chain through undionly.kpxe) on segments
//     without a router, fleetboot's edge sending its own IPv6 router
//     advertisements, against dnsmasq with enable-ra and Go's file server
//     (BenchmarkBoot);
//   - boot storm: 100 and 1 000 simulated machines powered on at once
//     (firmware DHCP, loader over TFTP, iPXE's DHCP, script, 10 MiB kernel
//     and 50 MiB initrd over HTTP) against dnsmasq with nginx and against
//     the link bound of the same bridge (BenchmarkBootStorm);
//   - scale: 10 000 hosts, 10 sites, 3 edges: host set to edge serving it,
//     API requests per second, edge memory with 100 000 hosts
//     (BenchmarkScale).
//
// Every load is bounded in count and time; nothing passes or fails on a
// timing. Each figure is also logged as a "SUMMARY|" row, which `make bench`
// gathers into a table. Run as root with
// `go test -v -run '^$' -bench . -benchtime 1x ./test/bench/`.
package bench
