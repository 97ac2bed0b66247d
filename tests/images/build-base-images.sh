#!/usr/bin/env bash
# Make the local stand-ins for the upstream base images that the Dockerfiles name.
#
# Why: no container registry can be pulled from on the machines that run this project's
# tests, so the Dockerfiles' upstream bases (python:*-slim-bookworm, the Lavalink image) are
# replaced through build args by images made here from Debian's own packages:
#   dimbybot2-test/debian:bookworm     debootstrap minbase, imported with `docker import`
#   dimbybot2-test/python:3.11         + Debian's python3 (3.11) and the host's CA bundle
#   dimbybot2-test/lavalink:4          a tiny Python stand-in that answers GET /version with
#                                      the Lavalink password check (test double: the real
#                                      Lavalink image cannot be pulled here)
# Idempotent: an image that already exists is kept unless REBUILD=1.
set -euo pipefail
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
here=$(cd "$(dirname "$0")" && pwd)
PREFIX=${BASE_IMAGE_PREFIX:-dimbybot2-test}
log() { printf '[base-images] %s\n' "$*" >&2; }
exists() { [[ "${REBUILD:-0}" != 1 ]] && docker image inspect "$1" >/dev/null 2>&1; }

if ! exists "$PREFIX/debian:bookworm"; then
  command -v debootstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq debootstrap >/dev/null; }
  rootfs=$(mktemp -d)
  log "debootstrap --variant=minbase bookworm (about 30 s)"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  # Keep the image small and free of per-run noise: apt lists and logs are re-created on use.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log
  tar -C "$rootfs" -c . | docker import - "$PREFIX/debian:bookworm" >/dev/null
  rm -rf "$rootfs"
fi

# The CA bundle travels in the build context: containers reach PyPI only through a proxy
# whose CA is in the host's bundle.
cp /etc/ssl/certs/ca-certificates.crt "$here/python/ca-certificates.crt"
if ! exists "$PREFIX/python:3.11"; then
  log "building $PREFIX/python:3.11"
  docker buildx build --quiet --load --build-arg "DEBIAN=$PREFIX/debian:bookworm" \
    -t "$PREFIX/python:3.11" "$here/python" >/dev/null
fi
if ! exists "$PREFIX/lavalink:4"; then
  log "building $PREFIX/lavalink:4 (stand-in)"
  docker buildx build --quiet --load --build-arg "PYTHON=$PREFIX/python:3.11" \
    -t "$PREFIX/lavalink:4" "$here/lavalink-standin" >/dev/null
fi
log "ready: $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$PREFIX/*" | tr '\n' ' ')"
