#!/usr/bin/env bash
# fleetboot demo: MinIO, the coordinator and an edge run in a private network
# namespace; one QEMU virtual machine network-boots a Debian kernel and a tiny
# initramfs through the edge while its serial console scrolls here; then the
# boot is told back from the events the edge recorded. Everything it starts
# (processes by PID, namespaces, files) is removed on exit, on error and on
# Ctrl-C. Run as root, through `make demo` (which installs the dependencies
# and builds bin/fleetboot first).
#
# Nothing touches the host's network: the bridge lives inside its own
# namespace and the servers listen only on addresses inside it.
set -euo pipefail

BIN=${FLEETBOOT_BIN:-bin/fleetboot}
FIRMWARE=${DEMO_FIRMWARE:-bios} # bios (SeaBIOS + iPXE ROM) or uefi (OVMF's own PXE)
BOOT_LIMIT=${DEMO_BOOT_LIMIT:-300}

if [ "$(id -u)" != 0 ]; then
  echo "demo: needs root (network namespaces, a bridge, a tap for the VM)" >&2
  exit 1
fi
[ -x "$BIN" ] || { echo "demo: $BIN not found: run 'make build' first" >&2; exit 1; }
BIN=$(realpath "$BIN")
MINIO=${FLEETBOOT_MINIO_BIN:-$HOME/.cache/fleetboot/bin/minio}
[ -x "$MINIO" ] || { echo "demo: MinIO server not found at $MINIO: run 'make deps'" >&2; exit 1; }

ID=$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')
SW=fbdemo-$ID-sw  # the switch: a bridge and the VM's tap
SRV=fbdemo-$ID-srv # MinIO, coordinator, edge
WORK=$(mktemp -d /tmp/fleetboot-demo.XXXXXX)
NAMESPACES=()
# Background processes start as `ip netns exec NS [env …] PROGRAM &`, never
# through a shell function: each execs the next, so $! is the program's PID.
PIDS=()

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  bold "cleaning up"
  # Newest first: the VM, the edge, the coordinator, MinIO.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  # Anything still running inside our namespaces was started by us too.
  for ns in "${NAMESPACES[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      kill -9 "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$WORK"
  echo "removed namespaces ${NAMESPACES[*]:-none}, processes ${PIDS[*]:-none} and $WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted"; exit 130' INT TERM

