#!/bin/sh
# Start the engine under tini. On a cgroup v2 host, move this process into a child group first
# so the engine may enable controllers for the groups it makes (a no-op on cgroup v1).
set -e
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  mkdir -p /sys/fs/cgroup/entry
  while read -r pid; do echo "$pid" > /sys/fs/cgroup/entry/cgroup.procs || true; done < /sys/fs/cgroup/cgroup.procs
  for controller in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$controller" >> /sys/fs/cgroup/cgroup.subtree_control || true
  done
fi
# Each client keeps SQLite databases open: ask for many descriptors, live with fewer.
ulimit -n 1048576 2>/dev/null || echo "dagger-entrypoint: open files stay at $(ulimit -n)" >&2
exec tini -- /usr/local/bin/dagger-engine --config /etc/dagger/engine.toml "$@"
