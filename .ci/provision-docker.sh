#!/usr/bin/env bash
# Install Docker Engine 28.5 + buildx 0.29 + Compose 2.40 on Debian 12 "bookworm" and start dockerd.
#
# Why Debian's unstable suite: bookworm ships Docker 20.10 (no buildx, no cache export) and
# trixie's Docker 26 carries BuildKit 0.13, which cannot speak the GitHub Actions cache v2
# protocol. Unstable's docker.io/docker-cli/docker-buildx/docker-compose/containerd/tini-static
# install on bookworm (they need libc6 >= 2.34; bookworm has 2.36). Bookworm's own runc is kept
# because newer ones want a newer libc. The system's apt sources are never modified: unstable is
# read through a private apt configuration under a temp dir.
#
# Idempotent: re-running on a provisioned machine only (re)starts the daemon.
# Usage: provision-docker.sh            install if needed, start dockerd, wait for it
set -euo pipefail
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"   # Debian's client first, not /usr/local/bin/docker
export DEBIAN_FRONTEND=noninteractive

SUITE=${DOCKER_SUITE:-unstable}
SUITE_PACKAGES=(docker.io docker-cli docker-buildx docker-compose containerd tini-static)
MIN_DOCKER_MAJOR=28   # BuildKit inside Docker 28 speaks the gha cache v2 protocol
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}

log() { printf '[provision-docker] %s\n' "$*" >&2; }

have_modern_docker() {
  [[ -x /usr/bin/docker ]] && [[ -x /usr/sbin/dockerd ]] || return 1
  local version
  version=$(/usr/bin/docker --version 2>/dev/null | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')
  [[ -n "$version" && "$version" -ge $MIN_DOCKER_MAJOR ]] && /usr/bin/docker buildx version >/dev/null 2>&1 \
    && /usr/bin/docker compose version >/dev/null 2>&1
}

install_docker() {
  log "installing bookworm's runc, iptables"
  apt-get update -qq
  # One package per call: a combined apt call stops whole on one conflict (environment.md).
  local pkg
  for pkg in runc iptables ca-certificates; do
    dpkg -s "$pkg" >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  done
  # docker.io's postinst creates the docker group with systemd-sysusers (Depends: systemd |
  # systemd-standalone-sysusers | systemd-sysusers). Without systemd it exits 127, leaving
  # docker.io half-configured and every later apt-get install failing on "Unmet dependencies".
  command -v systemd-sysusers >/dev/null 2>&1 \
    || apt-get install -y -qq --no-install-recommends systemd-standalone-sysusers >/dev/null

  local work; work=$(mktemp -d)
  mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/debs"
  echo "deb http://deb.debian.org/debian $SUITE main" >"$work/sources.list"
  local apt_opts=(
    -o "Dir::Etc::SourceList=$work/sources.list"
    -o "Dir::Etc::SourceParts=-"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache::Archives=$work/archives"
    -o "APT::Get::List-Cleanup=0"
  )
  log "reading $SUITE's package lists (private apt state in $work)"
  apt-get "${apt_opts[@]}" update -qq
  log "downloading ${SUITE_PACKAGES[*]} from $SUITE"
  (cd "$work/debs" && apt-get "${apt_opts[@]}" download "${SUITE_PACKAGES[@]}" >/dev/null)
  log "installing $(ls "$work/debs" | tr '\n' ' ')"
  dpkg -i --auto-deconfigure --force-depends "$work"/debs/*.deb >/dev/null || true
  # dpkg may leave packages unconfigured if a dependency is soft-missing; verify the result
  # instead of trusting dpkg's exit status.
  rm -rf "$work"
  # A half-configured package or an unmet dependency breaks every later apt-get install
  # (.ci/run installs more tools): stop here, where the cause is visible.
  if [[ -n "$(dpkg --audit 2>&1)" ]] || ! apt-get check -qq >/dev/null 2>&1; then
    dpkg --audit >&2 || true; apt-get check -qq >&2 || true
    log "dpkg left the Docker packages broken (see above)"; exit 1
  fi
  have_modern_docker || { log "docker $MIN_DOCKER_MAJOR+ with buildx and compose is not usable after install"; exit 1; }
}

uses_containerd_store() {
  /usr/bin/docker info --format '{{json .DriverStatus}}' 2>/dev/null | grep -q 'io.containerd.snapshotter'
}

start_dockerd() {
  if /usr/bin/docker info >/dev/null 2>&1; then
    if uses_containerd_store; then
      log "dockerd already answering, with the containerd image store"
      return
    fi
    # A daemon started elsewhere (e.g. systemd on a GitHub runner) with the classic image
    # store: cache export and OCI output need the containerd store, so switch it on.
    if command -v systemctl >/dev/null && systemctl is-active --quiet docker 2>/dev/null; then
      log "enabling the containerd image store and restarting docker (systemd)"
      python3 - <<'PY'
import json, pathlib
path = pathlib.Path("/etc/docker/daemon.json")
config = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
config.setdefault("features", {})["containerd-snapshotter"] = True
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps(config, indent=2))
PY
      systemctl restart docker
      for _ in $(seq 1 60); do uses_containerd_store && return; sleep 1; done
      log "docker did not come back with the containerd image store"; exit 1
    fi
    log "dockerd answers but without the containerd image store; cache export tests will fail"
    return
  fi
  mkdir -p /etc/docker
  # The containerd image store lets the buildx 'docker' driver export cache (type=registry,
  # mode=max) and OCI layouts; the classic store refuses both.
  if [[ ! -f /etc/docker/daemon.json ]] || ! grep -q containerd-snapshotter /etc/docker/daemon.json; then
    echo '{"features": {"containerd-snapshotter": true}}' >/etc/docker/daemon.json
  fi
  log "starting dockerd (log: $DOCKERD_LOG)"
  setsid /usr/sbin/dockerd >"$DOCKERD_LOG" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    if /usr/bin/docker info >/dev/null 2>&1; then
      log "dockerd ready: $(/usr/bin/docker version --format '{{.Server.Version}}')"
      return
    fi
    sleep 1
  done
  log "dockerd did not answer within 60 s; last log lines:"
  tail -n 30 "$DOCKERD_LOG" >&2 || true
  exit 1
}

if have_modern_docker; then
  log "docker $(/usr/bin/docker --version) already installed"
else
  install_docker
fi
start_dockerd
