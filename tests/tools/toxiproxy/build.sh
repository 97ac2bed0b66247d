#!/usr/bin/env bash
# Build Shopify's toxiproxy server (the TCP fault proxy of tests/test_registry_network.py) from the
# Go module proxy, pinned by tests/tools/toxiproxy/go.mod + go.sum.
#
# Go's module cache, build cache and the binary live in one directory outside the work tree, the
# same one as BuildKit's (tests/engine/build.sh), so a second run on the same machine only
# re-links. Prints the binary's path on stdout.
#   DIMBYBOT2_GO_CACHE   that directory (default /var/cache/dimbybot2-go)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${DIMBYBOT2_GO_CACHE:-/var/cache/dimbybot2-go}
version=$(sed -n 's/^[[:space:]]*github.com\/Shopify\/toxiproxy\/v2 \(v[0-9.]*\).*$/\1/p' "$here/go.mod")
[ -n "$version" ] || { echo "error: tests/tools/toxiproxy/go.mod requires no toxiproxy version" >&2; exit 1; }
bin="$cache/bin/toxiproxy-$version"
mkdir -p "$cache/mod" "$cache/build" "$bin"
export GOMODCACHE="$cache/mod" GOCACHE="$cache/build" CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local
started=$(date +%s.%N)
( cd "$here" && go build -trimpath -o "$bin/toxiproxy-server" \
    -ldflags "-X github.com/Shopify/toxiproxy/v2.Version=$version" \
    github.com/Shopify/toxiproxy/v2/cmd/server )
"$bin/toxiproxy-server" -version | grep -q "$version" || {
  echo "error: $bin/toxiproxy-server is not $version" >&2; exit 1; }
printf '[toxiproxy] %s built in %.1f s (cache %s)\n' "$version" "$(echo "$(date +%s.%N) - $started" | bc)" "$cache" >&2
echo "$bin/toxiproxy-server"
