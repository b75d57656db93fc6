#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian/Ubuntu machine (as root), and
# caches it: a second run only checks. Debian packages come from apt; the MinIO
# server is built from a pinned Go module version into ~/.cache/fleetboot/bin.
set -euo pipefail

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
BIN="${HOME}/.cache/fleetboot/bin"
PKGS=(qemu-system-x86 ipxe-qemu ipxe ovmf busybox-static dnsmasq nginx isc-dhcp-client
      tftp-hpa curl iproute2 cpio kea-admin kea-dhcp4-server tftpd-hpa
      dracut dracut-live dracut-network squashfs-tools xorriso iputils-arping
      qemu-system-arm qemu-efi-aarch64 atftp openipmi ipmitool chromium binutils)
# atftpd (the windowsize reference in test/bench) conflicts with tftpd-hpa:
# both ship /usr/sbin/in.tftpd, and installing one removes the other. The
# benchmark runs it from `apt-get download atftpd`, unpacked into its cache.
# Validators only (cloud-init schema): without recommends, so nothing of it runs
# at boot.
PKGS_NORECOMMENDS=(cloud-init)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=() missing_norec=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
for p in "${PKGS_NORECOMMENDS[@]}"; do installed "$p" || missing_norec+=("$p"); done
if ((${#missing[@]} + ${#missing_norec[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: need root to install: ${missing[*]}" >&2; exit 1
  fi
  echo "deps: installing ${missing[*]} ${missing_norec[*]}"
  apt-get update -qq
  if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ((${#missing_norec[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_norec[@]}" >/dev/null
  fi
  # dnsmasq, nginx, Kea and tftpd-hpa are used as reference servers by tests
  # and benchmarks, started by them on their own addresses; the system
  # services stay off.
  for s in dnsmasq nginx kea-dhcp4-server kea-dhcp6-server kea-dhcp-ddns-server kea-ctrl-agent tftpd-hpa \
           cloud-init cloud-init-local cloud-config cloud-final; do
    systemctl disable --now "$s" >/dev/null 2>&1 || true
  done
fi

# The arm64 e2e fixtures (signed GRUB, kernel, busybox for arm64) are fetched
# with `apt-get download PKG:arm64`: dpkg must know the architecture.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: need root to add the arm64 architecture (dpkg --add-architecture arm64)" >&2; exit 1
  fi
  echo "deps: adding the arm64 package architecture (for apt-get download only)"
  dpkg --add-architecture arm64
  apt-get update -qq
fi

# The Secure Boot e2e fixtures (shim-signed, grub-efi-amd64-signed, the
# -unsigned kernel) and grub-script-check (grub-common, test/grubcheck) are
# fetched by the tests with `apt-get download` and unpacked with dpkg-deb,
# never installed: that needs package lists only.
if ! apt-cache show shim-signed grub-efi-amd64-signed grub-efi-arm64-signed:arm64 grub-common >/dev/null 2>&1; then
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
