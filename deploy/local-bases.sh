#!/usr/bin/env bash
# Make the local base images that stand in for the hub images where no image
# registry is reachable (this repository's test machine): each is a Debian
# root file system made by debootstrap and loaded with `docker import`. Only
# the missing ones are built (about 1-3 minutes each).
#
#   deploy/local-bases.sh [build|runtime|services ...]   (default: all three)
#
#   lectr-local/build:trixie     rustc/cargo 1.85 (the workspace's rust-version),
#                                gcc, python3-venv: the Dockerfile's build stage
#   lectr-local/runtime:trixie   python3, tini, ca-certificates: its runtime stage
#   lectr-local/services:trixie  nginx, PostgreSQL, Redis, Prometheus from Debian:
#                                the stack's other services (deploy/compose.local.yaml)
#
# Both image stages use the same Debian release, so the wheel's glibc matches.
# Needs root, debootstrap and a running Docker daemon; DOCKER selects the client.
set -euo pipefail

DOCKER=${DOCKER:-/usr/bin/docker}
SUITE=${LECTR_BASE_SUITE:-trixie}
MIRROR=${LECTR_DEBIAN_MIRROR:-http://deb.debian.org/debian}

packages() {
    case "$1" in
        build) echo "ca-certificates,python3,python3-venv,rustc,cargo,gcc,libc6-dev" ;;
        runtime) echo "ca-certificates,python3,python3-venv,tini" ;;
        services) echo "ca-certificates,nginx,gettext-base,postgresql,redis-server,prometheus,tini" ;;
        *) echo "unknown base '$1' (build, runtime, services)" >&2; return 2 ;;
    esac
}

make_base() {
    local kind=$1 tag="lectr-local/$1:${SUITE}" include dir
    include=$(packages "$kind")
    if "$DOCKER" image inspect "$tag" >/dev/null 2>&1; then
        return 0
    fi
    dir=$(mktemp -d "${TMPDIR:-/tmp}/lectr-base-${kind}.XXXXXX")
    # The root file system is only needed until it is imported.
    trap 'rm -rf "$dir"' RETURN
    echo "local-bases: debootstrap $SUITE for $tag" >&2
    debootstrap --variant=minbase --include="$include" "$SUITE" "$dir" "$MIRROR" >"$dir.log" 2>&1 \
        || { tail -20 "$dir.log" >&2; rm -f "$dir.log"; return 1; }
    rm -f "$dir.log"
    # mktemp made the directory 0700, and it becomes the image's /: without
    # this no non-root user can reach anything in the image.
    chmod 0755 "$dir"
    # Package lists and caches are not part of a base image.
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
    tar -C "$dir" -c . | "$DOCKER" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
    echo "local-bases: $tag ready" >&2
}

kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(build runtime services)
for kind in "${kinds[@]}"; do
    make_base "$kind"
done
