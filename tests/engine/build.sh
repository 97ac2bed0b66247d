#!/usr/bin/env bash
# Build BuildKit's buildkitd and buildctl at the pipeline's pin (ci/pins.py: moby/buildkit:v0.26.2)
# from the Go module proxy, pinned by tests/engine/go.mod + go.sum.
#
# Everything Go keeps (module cache, build cache, the binaries) lives in one directory outside
# the work tree, so a second run on the same machine only re-links; a fresh machine builds from
# nothing. Prints the binaries' directory on stdout.
#   DIMBYBOT2_GO_CACHE   that directory (default /var/cache/dimbybot2-go)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${DIMBYBOT2_GO_CACHE:-/var/cache/dimbybot2-go}
version=$(sed -n 's/^[[:space:]]*github.com\/moby\/buildkit \(v[0-9.]*\).*$/\1/p' "$here/go.mod")
pin=$(sed -n 's/^BUILDKIT_IMAGE = "moby\/buildkit:\(v[0-9.]*\)"$/\1/p' "$here/../../ci/pins.py")
[ -n "$version" ] && [ "$version" = "$pin" ] || {
  echo "error: tests/engine/go.mod requires BuildKit '$version' but ci/pins.py pins '$pin'" >&2; exit 1; }
bin="$cache/bin/buildkit-$version"
mkdir -p "$cache/mod" "$cache/build" "$bin"
# One build at a time (tests run this script too): go build rewrites the binaries in place.
exec 9>"$cache/.build-buildkit.lock"
flock 9
export GOMODCACHE="$cache/mod" GOCACHE="$cache/build" CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local
started=$(date +%s.%N)
( cd "$here" && go build -trimpath -o "$bin/" \
    -ldflags "-X github.com/moby/buildkit/version.Version=$version -X github.com/moby/buildkit/version.Package=github.com/moby/buildkit" \
    github.com/moby/buildkit/cmd/buildkitd github.com/moby/buildkit/cmd/buildctl )
for tool in buildkitd buildctl; do
  built=$("$bin/$tool" --version); [[ "$built" == *" $version"* ]] || { echo "error: $bin/$tool is not $version: $built" >&2; exit 1; }
done
printf '[buildkit] %s built in %.1f s (cache %s)\n' "$version" "$(echo "$(date +%s.%N) - $started" | bc)" "$cache" >&2
echo "$bin"
