#!/usr/bin/env bash
# Build the gateway image (`make image`; the container tests run it too).
#
#   deploy/image.sh [TAG]          TAG defaults to lectr:local
#   LECTR_BASES=hub deploy/image.sh   the Dockerfile's hub images instead of local ones
#
# On a machine like this repository's test machine (root, Debian, no image
# registry reachable) it does everything a fresh clone needs: installs
# docker.io and debootstrap when missing, starts dockerd (vfs storage) when no
# daemon answers and stops it again afterwards (only the one it started; set
# LECTR_KEEP_DOCKERD=1 to keep it), makes the local base images that are
# missing (deploy/local-bases.sh) and builds with BuildKit. The machine's CA
# bundle ($SSL_CERT_FILE) goes to the steps that install from the package
# registries as a build secret, never into a layer. Cargo's registry and
# target directory are BuildKit cache mounts, so a rebuild after a source
# change compiles only the workspace crate.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-lectr:local}
BASES=${LECTR_BASES:-local}
# Debian's docker.io client (20.10): a newer one on the PATH may demand the
# buildx plugin, which cannot be installed here.
DOCKER=${DOCKER:-/usr/bin/docker}
export DOCKER DOCKER_BUILDKIT=1

need=()
[ -x "$DOCKER" ] || need+=(docker.io)
command -v debootstrap >/dev/null || [ "$BASES" != local ] || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    echo "image: installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }
fi

if ! "$DOCKER" info >/dev/null 2>&1; then
    log=$(mktemp "${TMPDIR:-/tmp}/lectr-dockerd.XXXXXX.log")
    echo "image: starting dockerd (log $log)" >&2
    dockerd --storage-driver=vfs >"$log" 2>&1 &
    pid=$!
    if [ "${LECTR_KEEP_DOCKERD:-0}" != 1 ]; then
        trap 'kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; true' EXIT
    fi
    for _ in $(seq 300); do
        "$DOCKER" info >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
        sleep 0.1
    done
    "$DOCKER" info >/dev/null
fi

args=(--network host -f deploy/Dockerfile -t "$TAG")
if [ "$BASES" = local ]; then
    deploy/local-bases.sh build runtime
    args+=(--build-arg BUILD_IMAGE=lectr-local/build:trixie --build-arg RUNTIME_IMAGE=lectr-local/runtime:trixie)
fi
ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$ca" ] && args+=(--secret "id=ca_bundle,src=$ca")
start=$(date +%s)
"$DOCKER" build "${args[@]}" ${LECTR_BUILD_FLAGS:-} .
echo "image: $TAG built in $(($(date +%s) - start)) s, $("$DOCKER" image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')" >&2
