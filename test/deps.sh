#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian/Ubuntu machine (as root), and
# caches it: a second run only checks. Debian packages come from apt; the MinIO
# server is built from a pinned Go module version into ~/.cache/fleetboot/bin.
set -euo pipefail

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
BIN="${HOME}/.cache/fleetboot/bin"
PKGS=(qemu-system-x86 ipxe-qemu ipxe ovmf busybox-static dnsmasq nginx isc-dhcp-client
      tftp-hpa curl iproute2 cpio kea-admin kea-dhcp4-server tftpd-hpa)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: need root to install: ${missing[*]}" >&2; exit 1
  fi
  echo "deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # dnsmasq, nginx, Kea and tftpd-hpa are used as reference servers by tests
  # and benchmarks, started by them on their own addresses; the system
  # services stay off.
  for s in dnsmasq nginx kea-dhcp4-server kea-dhcp6-server kea-dhcp-ddns-server kea-ctrl-agent tftpd-hpa; do
    systemctl disable --now "$s" >/dev/null 2>&1 || true
  done
fi

# The Secure Boot e2e fixtures (shim-signed, grub-efi-amd64-signed, the
# -unsigned kernel) are fetched by the tests with `apt-get download` and
# unpacked with dpkg-deb, never installed: that needs package lists only.
if ! apt-cache show shim-signed grub-efi-amd64-signed >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: need root to run apt-get update (package lists for apt-get download)" >&2; exit 1
  fi
  echo "deps: apt-get update (package lists for the Secure Boot fixtures)"
  apt-get update -qq
fi

if [ ! -x "$BIN/minio" ] || [ "$(cat "$BIN/minio.version" 2>/dev/null)" != "$MINIO_VERSION" ]; then
  echo "deps: building MinIO server $MINIO_VERSION (takes a few minutes once)"
  mkdir -p "$BIN"
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "github.com/minio/minio@$MINIO_VERSION"
  echo "$MINIO_VERSION" > "$BIN/minio.version"
fi
echo "deps: ok (minio at $BIN/minio)"
