"""A real OCI registry on 127.0.0.1 (Debian's docker-registry, distribution 2.8) with
htpasswd authentication, for push, tag and cache tests."""

from __future__ import annotations

import dataclasses
import pathlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

USER = "ci-user"
PASSWORD = "ci-pass-7f3a"


@dataclasses.dataclass
class RunningRegistry:
    host: str
    username: str
    password: str
    storage: pathlib.Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_registry(directory: pathlib.Path) -> Iterator[RunningRegistry]:
    port = free_port()
    storage = directory / "storage"
    storage.mkdir(parents=True)
    htpasswd = directory / "htpasswd"
    # bcrypt cost 4: the registry checks the password on every request, and the default cost
    # would make this test double, not the code under test, dominate timings.
    line = subprocess.run(["htpasswd", "-Bbn", "-C", "4", USER, PASSWORD], capture_output=True, text=True, check=True).stdout
    htpasswd.write_text(line)
    config = directory / "config.yml"
    config.write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
auth:
  htpasswd:
    realm: dimbybot2-test
    path: {htpasswd}
""")
    log = (directory / "registry.log").open("w")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            except urllib.error.HTTPError:
                break  # 401: up, and asking for credentials
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"registry did not start: {(directory / 'registry.log').read_text()}")
        yield RunningRegistry(f"127.0.0.1:{port}", USER, PASSWORD, storage)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
