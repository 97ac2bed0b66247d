#!/usr/bin/env bash
# Roll the dimbybot2 stack on this host to a new image tag, with rollback.
#
# Run by `dagger call deploy` / `dimbybot-ci deploy` as `ssh host bash -s`: this script and
# its settings arrive on standard input, so no secret is ever in a process's argv.
# Settings (environment):
#   DEPLOY_DIR         directory holding compose.yaml and the operator's .env (app secrets)
#   DEPLOY_TAG         image tag to roll out (the commit SHA)
#   DEPLOY_REGISTRY    registry/namespace of the images (DIMBYBOT_REGISTRY for compose)
#   DEPLOY_REGISTRY_USERNAME, DEPLOY_REGISTRY_PASSWORD   optional registry login
#   DEPLOY_COMPOSE_FILE  new compose.yaml content (optional; replaces the host's on success)
#   DEPLOY_TIMEOUT     seconds to wait for every service to be healthy (default 180)
#   DEPLOY_LOCK_WAIT   seconds to wait for another deploy to finish (default 600)
#   DEPLOY_PROJECT     compose project name (default: the compose file's `name:`)
#
# Order: lock -> record running tag -> login -> pull (nothing changed so far) -> switch ->
# wait healthy -> bot --self-check -> record. Any failure after the switch restores the
# previous tag (and compose file), brings it back up and exits 1. Exit 2: refused before
# any change.
set -uo pipefail

# The whole script is one function, called on the last line: bash reads all of it before
# running any of it. (Piped to `bash -s`, a script is read as it runs, and a command that
# reads stdin, such as `docker compose exec`, would swallow the rest of the script.)
deploy_main() {
  exec </dev/null

  say() { printf '%s\n' "$*"; }
  log() { printf '[deploy %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
  refuse() { say "result: refused"; say "reason: $*"; exit 2; }

  : "${DEPLOY_DIR:?DEPLOY_DIR is required}" "${DEPLOY_TAG:?DEPLOY_TAG is required}" "${DEPLOY_REGISTRY:?DEPLOY_REGISTRY is required}"
  timeout=${DEPLOY_TIMEOUT:-180}
  lock_wait=${DEPLOY_LOCK_WAIT:-600}

  [[ -d "$DEPLOY_DIR" ]] || refuse "remote directory $DEPLOY_DIR does not exist"
  cd "$DEPLOY_DIR" || refuse "cannot enter $DEPLOY_DIR"

  # 1. One deploy at a time on this host: the lock is held until this script exits.
  exec 9>>"$DEPLOY_DIR/.deploy.lock"
  if ! flock -n 9; then
    log "another deploy is running; waiting up to ${lock_wait}s"
    flock -w "$lock_wait" 9 || refuse "another deploy held the lock for more than ${lock_wait}s"
  fi
  printf '%s start %s pid %s\n' "$(date -u +%s.%N)" "$DEPLOY_TAG" "$$" >>"$DEPLOY_DIR/.deploy.history"

  # 2. What runs now (empty on a first deploy).
  previous=$(cat "$DEPLOY_DIR/.deployed-tag" 2>/dev/null || true)
  say "old tag: ${previous:-none}"
  say "new tag: $DEPLOY_TAG"

  # 3. Registry login into a private config that disappears with this script.
  DOCKER_CONFIG=$(mktemp -d)
  export DOCKER_CONFIG
  trap 'rm -rf "$DOCKER_CONFIG" "$DEPLOY_DIR/compose.yaml.next"' EXIT
  registry_host=${DEPLOY_REGISTRY%%/*}
  if [[ -n "${DEPLOY_REGISTRY_PASSWORD:-}" ]]; then
    if ! printf '%s' "$DEPLOY_REGISTRY_PASSWORD" | docker login --username "${DEPLOY_REGISTRY_USERNAME:-}" --password-stdin "$registry_host" >/dev/null 2>&1; then
      refuse "registry $registry_host refused the login for ${DEPLOY_REGISTRY_USERNAME:-}"
    fi
  fi
  unset DEPLOY_REGISTRY_PASSWORD

  compose_file=compose.yaml
  if [[ -n "${DEPLOY_COMPOSE_FILE:-}" ]]; then
    printf '%s' "$DEPLOY_COMPOSE_FILE" >"$DEPLOY_DIR/compose.yaml.next"
    compose_file=compose.yaml.next
  fi
  [[ -f "$compose_file" ]] || refuse "no compose.yaml in $DEPLOY_DIR"
  project=()
  [[ -n "${DEPLOY_PROJECT:-}" ]] && project=(-p "$DEPLOY_PROJECT")
  compose() { DIMBYBOT_REGISTRY="$DEPLOY_REGISTRY" DIMBYBOT_TAG="$1" docker compose "${project[@]}" -f "$2" "${@:3}"; }

  # 4. Pull before touching anything: a missing image or tag fails here, with nothing changed.
  if ! pull_output=$(compose "$DEPLOY_TAG" "$compose_file" pull --quiet 2>&1); then
    refuse "pull of $DEPLOY_TAG failed: $(printf '%s' "$pull_output" | tail -n 1)"
  fi

  health_report() {
    compose "$1" "$2" ps --all --format '{{.Service}} {{.State}} {{.Health}}' 2>/dev/null | sort | while read -r service state health; do
      say "service $service: ${health:-$state}"
    done
  }

  bring_up() {  # tag compose_file
    compose "$1" "$2" up -d --remove-orphans --wait --wait-timeout "$timeout" >/dev/null 2>&1 || return 1
    compose "$1" "$2" exec -T bot python -m dimbybot --self-check >&2 || return 1
  }

  # 5. Switch, wait, check.
  log "rolling out $DEPLOY_TAG"
  if bring_up "$DEPLOY_TAG" "$compose_file"; then
    [[ "$compose_file" == compose.yaml.next ]] && mv -f compose.yaml.next compose.yaml
    printf '%s\n' "$DEPLOY_TAG" >"$DEPLOY_DIR/.deployed-tag"
    health_report "$DEPLOY_TAG" compose.yaml
    say "rolled back: no"
    say "result: deployed"
    printf '%s end %s deployed\n' "$(date -u +%s.%N)" "$DEPLOY_TAG" >>"$DEPLOY_DIR/.deploy.history"
    exit 0
  fi

  # 6. Roll back.
  failure="services did not all become healthy within ${timeout}s, or the bot's self-check failed"
  health_report "$DEPLOY_TAG" "$compose_file"
  if [[ -z "$previous" ]]; then
    compose "$DEPLOY_TAG" "$compose_file" down >/dev/null 2>&1 || true
    say "rolled back: no (first deploy: nothing to go back to; the failed stack was stopped)"
    say "result: failed"
    say "reason: $failure"
    exit 1
  fi
  log "rolling back to $previous"
  if bring_up "$previous" compose.yaml; then
    say "rolled back: yes, to $previous"
  else
    say "rolled back: attempted, but $previous is not healthy either"
  fi
  health_report "$previous" compose.yaml
  say "result: rolled back"
  say "reason: $failure"
  printf '%s end %s rolled-back\n' "$(date -u +%s.%N)" "$DEPLOY_TAG" >>"$DEPLOY_DIR/.deploy.history"
  exit 1
}

deploy_main
