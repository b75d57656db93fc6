#!/bin/sh
# The compose stack's init job: with the admin credentials the first
# coordinator wrote (FLEETBOOT_CREDS, over TLS: FLEETBOOT_TLS_CA), register
# the two sites, the demo image (its artifacts go to MinIO through the
# coordinator's store) and one host per site, the busybox client of that
# site; then enrol each site's edge (`fleetboot edge add`) into its box's
# volume. Safe to run again: every registration is a create-or-replace and
# an edge that has its credentials keeps them. The coordinators may still be
# starting (on a loaded machine a new JetStream cluster can take a minute or
# two to elect the leaders of their buckets, and the admin credentials
# appear once one coordinator is up), so the first call is retried for up to
# 5 minutes.
set -eu
fb() { fleetboot "$@"; }
i=0
until [ -e "$FLEETBOOT_CREDS" ] && fb site ls >/dev/null 2>&1; do
	i=$((i + 1))
	[ "$i" -lt 300 ] || { ls -l "$FLEETBOOT_CREDS"; fb site ls; exit 1; }
	sleep 1
done
fb site add site-a --subnet 10.77.1.0/24 --range 10.77.1.100-10.77.1.200
fb site add site-b --subnet 10.77.2.0/24 --range 10.77.2.100-10.77.2.200
fb image add demo --kernel /demo/vmlinuz --initrd /demo/initrd.img --cmdline 'console=ttyS0'
fb image add demo2 --kernel /demo/vmlinuz2 --initrd /demo/initrd.img --cmdline 'console=ttyS0'
fb host set 52:54:00:77:01:01 --site site-a --image demo --hostname client-a
fb host set 52:54:00:77:02:01 --site site-b --image demo --hostname client-b
for s in a b; do
	[ -e "/edge-$s/edge.creds" ] || fb edge add "site-$s" "edge-$s" --out "/edge-$s/edge.creds"
done
fb host ls
echo "fleetboot-init: done"
