#!/usr/bin/env bash
# Roll the dimbybot2 stack on this host to a new version, with rollback, whatever happens to
# the SSH connection that asked for it.
#
# Run by `dagger call deploy` / `dimbybot-ci deploy` as `ssh host bash -s`: this script and its
# settings arrive on standard input, so no secret is ever in a process's argv.
#
# Actions (DEPLOY_ACTION):
#   start   preflight (nothing changes if it fails, exit 2), then launch the deploy as a
#           detached job (own session, own log and status under DEPLOY_DIR/.deploy/jobs/ID),
#           print "accepted: ID" and follow it. The job never writes to the SSH channel: a
#           dropped connection, a killed or timed-out client cannot stop it half-way.
#   follow  stream job ID's log from line DEPLOY_LOG_FROM, then print its final report.
#   status  print what this host runs (tag, commit, digests) and its last job.
#
# Settings (environment):
#   DEPLOY_DIR         directory holding compose.yaml and the operator's .env (app secrets)
#   DEPLOY_JOB         job id, chosen by the client (so it can find the job again)
#   DEPLOY_TAG         image tag to roll out; DEPLOY_COMMIT the commit it was built from
#   DEPLOY_REGISTRY    registry/namespace of the images (DIMBYBOT_REGISTRY for compose)
#   DEPLOY_PINS        lines "NAME REPOSITORY sha256:DIGEST": run REPOSITORY:TAG@DIGEST
#                      (DIMBYBOT_<NAME>_PIN for compose) and check the tag still points there
#   DEPLOY_EXPECT_COMMIT  the deployed commit the client checked the order against ("none":
#                      nothing deployed). If the host runs another one by the time the lock is
#                      held, the job is refused with "stale: yes" and the client re-checks.
#   DEPLOY_FORCE       1: skip that check (an explicit, older or unrelated, deploy)
#   DEPLOY_REGISTRY_USERNAME, DEPLOY_REGISTRY_PASSWORD   optional registry credentials
#   DEPLOY_COMPOSE_FILE  new compose.yaml content (optional; installed only on success)
#   DEPLOY_TIMEOUT     seconds to wait for every service to be healthy (default 180)
#   DEPLOY_PULL_TIMEOUT  seconds for the pull (default 900)
#   DEPLOY_LOCK_WAIT   seconds to wait for another deploy to finish (default 600)
#   DEPLOY_PROJECT     compose project name (default: the compose file's `name:`)
#   DEPLOY_SMOKE_TRACK optional Lavalink track identifier the smoke test must be able to load
#   DEPLOY_MIN_ENGINE, DEPLOY_MIN_COMPOSE   oldest Docker Engine / Compose accepted (25.0 / 2.20.2:
#                      the compose file's `start_interval` needs Engine API 1.44)
#
# Job: lock -> order check -> validate compose file -> pull (nothing changed so far) -> check
# digests -> switch -> wait healthy -> smoke test -> record. Any failure after the switch
# brings back the previous version (its digests and its compose file).
# Exit / "result:": 0 deployed; 1 failed (rolled back, or a first deploy stopped); 2 refused,
# nothing changed; 3 rollback failed (the host needs a person); 4 outcome unknown.
set -uo pipefail

