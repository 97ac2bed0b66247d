#!/usr/bin/env bash
# Lavalink health check: an authenticated GET /version must answer HTTP 200 in time.
# Uses bash's /dev/tcp because the upstream image guarantees neither curl nor wget, and the
# usual `curl -s -H ... /version` check never fails (curl without -f exits 0 on HTTP 401/500).
set -uo pipefail
port=${SERVER_PORT:-2333}
password=${LAVALINK_SERVER_PASSWORD:-}
[[ -n "$password" ]] || { echo "unhealthy: LAVALINK_SERVER_PASSWORD is not set"; exit 1; }
exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null || { echo "unhealthy: nothing listens on port $port"; exit 1; }
printf 'GET /version HTTP/1.1\r\nHost: localhost\r\nAuthorization: %s\r\nConnection: close\r\n\r\n' "$password" >&3
IFS= read -r -t 5 status <&3 || { echo "unhealthy: no answer on port $port within 5 s"; exit 1; }
status=${status%$'\r'}
case "$status" in
  "HTTP/1."?" 200"*) echo "healthy: $status"; exit 0 ;;
  *) echo "unhealthy: $status"; exit 1 ;;
esac
