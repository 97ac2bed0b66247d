#!/usr/bin/env bash
# Make the engine image dimbybot2-test/dagger-engine:<version> on the host's Docker from the
# binaries tests/engine/build-dagger.sh printed (a test double for the official image: see
# tests/engine/image/Dockerfile). Its registry mirrors point at 127.0.0.1:5000, where
# tests/dagger_engine.py serves the mirror (tests/images/build-mirror.sh) inside the engine's
# own network namespace. Idempotent: kept while its inputs are unchanged.
#   build-image.sh DAGGER_BIN_DIR
set -euo pipefail
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
here=$(cd "$(dirname "$0")/image" && pwd)
bin=${1:?usage: build-image.sh DAGGER_BIN_DIR}
version=$(basename "$bin"); version=${version#dagger-}
tag="${BASE_IMAGE_PREFIX:-dimbybot2-test}/dagger-engine:$version"
stamp=$( { cat "$here"/* "$bin"/*; /usr/bin/docker image inspect --format '{{.Id}}' "${BASE_IMAGE_PREFIX:-dimbybot2-test}/debian:bookworm"; \
  sha256sum /etc/ssl/certs/ca-certificates.crt; } | sha256sum | cut -c1-16)
if [ "$(docker image inspect --format '{{index .Config.Labels "dimbybot2.inputs"}}' "$tag" 2>/dev/null)" = "$stamp" ]; then
  echo "[engine-image] $tag up to date" >&2; echo "$tag"; exit 0
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp -r "$here"/. "$work/"; mkdir -p "$work/bin"; cp "$bin"/* "$work/bin/"
cp /etc/ssl/certs/ca-certificates.crt "$work/host-ca.crt"
docker buildx build --quiet --load --label "dimbybot2.inputs=$stamp" \
  --build-arg "DEBIAN=${BASE_IMAGE_PREFIX:-dimbybot2-test}/debian:bookworm" -t "$tag" "$work" >/dev/null
echo "[engine-image] built $tag" >&2
echo "$tag"