in_srv() { ip netns exec "$SRV" "$@"; }
fb() { in_srv env FLEETBOOT_NATS=nats://127.0.0.1:4222 "${S3ENV[@]}" "$BIN" "$@"; }

# wait_for DESCRIPTION SECONDS COMMAND...: poll until COMMAND succeeds.
wait_for() {
  local what=$1 limit=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "demo: $what not ready after ${limit}s; logs in $WORK:" >&2
      tail -n 20 "$WORK"/*.log >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

bold "boot assets (Debian cloud kernel + busybox initramfs, cached in ~/.cache/fleetboot/e2e)"
eval "$(go run ./test/e2e/cmd/e2e-assets)"
echo "kernel $KERNEL_VERSION: $KERNEL"
echo "initrd: $INITRD"

bold "network: namespace $SW holds a bridge; $SRV (10.77.0.1) hangs off it"
for ns in "$SW" "$SRV"; do
  ip netns add "$ns"
  NAMESPACES+=("$ns")
  ip -n "$ns" link set lo up
done
ip -n "$SW" link add br0 type bridge stp_state 0 forward_delay 0
ip netns exec "$SW" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip -n "$SW" link set br0 up
ip -n "$SW" link add vh1 type veth peer name eth0 netns "$SRV"
ip -n "$SW" link set vh1 master br0 up
# No router on this segment, as on an IPv4-only provisioning VLAN: IPv6 stays
# on for the edge, whose router advertisements (--ipv6-ra auto, lifetime 0)
# end iPXE's IPv6 autoconfiguration wait (~16 s without).
ip -n "$SRV" addr add 10.77.0.1/24 dev eth0
ip -n "$SRV" addr add fd77::1/64 dev eth0 nodad
ip -n "$SRV" link set eth0 up

bold "MinIO (S3 artifact store) on 127.0.0.1:9000 inside $SRV"
S3ENV=(FLEETBOOT_S3_ACCESS_KEY=fleetbootdemo FLEETBOOT_S3_SECRET_KEY=fleetboot-demo-secret)
mkdir -p "$WORK/minio"
ip netns exec "$SRV" env MINIO_ROOT_USER=fleetbootdemo MINIO_ROOT_PASSWORD=fleetboot-demo-secret MINIO_BROWSER=off MINIO_UPDATE=off \
  "$MINIO" server --quiet --address 127.0.0.1:9000 --console-address 127.0.0.1:9001 "$WORK/minio" >"$WORK/minio.log" 2>&1 &
PIDS+=($!)
wait_for MinIO 60 in_srv curl -fsS http://127.0.0.1:9000/minio/health/ready

bold "coordinator: embedded NATS on 127.0.0.1:4222, artifacts in s3://fleetboot"
echo "\$ fleetboot coordinator --data $WORK/coordinator --nats-listen 127.0.0.1:4222 --store 's3://fleetboot?endpoint=127.0.0.1:9000'"
ip netns exec "$SRV" env "${S3ENV[@]}" "$BIN" coordinator --data "$WORK/coordinator" --nats-listen 127.0.0.1:4222 \
  --store 's3://fleetboot?endpoint=127.0.0.1:9000' >"$WORK/coordinator.log" 2>&1 &
PIDS+=($!)
wait_for coordinator 60 fb site ls

MAC=52:54:00:$(head -c3 /dev/urandom | od -An -tx1 | tr -d '\n' | sed 's/^ //; s/ /:/g')
bold "desired state: a site, an image, a host"
run() { echo "\$ fleetboot $*"; fb "$@"; }
run site add lab --subnet 10.77.0.0/24 --range 10.77.0.100-10.77.0.200 --router 10.77.0.1
run image add demo --kernel "$KERNEL" --initrd "$INITRD" \
  --cmdline 'console=ttyS0 panic=-1 fleetboot.mac={{mac}} fleetboot.image={{image}} hostname={{hostname}}'
run host set "$MAC" --image demo --site lab --hostname demo-vm

bold "edge: DHCP on eth0, TFTP on :69, HTTP on :8080 (cache filled from MinIO)"
echo "\$ fleetboot edge --name edge1 --site lab --interface eth0 ..."
ip netns exec "$SRV" env FLEETBOOT_NATS=nats://127.0.0.1:4222 "${S3ENV[@]}" "$BIN" edge --coordinator nats://127.0.0.1:4222 \
  --name edge1 --site lab --interface eth0 --state-dir "$WORK/edge-state" --cache-dir "$WORK/edge-cache" \
  --http-listen 10.77.0.1:8080 --tftp-listen 10.77.0.1:69 >"$WORK/edge.log" 2>&1 &
PIDS+=($!)
wait_for "edge HTTP" 60 in_srv curl -fsS -o /dev/null http://10.77.0.1:8080/metrics
wait_for "edge state" 60 grep -q 'state in sync.*bucket=hosts' "$WORK/edge.log"

bold "VM $MAC powers on ($FIRMWARE, software emulation): its serial console follows"
ip -n "$SW" tuntap add dev tap0 mode tap
ip -n "$SW" link set tap0 master br0 up
QEMU=(qemu-system-x86_64 -name fleetboot-demo -accel tcg -m 512 -smp 1 -nographic -monitor none
  -serial "file:$WORK/console.log" -no-reboot
  -netdev tap,id=n0,ifname=tap0,script=no,downscript=no)
if [ "$FIRMWARE" = uefi ]; then
  cp /usr/share/OVMF/OVMF_VARS_4M.fd "$WORK/vars.fd"
  QEMU+=(-device "virtio-net-pci,netdev=n0,mac=$MAC,romfile=" -machine q35
    -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
    -drive "if=pflash,format=raw,unit=1,file=$WORK/vars.fd")
else
  QEMU+=(-device "virtio-net-pci,netdev=n0,mac=$MAC" -machine pc -boot order=n)
fi
: >"$WORK/console.log"
START=$SECONDS
ip netns exec "$SW" "${QEMU[@]}" </dev/null >"$WORK/qemu.log" 2>&1 &
VM=$!
PIDS+=("$VM")
tail -n +1 -f "$WORK/console.log" &
TAIL=$!
PIDS+=("$TAIL")
result=timeout
while ((SECONDS - START < BOOT_LIMIT)); do
  if grep -qa 'FLEETBOOT-MARKER' "$WORK/console.log"; then result=marker; break; fi
  if ! kill -0 "$VM" 2>/dev/null; then result=exited; break; fi
  sleep 0.5
done
took=$((SECONDS - START))
# The initramfs powers the VM off after the marker.
for _ in $(seq 50); do kill -0 "$VM" 2>/dev/null || break; sleep 0.1; done
sleep 0.3
kill "$TAIL" 2>/dev/null || true

bold "what the edge recorded for $MAC (fleetboot events --host $MAC)"
# The edge publishes its events asynchronously: give them a moment to land.
for _ in $(seq 40); do
  fb events --host "$MAC" --kind artifact.end 2>/dev/null | grep -q artifact.end && break
  sleep 0.25
done
fb events --host "$MAC"
bold "the same boot as a timeline (fleetboot host timeline $MAC)"
fb host timeline "$MAC" --boots 1 || true

case $result in
marker)
  bold "done: the VM reached userspace through the edge in ${took}s (power-on to marker)"
  grep -a 'FLEETBOOT-MARKER' "$WORK/console.log" | tr -d '\r'
  ;;
*)
  bold "FAILED: no marker within ${took}s ($result); last edge log lines:"
  tail -n 30 "$WORK/edge.log"
  exit 1
  ;;
esac
