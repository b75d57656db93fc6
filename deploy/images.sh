#!/usr/bin/env bash
# Builds the container images of the compose stack, all FROM scratch from
# binaries built or installed on this host (nothing is pulled):
#   fleetboot:dev         the static fleetboot binary + Debian's iPXE binaries
#   fleetboot-nats:dev    nats-server, pinned, CGO_ENABLED=0
#   fleetboot-minio:dev   MinIO, pinned, CGO_ENABLED=0
#   fleetboot-client:dev  busybox-static + the boot check client
#   fleetboot-init:dev    busybox-static + fleetboot + the secrets and init jobs,
#                         deploy/nats/*.conf + demo artifacts
# Each build context is a temporary directory holding only that image's files.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
TAG=${TAG:-dev}
STATIC="${HOME}/.cache/fleetboot/bin/static"

command -v docker >/dev/null || { echo "images: docker is not installed" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "images: no Docker daemon reachable (docker info failed)" >&2; exit 1; }
[ -x /bin/busybox ] && file -L /bin/busybox | grep -q 'statically linked' \
  || { echo "images: need a static /bin/busybox (apt-get install busybox-static)" >&2; exit 1; }
for f in undionly.kpxe ipxe.efi snponly.efi; do
  [ -e "/usr/lib/ipxe/$f" ] || { echo "images: /usr/lib/ipxe/$f missing (apt-get install ipxe)" >&2; exit 1; }
done

./deploy/build-static.sh

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx"/{fleetboot/ipxe,nats,minio,client,init/demo,init/nats}

CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$ctx/fleetboot/fleetboot" ./cmd/fleetboot
cp -L /usr/lib/ipxe/{undionly.kpxe,ipxe.efi,snponly.efi} "$ctx/fleetboot/ipxe/"
cp "$STATIC/nats-server" "$ctx/nats/"
cp "$STATIC/minio" "$ctx/minio/"
cp /bin/busybox deploy/compose/udhcpc.script "$ctx/client/"
cp deploy/compose/bootcheck.sh "$ctx/client/"
cp /bin/busybox "$ctx/fleetboot/fleetboot" deploy/compose/init.sh deploy/compose/secrets.sh "$ctx/init/"
cp deploy/nats/cluster.conf deploy/nats/leaf.conf "$ctx/init/nats/"
# Demo artifacts: two different "kernels" and an initrd, small and
# deterministic, so a client can tell which image it booted by the digest.
for name in vmlinuz vmlinuz2 initrd.img; do
  { echo "fleetboot demo artifact $name"; head -c $((512 * 1024)) /dev/zero | tr '\0' "${name: -1}"; } > "$ctx/init/demo/$name"
done

build() { # build NAME DOCKERFILE CONTEXT
  echo "images: $1"
  DOCKER_BUILDKIT=0 docker build -q -f "deploy/$2" -t "$1" "$ctx/$3" >/dev/null
}
build "fleetboot:$TAG" fleetboot.Dockerfile fleetboot
build "fleetboot-nats:$TAG" nats.Dockerfile nats
build "fleetboot-minio:$TAG" minio.Dockerfile minio
build "fleetboot-client:$TAG" busybox.Dockerfile client
build "fleetboot-init:$TAG" init.Dockerfile init
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^fleetboot(-[a-z]+)?:$TAG "
