#!/usr/bin/env bash
# Build the Dagger engine, its CLI and helpers, runc and the CNI plugins from the Go module
# proxy, pinned by tests/engine/dagger/go.mod + go.sum (why v0.21.8 and what ./standins are:
# that go.mod's header) and tests/engine/runtime/go.mod + go.sum (runc, CNI plugins). Caches and binaries live in one directory outside the work tree, as
# for tests/engine/build.sh. Prints the binaries' directory on stdout.
#   DIMBYBOT2_GO_CACHE   that directory (default /var/cache/dimbybot2-go)
# Needs gcc and Debian's libseccomp-dev (runc links libseccomp statically); .ci/run installs it.
set -euo pipefail
here=$(cd "$(dirname "$0")/dagger" && pwd)
cache=${DIMBYBOT2_GO_CACHE:-/var/cache/dimbybot2-go}
version=$(sed -n 's/^[[:space:]]*github.com\/dagger\/dagger \(v[0-9.]*\).*$/\1/p' "$here/go.mod" | head -n1)
runtime=$(cd "$here/../runtime" && pwd)
runc_version=$(sed -n 's/^[[:space:]]*github.com\/opencontainers\/runc \(v[0-9.]*\).*$/\1/p' "$runtime/go.mod" | head -n1)
[ -n "$version" ] && [ -n "$runc_version" ] || { echo "error: versions not found in $here/go.mod" >&2; exit 1; }
bin="$cache/bin/dagger-$version"
mkdir -p "$cache/mod" "$cache/build" "$bin"
# One build at a time (tests run this script too): go build rewrites the binaries in place.
exec 9>"$cache/.build-dagger.lock"
flock 9
export GOMODCACHE="$cache/mod" GOCACHE="$cache/build" GOFLAGS=-mod=readonly GOTOOLCHAIN=local
# The sum database has no entry for these three (it answers 404); go.sum still pins them.
export GONOSUMDB=github.com/jedevc/go-libsecret,github.com/vito/bubbline,go.etcd.io/bbolt
started=$(date +%s)
cd "$here"
# The engine refuses modules whose engineVersion is newer than its own: stamp the version.
CGO_ENABLED=0 go build -trimpath -o "$bin/" -tags dfexcludepatterns,dfparents \
  -ldflags "-X github.com/dagger/dagger/engine.Version=$version -X github.com/dagger/dagger/engine.Tag=$version" \
  github.com/dagger/dagger/cmd/dagger github.com/dagger/dagger/cmd/engine github.com/dagger/dagger/cmd/init \
  github.com/dagger/dagger/cmd/dnsname github.com/dagger/dagger/cmd/dialstdio
cd "$runtime"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/" \
  github.com/containernetworking/plugins/plugins/main/bridge github.com/containernetworking/plugins/plugins/main/loopback \
  github.com/containernetworking/plugins/plugins/meta/firewall github.com/containernetworking/plugins/plugins/ipam/host-local
# runc runs every container the engine starts: static, with seccomp, as the engine image needs it.
CGO_ENABLED=1 go build -trimpath -buildmode=pie -tags "seccomp netgo osusergo" \
  -ldflags "-X main.version=${runc_version#v} -linkmode external -extldflags -static-pie" -o "$bin/runc" \
  github.com/opencontainers/runc
# Read whole, then matched: `cmd | grep -q` fails under pipefail when grep stops reading early.
built=$("$bin/dagger" version); [[ "$built" == *" $version "* ]] || { echo "error: $bin/dagger is not $version: $built" >&2; exit 1; }
built=$("$bin/runc" --version); [[ "$built" == *"${runc_version#v}"* ]] || { echo "error: $bin/runc is not $runc_version: $built" >&2; exit 1; }
echo "[dagger] $version (runc $runc_version) built in $(( $(date +%s) - started )) s (cache $cache)" >&2
echo "$bin"