# The whole script is one function, called on the last line: bash reads all of it before
# running any of it. (Piped to `bash -s`, a script is read as it runs, and a command that
# reads stdin, such as `docker compose exec`, would swallow the rest of the script.)
deploy_main() {
  exec </dev/null
  umask 077

  say() { printf '%s\n' "$*"; }
  log() { printf '[deploy %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
  # The final report of each call is framed with the client's nonce (a plain variable, never
  # exported, never in the job's environment or log): the client reads report keys only from
  # inside the frame, so no log line (container output included) can pass for one. The frame
  # starts on a line of its own even when the log before it did not end with a newline.
  report_begin() { printf '\nreport-begin: %s\n' "${DEPLOY_NONCE:-}"; }
  report_end() { printf 'report-end: %s\n' "${DEPLOY_NONCE:-}"; }
  refuse() { report_begin; say "result: refused"; say "reason: $(one_line "$*")"; report_end; exit 2; }
  # A value for the report: one line, no control characters (a CR would start a line on a terminal).
  one_line() { printf '%s' "$*" | tr '\000-\037\177' ' '; }
  now() { date -u +%s.%N; }

  : "${DEPLOY_DIR:?DEPLOY_DIR is required}"
  state_dir="$DEPLOY_DIR/.deploy"
  jobs_dir="$state_dir/jobs"

  # key=value lines; the last value of a key wins.
  state_get() { sed -n "s/^$1=//p" "$state_dir/state" 2>/dev/null | tail -n 1; }

  version_at_least() {  # have want: numeric dotted comparison, suffixes ignored
    local IFS=.-+ i
    local -a have want
    read -r -a have <<<"${1#v}"
    read -r -a want <<<"$2"
    for i in 0 1 2; do
      local h=${have[i]:-0} w=${want[i]:-0}
      h=${h%%[!0-9]*} w=${w%%[!0-9]*}
      (( ${h:-0} > ${w:-0} )) && return 0
      (( ${h:-0} < ${w:-0} )) && return 1
    done
    return 0
  }

  job_valid() { [[ "$1" =~ ^[A-Za-z0-9._-]{1,64}$ ]]; }

  # ---- status: what runs here, and the last job -----------------------------------------
  show_status() {
    [[ -d "$DEPLOY_DIR" ]] || refuse "remote directory $DEPLOY_DIR does not exist"
    local tag commit last
    report_begin
    tag=$(state_get tag)
    [[ -n "$tag" ]] || tag=$(cat "$DEPLOY_DIR/.deployed-tag" 2>/dev/null || true)
    commit=$(state_get commit)
    say "deployed tag: ${tag:-none}"
    say "deployed commit: ${commit:-${tag:-none}}"
    say "deployed pins: $(state_get pins)"
    say "deployed at: $(state_get deployed_at)"
    last=$(ls -1t "$jobs_dir" 2>/dev/null | head -n 1)
    say "last job: ${last:-none}"
    if [[ -n "$last" ]]; then
      if [[ -f "$jobs_dir/$last/status" ]]; then
        say "last job result: $(sed -n 's/^result: //p' "$jobs_dir/$last/status")"
      else
        say "last job result: running"
      fi
    fi
    report_end
    exit 0
  }

  # ---- follow: the job's log ("log: " lines) from a line on, then its report ---------------
  follow_job() {
    local job=$1 from=${DEPLOY_LOG_FROM:-0} dir pid
    job_valid "$job" || refuse "bad job id"
    dir="$jobs_dir/$job"
    [[ -d "$dir" ]] || { report_begin; say "result: no such job"; say "reason: job $job never started on this host"; report_end; exit 2; }
    pid=$(cat "$dir/pid" 2>/dev/null || true)
    # tail exits once the job's process is gone; the log is a file, so a client that
    # reconnects reads on from where it was.
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      tail -n "+$((from + 1))" -s 1 --pid="$pid" -F "$dir/log" 2>/dev/null | sed -u 's/^/log: /'
    else
      tail -n "+$((from + 1))" "$dir/log" | sed 's/^/log: /'
    fi
    report_begin
    if [[ -f "$dir/status" ]]; then
      cat "$dir/status"
      report_end
      exit "$(sed -n 's/^exit: //p' "$dir/status")"
    fi
    say "result: unknown"
    say "reason: job $job stopped without a final status (killed, or the host restarted): see $dir/log"
    report_end
    exit 4
  }

  # ---- start: preflight, then launch the detached job --------------------------------------
  start_job() {
    : "${DEPLOY_JOB:?}" "${DEPLOY_TAG:?DEPLOY_TAG is required}" "${DEPLOY_REGISTRY:?DEPLOY_REGISTRY is required}"
    job_valid "$DEPLOY_JOB" || refuse "bad job id"
    [[ -d "$DEPLOY_DIR" ]] || refuse "remote directory $DEPLOY_DIR does not exist"
    cd "$DEPLOY_DIR" || refuse "cannot enter $DEPLOY_DIR"
    local tool
    for tool in docker flock setsid base64 tail sha256sum timeout; do
      command -v "$tool" >/dev/null || refuse "$tool is not installed on $(hostname)"
    done
    if [[ ! -w "$DEPLOY_DIR" ]] || ! mkdir -p "$jobs_dir" 2>/dev/null || [[ ! -w "$state_dir" ]]; then
      refuse "deploy directory $DEPLOY_DIR is not writable by $(id -un)"
    fi
    [[ -f compose.yaml || -n "${DEPLOY_COMPOSE_FILE:-}" ]] || refuse "no compose.yaml in $DEPLOY_DIR"
    local engine compose_version
    engine=$(docker version --format '{{.Server.Version}}' 2>&1) || refuse "Docker Engine not reachable: $(tail -n 1 <<<"$engine")"
    version_at_least "$engine" "${DEPLOY_MIN_ENGINE:-25.0}" \
      || refuse "Docker Engine $engine is older than ${DEPLOY_MIN_ENGINE:-25.0} (compose.yaml's start_interval needs it)"
    compose_version=$(docker compose version --short 2>&1) || refuse "docker compose is not available: $(tail -n 1 <<<"$compose_version")"
    version_at_least "$compose_version" "${DEPLOY_MIN_COMPOSE:-2.20.2}" \
      || refuse "Docker Compose $compose_version is older than ${DEPLOY_MIN_COMPOSE:-2.20.2}"

    sweep_stale_configs
    local dir="$jobs_dir/$DEPLOY_JOB" context
    mkdir "$dir" 2>/dev/null || refuse "job $DEPLOY_JOB exists already"
    context=$(docker context show 2>/dev/null || echo default)
    [[ "$context" =~ ^[A-Za-z0-9._-]+$ ]] || context=default
    {
      declare -f   # every function of this script, so the job runs the same code
      printf 'DEPLOY_ACTION=run deploy_main\n'
    } >"$dir/job.sh"
    : >"$dir/log"
    # Own session (no SIGHUP when the SSH session ends), stdio on files (no SIGPIPE when
    # the channel goes away).
    # The registry password and the smoke track reach the job on a pipe (fd 3), read at once into
    # plain variables: no argv, no environment, no file until the job holds the lock.
    DEPLOY_ACTION=run DEPLOY_ENGINE="$engine" DEPLOY_COMPOSE_VERSION="$compose_version" DEPLOY_CONTEXT="$context" \
      setsid -f bash "$dir/job.sh" </dev/null >>"$dir/log" 2>&1 \
      3<<<"$(printf '%s\n%s' "${DEPLOY_REGISTRY_PASSWORD:-}" "${DEPLOY_SMOKE_TRACK:-}")"
    unset DEPLOY_REGISTRY_PASSWORD DEPLOY_SMOKE_TRACK
    # Keep the last 20 jobs.
    ls -1t "$jobs_dir" | tail -n +21 | while read -r old; do rm -rf "${jobs_dir:?}/$old"; done
    say "accepted: $DEPLOY_JOB"
    local i
    for i in $(seq 50); do [[ -s "$dir/pid" ]] && break; sleep 0.1; done
    follow_job "$DEPLOY_JOB"
  }

  # A private DOCKER_CONFIG holding only this registry's auth: no `docker login` (so no
  # credential helper is picked and nothing is stored elsewhere), and the user's CLI plugins
  # (docker compose may live there) and current context are kept.
  # write_docker_config DIR PASSWORD CONTEXT USER_CONFIG (the job writes it once it holds the lock).
  write_docker_config() {
    local target=$1 password=$2 context=$3 user_config=$4 auths=""
    mkdir -m 700 "$target" || return 1
    [[ -d "$user_config/cli-plugins" ]] && ln -s "$user_config/cli-plugins" "$target/cli-plugins"
    [[ -d "$user_config/contexts" ]] && ln -s "$user_config/contexts" "$target/contexts"
    if [[ -n "$password" ]]; then
      local registry_host=${DEPLOY_REGISTRY%%/*} auth
      auth=$(printf '%s:%s' "${DEPLOY_REGISTRY_USERNAME:-}" "$password" | base64 -w 0)
      auths=$(printf '"%s": {"auth": "%s"}' "$registry_host" "$auth")
    fi
    printf '{"auths": {%s}, "currentContext": "%s"}\n' "$auths" "$context" >"$target/config.json"
  }

  # A job killed with SIGKILL (or by a reboot) runs no trap: its private docker config (the
  # registry password) would stay. Each start removes the config of every job that no longer runs.
  sweep_stale_configs() {
    local config job pid
    for config in "$jobs_dir"/*/docker; do
      [[ -d "$config" ]] || continue
      job=${config%/docker}
      pid=$(cat "$job/pid" 2>/dev/null || true)
      # Running: its pid is alive and is this job's script (not a pid reused since).
      if [[ "$pid" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "/jobs/${job##*/}/job.sh"; then
        continue  # still running
      fi
      rm -rf "$config"
    done
  }

  # ---- run: the detached job ---------------------------------------------------------------
  run_job() {
    local dir="$jobs_dir/$DEPLOY_JOB"
    # First of all: whatever ends this job (a signal included), its private docker config goes.
    trap 'rm -rf "$dir/docker"' EXIT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    trap 'exit 130' INT
    local registry_password="" smoke_track=""
    IFS= read -r registry_password <&3
    IFS= read -r smoke_track <&3
    exec 3<&-
    echo "$$" >"$dir/pid"
    cd "$DEPLOY_DIR" || exit 4
    local user_config=${DOCKER_CONFIG:-$HOME/.docker}  # the user's (its CLI plugins and contexts stay visible)
    export DOCKER_CONFIG="$dir/docker"
    local timeout=${DEPLOY_TIMEOUT:-180} lock_wait=${DEPLOY_LOCK_WAIT:-600} pull_timeout=${DEPLOY_PULL_TIMEOUT:-900}
    local commit=${DEPLOY_COMMIT:-$DEPLOY_TAG} report="$dir/report" history="$DEPLOY_DIR/.deploy.history"
    : >"$report"
    out() { printf '%s\n' "$(one_line "$*")" >>"$report"; }
    # finish EXIT RESULT REASON: the final report, written at once (a follower never reads half).
    finish() {
      {
        cat "$report"
        printf 'result: %s\n' "$2"
        [[ -n "${3:-}" ]] && printf 'reason: %s\n' "$(one_line "$3")"
        printf 'exit: %s\n' "$1"
      } >"$dir/status.tmp"
      mv -f "$dir/status.tmp" "$dir/status"
      [[ "${started:-0}" == 1 ]] && printf '%s end %s %s job %s\n' "$(now)" "$DEPLOY_TAG" "${2// /-}" "$DEPLOY_JOB" >>"$history"
      log "finished: $2${3:+ ($3)}"
      exit "$1"
    }
    log "job $DEPLOY_JOB: $DEPLOY_TAG (commit $commit) to $DEPLOY_DIR"
    log "Docker Engine ${DEPLOY_ENGINE:-?}, Compose ${DEPLOY_COMPOSE_VERSION:-?}, context ${DEPLOY_CONTEXT:-default}"

    # 1. One deploy at a time on this host: the lock is held until this job exits.
    exec 9>>"$DEPLOY_DIR/.deploy.lock" || finish 2 refused "cannot open $DEPLOY_DIR/.deploy.lock"
    if ! flock -n 9; then
      log "another deploy is running; waiting up to ${lock_wait}s"
      flock -w "$lock_wait" 9 || finish 2 refused "another deploy held the lock for more than ${lock_wait}s"
    fi
    started=1
    printf '%s start %s pid %s job %s\n' "$(now)" "$DEPLOY_TAG" "$$" "$DEPLOY_JOB" >>"$history"
    # Only now, holding the lock, does the registry password reach a file (removed when the job ends).
    write_docker_config "$dir/docker" "$registry_password" "${DEPLOY_CONTEXT:-default}" "$user_config" \
      || finish 2 refused "cannot write the job's docker config in $dir"
    registry_password=""

    # 2. What runs now (empty on a first deploy), and is this deploy still in order?
    local previous previous_commit previous_pins
    previous=$(state_get tag)
    [[ -n "$previous" ]] || previous=$(cat "$DEPLOY_DIR/.deployed-tag" 2>/dev/null || true)
    previous_commit=$(state_get commit)
    previous_commit=${previous_commit:-${previous:-none}}
    previous_pins=$(state_get pins)
    out "old tag: ${previous:-none}"
    out "new tag: $DEPLOY_TAG"
    if [[ "${DEPLOY_FORCE:-0}" != 1 && -n "${DEPLOY_EXPECT_COMMIT:-}" && "$DEPLOY_EXPECT_COMMIT" != "$previous_commit" ]]; then
      out "stale: yes"
      finish 2 refused "this host now runs $previous_commit, not $DEPLOY_EXPECT_COMMIT as when the order was checked"
    fi

    # 3. The compose file this deploy uses: the given one, else the host's. The host's own
    #    compose.yaml is only replaced once the new version is healthy.
    local compose_new="$dir/compose.yaml"
    if [[ -n "${DEPLOY_COMPOSE_FILE:-}" ]]; then
      printf '%s' "$DEPLOY_COMPOSE_FILE" >"$compose_new"
    else
      cp compose.yaml "$compose_new" || finish 2 refused "cannot read $DEPLOY_DIR/compose.yaml"
    fi
    chmod 644 "$compose_new"
    local -a project=()
    [[ -n "${DEPLOY_PROJECT:-}" ]] && project=(-p "$DEPLOY_PROJECT")
    # compose TAG PINS FILE ARGS...: PINS are "NAME=@sha256:..." words (DIMBYBOT_NAME_PIN).
    compose_argv() {
      local pin
      cargv=(env "DIMBYBOT_REGISTRY=$DEPLOY_REGISTRY" "DIMBYBOT_TAG=$1")
      for pin in $2; do cargv+=("DIMBYBOT_${pin%%=*}_PIN=${pin#*=}"); done
      cargv+=(docker compose --project-directory "$DEPLOY_DIR" "${project[@]}" -f "$3")
    }
    compose() { local -a cargv; compose_argv "$1" "$2" "$3"; shift 3; "${cargv[@]}" "$@"; }
    local new_pins="" name repository digest
    while read -r name repository digest; do
      [[ -n "$name" ]] || continue
      new_pins+="${name^^}=@$digest "
    done <<<"${DEPLOY_PINS:-}"
    local errors="$dir/compose.err"
    if ! compose "$DEPLOY_TAG" "$new_pins" "$compose_new" config --quiet 2>"$errors"; then
      finish 2 refused "the compose file is invalid: $(tail -n 1 "$errors")"
    fi

    # 4. Pull before touching anything: a missing image, tag or digest fails here.
    log "pulling $DEPLOY_TAG"
    local -a cargv
    compose_argv "$DEPLOY_TAG" "$new_pins" "$compose_new"
    if ! timeout "$pull_timeout" "${cargv[@]}" pull --quiet 2>"$errors"; then
      cat "$errors" >&2
      local why
      why=$(grep -v '^\s*$' "$errors" | tail -n 1)
      if grep -qiE 'unauthorized|authentication required|denied|no basic auth' "$errors"; then
        finish 2 refused "registry ${DEPLOY_REGISTRY%%/*} refused the login for ${DEPLOY_REGISTRY_USERNAME:-anonymous}: $why"
      fi
      finish 2 refused "pull of $DEPLOY_TAG failed (nothing changed): ${why:-timed out after ${pull_timeout}s}"
    fi

    # 5. What was pulled is what was built: each pinned digest is what the tag points at.
    while read -r name repository digest; do
      [[ -n "$name" ]] || continue
      local ref="$DEPLOY_REGISTRY/$repository" seen
      if ! docker pull --quiet "$ref:$DEPLOY_TAG" >/dev/null 2>"$errors"; then
        finish 2 refused "cannot resolve $ref:$DEPLOY_TAG to check its digest: $(tail -n 1 "$errors")"
      fi
      seen=$(docker image inspect --format '{{join .RepoDigests " "}}' "$ref:$DEPLOY_TAG" 2>/dev/null)
      if [[ " $seen " != *" $ref@$digest "* ]]; then
        finish 2 refused "digest mismatch for $name: $ref:$DEPLOY_TAG is ${seen:-unknown}, the build produced $digest"
      fi
      log "$name: $ref:$DEPLOY_TAG is $digest (as built)"
    done <<<"${DEPLOY_PINS:-}"

    health_report() {  # tag pins file
      compose "$1" "$2" "$3" ps --all --format '{{.Service}} {{.State}} {{.Health}}' 2>/dev/null | sort | while read -r service state health; do
        out "service $service: ${health:-$state}"
      done
    }
    # Services that are not healthy, each with its health check's last output: the real cause.
    unhealthy() {  # tag pins file
      local service id health last
      compose "$1" "$2" "$3" config --services 2>/dev/null | while read -r service; do
        id=$(compose "$1" "$2" "$3" ps -q "$service" 2>/dev/null)
        [[ -n "$id" ]] || { printf '; %s: not running' "$service"; continue; }
        health=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
        [[ "$health" == healthy || "$health" == running ]] && continue
        last=$(docker inspect --format '{{with .State.Health}}{{range .Log}}{{.Output}}{{"\n"}}{{end}}{{end}}' "$id" | grep -v '^\s*$' | tail -n 1)
        printf '; %s %s%s' "$service" "$health" "${last:+: $last}"
      done
    }
    # bring_up TAG PINS FILE: up and healthy, then the smoke test; on failure, `why` says what.
    bring_up() {
      if ! compose "$1" "$2" "$3" up -d --remove-orphans --wait --wait-timeout "$timeout" 2>"$errors"; then
        cat "$errors" >&2
        why="compose up: $(grep -v '^\s*$' "$errors" | tail -n 1)$(unhealthy "$1" "$2" "$3")"
        return 1
      fi
      smoke_test "$1" "$2" "$3"
    }
    smoke_test() {
      local output
      if ! output=$(compose "$1" "$2" "$3" exec -T bot python -m dimbybot --self-check 2>&1); then
        log "$output"
        why="bot self-check: $(tail -n 1 <<<"$output")"
        return 1
      fi
      log "$output"
      # `-e SMOKE_TRACK` without a value: compose passes it on from its environment, not its argv.
      if ! output=$(SMOKE_TRACK="$smoke_track" compose "$1" "$2" "$3" exec -T -e SMOKE_TRACK bot python -c "$SMOKE_LAVALINK" 2>&1); then
        log "$output"
        why="Lavalink smoke test: $(tail -n 1 <<<"$output")"
        return 1
      fi
      log "$output"
    }

    # 6. Switch, wait, check.
    local why=""
    log "rolling out $DEPLOY_TAG"
    if bring_up "$DEPLOY_TAG" "$new_pins" "$compose_new"; then
      if [[ -n "${DEPLOY_COMPOSE_FILE:-}" ]] && ! cmp -s "$compose_new" compose.yaml; then
        cp compose.yaml "$dir/compose.yaml.before" 2>/dev/null || true
        cp "$compose_new" compose.yaml.next && mv -f compose.yaml.next compose.yaml
      fi
      record_state "$DEPLOY_TAG" "$commit" "$new_pins"
      health_report "$DEPLOY_TAG" "$new_pins" compose.yaml
      out "rolled back: no"
      finish 0 deployed
    fi

    # 7. Roll back: the previous version, with its digests and the host's compose.yaml.
    local failure=$why
    log "failed: $failure"
    health_report "$DEPLOY_TAG" "$new_pins" "$compose_new"
    if [[ -z "$previous" ]]; then
      if compose "$DEPLOY_TAG" "$new_pins" "$compose_new" down --remove-orphans 2>"$errors"; then
        out "rolled back: no (first deploy: nothing to go back to; the failed stack was stopped)"
      else
        out "rolled back: no (first deploy; stopping the failed stack failed too: $(tail -n 1 "$errors"))"
      fi
      finish 1 failed "$failure"
    fi
    log "rolling back to $previous"
    why=""
    if bring_up "$previous" "$previous_pins" compose.yaml; then
      out "rolled back: yes, to $previous"
      health_report "$previous" "$previous_pins" compose.yaml
      finish 1 "rolled back" "$failure"
    fi
    out "rolled back: no, the rollback to $previous failed too ($why)"
    health_report "$previous" "$previous_pins" compose.yaml
    finish 3 "rollback failed" "$failure; then the rollback failed: $why"
  }

  record_state() {  # tag commit pins
    {
      printf 'tag=%s\ncommit=%s\npins=%s\njob=%s\ndeployed_at=%s\n' "$1" "$2" "${3% }" "$DEPLOY_JOB" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
      printf 'compose_sha256=%s\n' "$(sha256sum compose.yaml | cut -d' ' -f1)"
    } >"$state_dir/state.next"
    chmod 644 "$state_dir/state.next"
    mv -f "$state_dir/state.next" "$state_dir/state"
    printf '%s\n' "$1" >"$DEPLOY_DIR/.deployed-tag.next" && mv -f "$DEPLOY_DIR/.deployed-tag.next" "$DEPLOY_DIR/.deployed-tag"
  }

  # Inside the bot's container (its network reaches Lavalink): /version answers with the
  # password and refuses without it; with SMOKE_TRACK, Lavalink can load that track.
  SMOKE_LAVALINK='
import json, os, sys, urllib.error, urllib.parse, urllib.request
base = "http://%s:%s" % (os.environ.get("LAVALINK_HOST", "lavalink"), os.environ.get("LAVALINK_PORT", "2333"))
def get(path, auth):
    headers = {"Authorization": os.environ["LAVALINK_PASSWORD"]} if auth else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(base + path, headers=headers), timeout=10) as r:
            return r.status, r.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
status, version = get("/version", True)
if status != 200:
    sys.exit("Lavalink /version with the password answered HTTP %d" % status)
status, _ = get("/version", False)
if status not in (401, 403):
    sys.exit("Lavalink /version without the password answered HTTP %d, not 401/403" % status)
track = os.environ.get("SMOKE_TRACK")
if track:
    status, body = get("/v4/loadtracks?identifier=" + urllib.parse.quote(track), True)
    kind = json.loads(body).get("loadType") if status == 200 else None
    if kind not in ("track", "playlist", "search"):
        sys.exit("Lavalink could not load the smoke track: HTTP %d, loadType %s" % (status, kind))
print("smoke ok: Lavalink %s, password enforced%s" % (version.strip(), ", track loads" if track else ""))
'

  case "${DEPLOY_ACTION:-start}" in
    start) start_job ;;
    follow) follow_job "${DEPLOY_JOB:?}" ;;
    status) show_status ;;
    run) run_job ;;
    *) refuse "unknown DEPLOY_ACTION ${DEPLOY_ACTION}" ;;
  esac
}

deploy_main
