"""A private Docker daemon: what a fresh CI runner starts with, without touching the host's.

An ephemeral runner is a new machine with an empty BuildKit cache. Pruning the host daemon's
build cache would imitate that but destroy every other user's cache (and other tests running at
the same time), so tests that need "a fresh runner" start their own dockerd instead: its own data
root, exec root, socket and bridge, with only the local base images loaded into it. Each fresh
runner is a new daemon (`running()`): pruning a daemon's build cache is not enough, since the
layers it pushed stay in its content store and a "cold" import would quietly find them there.
Stopping it removes every trace (daemon, bridge, NAT rule, directories).

Networking: a second dockerd cannot share docker0, and with `--bridge none` BuildKit's RUN steps
fail ("network bridge not found"). So each private daemon gets a bridge of its own on a /24 that
is only ever a local container network, with one MASQUERADE rule so RUN steps reach the package
registries exactly as the host daemon's containers do. BuildKit itself runs inside dockerd, on
the host's network: 127.0.0.1 services (registry, cache stand-ins) are reachable from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"


@dataclasses.dataclass
class PrivateDocker:
    """A running private dockerd. `env` points a docker client (or the CLI under test) at it."""

    root: pathlib.Path
    socket: pathlib.Path
    bridge: str
    subnet: str
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "PATH": "/usr/bin:" + os.environ.get("PATH", "")}

    def docker(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def load_images(self, *images: str) -> None:
        """Copy images from the host daemon (no registry can be pulled from here)."""
        save = subprocess.Popen([DOCKER, "save", *images], stdout=subprocess.PIPE, env={**os.environ, "DOCKER_HOST": ""})
        subprocess.run([DOCKER, "load", "--quiet"], stdin=save.stdout, env=self.env, check=True, capture_output=True)
        if save.stdout:
            save.stdout.close()
        if save.wait() != 0:
            raise RuntimeError(f"docker save {' '.join(images)} failed")


def _run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


def _nat_rule(subnet: str, bridge: str) -> list[str]:
    return ["-t", "nat", "POSTROUTING", "-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE"]


def _forward_rules(bridge: str) -> list[list[str]]:
    return [["FORWARD", "-i", bridge, "-j", "ACCEPT"],
            ["FORWARD", "-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]]


def _iptables(action: str, rule: list[str]) -> None:
    table: list[str] = []
    if rule[0] == "-t":
        table, rule = rule[:2], rule[2:]
    subprocess.run(["iptables", *table, action, *rule], check=action == "-I", capture_output=True)


def _claim_bridge() -> int:
    """A free /24 for a new bridge: private daemons run side by side (several test modules, the
    benchmark), so a number already taken is skipped and a lost race is retried."""
    for _ in range(50):
        octet = random.randint(1, 254)  # noqa: S311 (a network number, not a secret)
        if subprocess.run(["ip", "link", "add", f"dimbyfd{octet}", "type", "bridge"], capture_output=True).returncode == 0:
            return octet
    raise RuntimeError("no free dimbyfd* bridge name after 50 tries")


@contextlib.contextmanager
def running(images: tuple[str, ...] = (), ready_timeout: float = 60) -> Iterator[PrivateDocker]:
    """A new private dockerd holding `images`: a fresh CI runner. Stopped and removed on exit."""
    # Short paths: a unix socket path is limited to 108 bytes.
    root = pathlib.Path(tempfile.mkdtemp(prefix="dimby-fd-", dir="/tmp"))
    octet = _claim_bridge()
    bridge, subnet = f"dimbyfd{octet}", f"10.213.{octet}.0/24"
    started: PrivateDocker | None = None
    try:
        _run("ip", "addr", "add", f"10.213.{octet}.1/24", "dev", bridge)
        _run("ip", "link", "set", bridge, "up")
        _iptables("-I", _nat_rule(subnet, bridge))
        for rule in _forward_rules(bridge):
            _iptables("-I", rule)
        (root / "daemon.json").write_text('{"features": {"containerd-snapshotter": true}}\n')
        log = open(root / "dockerd.log", "wb")  # noqa: SIM115 (kept open for the daemon's life)
        process = subprocess.Popen(
            [DOCKERD, "--config-file", str(root / "daemon.json"), "--data-root", str(root / "data"),
             "--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid"),
             "-H", f"unix://{root / 'docker.sock'}", "--bridge", bridge, "--iptables=false", "--ip-masq=false"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        started = PrivateDocker(root=root, socket=root / "docker.sock", bridge=bridge, subnet=subnet, process=process)
        deadline = time.monotonic() + ready_timeout
        while started.docker("info", check=False, timeout=20).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private dockerd did not start: {(root / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.5)
        if images:
            started.load_images(*images)
        yield started
    finally:
        if started is not None:
            _stop(started.process)
        _iptables("-D", _nat_rule(subnet, bridge))
        for rule in _forward_rules(bridge):
            _iptables("-D", rule)
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True)
        # dockerd unmounts its snapshots on a clean stop; a leftover mount would make rmtree fail.
        subprocess.run(["umount", "-R", "-l", str(root / "data")], capture_output=True)
        subprocess.run(["umount", "-R", "-l", str(root / "exec")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # dockerd and the containerd it started
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
