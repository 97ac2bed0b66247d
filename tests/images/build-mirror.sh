#!/usr/bin/env bash
# Fill the local mirror registry's storage with the images the pipeline and its Dockerfiles
# name, made here (no container registry can be pulled from on these machines). Each is a
# TEST DOUBLE for the upstream image of the same name and tag (same names, different bytes):
#   docker.io/library/python:3.11.14-slim-bookworm  <- dimbybot2-test/python:3.11 (Debian's python3)
#   ghcr.io/lavalink-devs/lavalink:4.2.2            <- dimbybot2-test/lavalink:4 (a tiny /version server)
#   docker.io/moby/buildkit:v0.26.2                 <- tests/images/buildkit (BuildKit built from its Go module)
#   docker.io/library/registry:2.8.3                <- tests/images/registry (Debian's docker-registry)
# Names and tags are read from ci/pins.py and the Dockerfiles' ARG defaults, so a pin change
# re-makes the mirror. tests/mirror.py serves the storage read-only; BuildKit (and the Dagger
# engine) use it as the mirror of docker.io (path /) and ghcr.io (path /ghcr).
#   build-mirror.sh BUILDKIT_BIN_DIR      (the directory tests/engine/build.sh prints)
#   DIMBYBOT2_MIRROR_DIR                  the storage (default /var/lib/dimbybot2-mirror)
# Idempotent: nothing is pushed again while the sources are unchanged.
set -euo pipefail
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:?usage: build-mirror.sh BUILDKIT_BIN_DIR}
storage=${DIMBYBOT2_MIRROR_DIR:-/var/lib/dimbybot2-mirror}
PREFIX=${BASE_IMAGE_PREFIX:-dimbybot2-test}
log() { printf '[mirror] %s\n' "$*" >&2; }

pin() { sed -n "s/^$1 = \"\\(.*\\)\"$/\\1/p" "$root/ci/pins.py"; }
arg_default() { sed -n "s/^ARG $2=\\(.*\\)$/\\1/p" "$root/$1"; }
buildkit_ref=$(pin BUILDKIT_IMAGE); registry_ref=$(pin REGISTRY_IMAGE); python_ref=$(pin PYTHON_IMAGE)
bot_python=$(arg_default Dockerfile PYTHON_IMAGE)
lavalink_ref=$(arg_default Lavalink/Dockerfile LAVALINK_IMAGE)
[ "$bot_python" = "$python_ref" ] || { echo "error: Dockerfile's PYTHON_IMAGE ($bot_python) is not ci/pins.py's ($python_ref)" >&2; exit 1; }
for ref in "$buildkit_ref" "$registry_ref" "$python_ref" "$lavalink_ref"; do [ -n "$ref" ] || { echo "error: a pin could not be read" >&2; exit 1; }; done

# docker.io/x:t -> library/x:t at /; ghcr.io/o/x:t -> ghcr/o/x:t (the mirror's path prefix).
path_of() {
  case "$1" in
    ghcr.io/*) echo "ghcr/${1#ghcr.io/}" ;;
    docker.io/*) path_of "${1#docker.io/}" ;;
    */*) echo "$1" ;;
    *) echo "library/$1" ;;
  esac
}

# The mirror's inputs: what each image is made from. Unchanged inputs, nothing to do.
stamp=$({ for ref in "$python_ref" "$lavalink_ref" "$buildkit_ref" "$registry_ref"; do echo "$ref"; done
  for image in "$PREFIX/debian:bookworm" "$PREFIX/python:3.11" "$PREFIX/lavalink:4"; do docker image inspect --format '{{.Id}}' "$image"; done
  cat "$bin/buildkitd" "$bin/buildctl" "$here"/buildkit/* "$here"/registry/*; } | sha256sum | cut -d' ' -f1)
if [ -f "$storage/.stamp" ] && [ "$(cat "$storage/.stamp")" = "$stamp" ]; then
  log "up to date in $storage"; exit 0
fi

# Make the two images that are built here from binaries and Debian's packages.
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp -r "$here/buildkit" "$work/buildkit"; cp "$bin/buildkitd" "$bin/buildctl" "$work/buildkit/"
cp -r "$here/registry" "$work/registry"
docker buildx build --quiet --load --build-arg "DEBIAN=$PREFIX/debian:bookworm" -t "$PREFIX/buildkit:pin" "$work/buildkit" >/dev/null
docker buildx build --quiet --load --build-arg "DEBIAN=$PREFIX/debian:bookworm" -t "$PREFIX/registry:pin" "$work/registry" >/dev/null
sources=("$PREFIX/python:3.11=$python_ref" "$PREFIX/lavalink:4=$lavalink_ref" "$PREFIX/buildkit:pin=$buildkit_ref" "$PREFIX/registry:pin=$registry_ref")

rm -rf "$storage"; mkdir -p "$storage"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/config.yml" <<YML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $storage}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/config.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null; wait $registry_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
for pair in "${sources[@]}"; do
  src=${pair%%=*}; dest="127.0.0.1:$port/$(path_of "${pair#*=}")"
  docker tag "$src" "$dest"
  docker push --quiet "$dest" >/dev/null
  docker rmi "$dest" >/dev/null  # no mirror tags left on the host's daemon
  log "$dest <- $src"
done
docker rmi "$PREFIX/buildkit:pin" "$PREFIX/registry:pin" >/dev/null
echo "$stamp" > "$storage/.stamp"
log "ready in $storage"
