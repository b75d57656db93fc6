#!/usr/bin/env bash
# Builds the static (CGO_ENABLED=0) binaries the container images COPY in:
# fleetboot from this checkout, nats-server and MinIO from pinned Go module
# versions (the same ones the tests use), cached under
# ~/.cache/fleetboot/bin/static so a second run only checks. Nothing is pulled
# from a container registry: the images are FROM scratch.
set -euo pipefail

NATS_VERSION=v2.15.2
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
STATIC="${HOME}/.cache/fleetboot/bin/static"
mkdir -p "$STATIC"

# pinned NAME MODULE VERSION: go install MODULE@VERSION unless the cached
# binary was built from that version.
pinned() {
  local name=$1 mod=$2 ver=$3
  if [ -x "$STATIC/$name" ] && [ "$(cat "$STATIC/$name.version" 2>/dev/null)" = "$ver" ]; then
    return
  fi
  echo "build-static: building $name $ver (CGO_ENABLED=0; takes a few minutes once)"
  GOBIN="$STATIC" CGO_ENABLED=0 GOFLAGS=-mod=mod go install -trimpath -ldflags '-s -w' "$mod@$ver"
  echo "$ver" > "$STATIC/$name.version"
}

pinned nats-server github.com/nats-io/nats-server/v2 "$NATS_VERSION"
pinned minio github.com/minio/minio "$MINIO_VERSION"
echo "build-static: ok ($STATIC)"
