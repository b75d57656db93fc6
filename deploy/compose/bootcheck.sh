#!/bin/sh
# bootcheck: one network boot, as far as a busybox goes. Ask the site's edge
# for a lease as iPXE does (PXE vendor class, arch 0, user class "iPXE"), fetch
# the boot script the lease points at, then the kernel it names. Prints one
# "BOOTCHECK OK ..." line with what it got, or "BOOTCHECK FAIL <step>".
set -u
# (busybox 1.35 wget -T segfaults in the static build: timeout(1) bounds it instead)
iface=${1:-eth0}
fail() { echo "BOOTCHECK FAIL $*"; exit 1; }
rm -f /tmp/lease /tmp/boot.ipxe /tmp/kernel
udhcpc -i "$iface" -f -q -n -t 5 -T 2 -s /usr/share/udhcpc/default.script \
	-V PXEClient:Arch:00000:UNDI:002001 -x 0x5d:0000 -x 0x4d:69505845 >/tmp/udhcpc.log 2>&1 \
	|| fail "dhcp: no lease: $(tail -n 1 /tmp/udhcpc.log)"
[ -f /tmp/lease ] || fail "dhcp: udhcpc script wrote no lease: $(tail -n 1 /tmp/udhcpc.log)"
. /tmp/lease
[ -n "$boot_file" ] || fail "dhcp: lease $ip without a boot file"
mac=$(cat "/sys/class/net/$iface/address")
url="$boot_file?mac=$mac&arch=x86_64&platform=pcbios"
timeout 30 wget -q -O /tmp/boot.ipxe "$url" || fail "script: GET $url"
kernel=$(awk '$1 == "kernel" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /tmp/boot.ipxe)
# The kernel URL is http://EDGE/artifacts/<image>/<file>?mac=...
image=$(echo "$kernel" | sed -n 's|.*/artifacts/\([^/]*\)/.*|\1|p')
[ -n "$kernel" ] || fail "script: no kernel line in $url: $(grep '^echo' /tmp/boot.ipxe | head -n 1)"
timeout 60 wget -q -O /tmp/kernel "$kernel" || fail "kernel: GET $kernel"
echo "BOOTCHECK OK mac=$mac lease=$ip image=$image bytes=$(wc -c </tmp/kernel) sha256=$(sha256sum /tmp/kernel | cut -d' ' -f1) kernel=$kernel"
