"""A real Dagger engine for the tests: built from the Go module proxy (tests/engine/build-dagger.sh:
v0.21.8 with stand-ins for the five modules the proxy refuses), in the image
tests/engine/build-image.sh makes, started the way a user's machine starts one: a privileged
container with its state on a named volume, the CLI pointed at it with
_EXPERIMENTAL_DAGGER_RUNNER_HOST, telemetry and update checks off.

The mirror registry (tests/images/build-mirror.sh, stand-ins for docker.io's and ghcr.io's
images under their upstream names) is served read-only on port 5000 of the engine's own network
namespace (a second container sharing it): the engine's engine.json points its mirrors at
127.0.0.1:5000, and the BuildKit the pipeline starts reaches it at the engine's address on the
test's own Docker network (`Engine.buildkitd_toml`, given to the module as `buildkit_config`,
as a user gives a pull-through cache). Outside registries for a test listen on that network's
gateway (`Engine.gateway`), with a CA given to `running()`: the engine installs it and injects it
into every container it runs, as it does a company CA.

The Python SDK drives the module's functions as a client of this engine (the SDK's module
runtime, what `dagger call` needs, is on no registry reachable here): `connected()` opens a
session and sets ci.main.MODULE_SOURCE, the one seam, to the module's own source.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator

HERE = pathlib.Path(__file__).resolve().parent
DOCKER = "/usr/bin/docker"
MIRROR_CONFIG = """version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: /var/lib/registry}, maintenance: {readonly: {enabled: true}}}
http: {addr: 0.0.0.0:5000}
"""


@dataclasses.dataclass(frozen=True)
class Engine:
    name: str
    bin_dir: pathlib.Path
    volume: str
    ip: str  # the engine's address on the test's network: its containers reach the mirror there
    gateway: str  # the host's address on that network: where outside registries for the engine listen

    def buildkitd_toml(self) -> str:
        """The BuildKit configuration a user with a pull-through cache would give the module
        (`buildkit_config`): docker.io and ghcr.io from the mirror, which speaks plain HTTP."""
        mirror = f"{self.ip}:5000"
        return (f'[registry."docker.io"]\n  mirrors = ["{mirror}"]\n'
                f'[registry."ghcr.io"]\n  mirrors = ["{mirror}/ghcr"]\n'
                f'[registry."{mirror}"]\n  http = true\n')

    @property
    def env(self) -> dict[str, str]:
        """What a shell (or the SDK) needs to use this engine."""
        return {**os.environ, "_EXPERIMENTAL_DAGGER_RUNNER_HOST": f"docker-container://{self.name}",
                "_EXPERIMENTAL_DAGGER_CLI_BIN": str(self.bin_dir / "dagger"),
                "PATH": f"/usr/bin:{os.environ.get('PATH', '')}",
                "DO_NOT_TRACK": "1", "DAGGER_NO_UPDATE_CHECK": "1", "DAGGER_NO_NAG": "1"}

    def cli(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin_dir / "dagger"), "--progress=plain", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=check, timeout=300)


def build() -> tuple[pathlib.Path, str]:
    """The engine's binaries and image (both idempotent: quick once built)."""
    done = subprocess.run(["bash", str(HERE / "engine" / "build-dagger.sh")], capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"tests/engine/build-dagger.sh failed: {done.stderr.strip()[-3000:]}")
    bin_dir = pathlib.Path(done.stdout.strip().splitlines()[-1])
    image = subprocess.run(["bash", str(HERE / "engine" / "build-image.sh"), str(bin_dir)], capture_output=True, text=True, timeout=1800)
    if image.returncode:
        raise RuntimeError(f"tests/engine/build-image.sh failed: {image.stderr.strip()[-3000:]}")
    return bin_dir, image.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def network() -> Iterator[tuple[str, str]]:
    """A Docker network of its own (name, gateway) for engines that must share one gateway:
    services a test runs on the host listen there for all of them."""
    name = f"dimbybot2-engine-net-{uuid.uuid4().hex[:8]}"
    _run("network", "create", name)
    try:
        gateway = _run("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", name).stdout.strip()
        yield name, gateway
    finally:
        _run("network", "rm", name, check=False)


@contextlib.contextmanager
def running(bin_dir: pathlib.Path, image: str, mirror_storage: pathlib.Path, volume: str | None = None,
            extra_ca: pathlib.Path | None = None, on_network: str | None = None,
            probe_interval: float = 1.0) -> Iterator[Engine]:
    """A started engine (a new state volume unless one is named: a fresh runner's engine), the
    mirror beside it, `extra_ca` among the CAs it trusts and injects, on a network of its own
    unless `on_network` is given; both containers, its own network and a new volume removed
    afterwards. Ready once `dagger core version` answers, asked every `probe_interval` seconds."""
    suffix = uuid.uuid4().hex[:8]
    name, network = f"dimbybot2-engine-{suffix}", on_network or f"dimbybot2-engine-net-{suffix}"
    own_volume = volume is None
    volume = volume or f"dimbybot2-engine-state-{suffix}"
    with tempfile.TemporaryDirectory(prefix="dimbybot2-engine-") as tmp:
        config = pathlib.Path(tmp) / "mirror.yml"
        config.write_text(MIRROR_CONFIG)
        config.chmod(0o644)
        if on_network is None:
            _run("network", "create", network)
        try:
            ca = ["-v", f"{extra_ca}:/usr/local/share/ca-certificates/dimbybot2-test-extra.crt:ro"] if extra_ca else []
            _run("run", "-d", "--name", name, "--privileged", "--network", network, "-v", f"{volume}:/var/lib/dagger", *ca, image)
            _run("run", "-d", "--name", f"{name}-mirror", "--network", f"container:{name}",
                 "-v", f"{mirror_storage}:/var/lib/registry:ro", "-v", "/usr/bin/docker-registry:/usr/bin/docker-registry:ro",
                 "-v", f"{config}:/etc/mirror.yml:ro", "--entrypoint", "/usr/bin/docker-registry",
                 "dimbybot2-test/debian:bookworm", "serve", "/etc/mirror.yml")
            ip, gateway = _run("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.Gateway}}{{end}}",
                               name).stdout.split()
            engine = Engine(name=name, bin_dir=bin_dir, volume=volume, ip=ip, gateway=gateway)
            deadline = time.monotonic() + 120
            while True:
                probe = engine.cli("core", "version", timeout=60)
                if probe.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    logs = _run("logs", "--tail", "40", name, check=False)
                    raise RuntimeError(f"the engine did not answer: {probe.stderr[-1500:]}\n{logs.stdout[-1500:]}{logs.stderr[-1500:]}")
                time.sleep(probe_interval)
            yield engine
        finally:
            # A graceful stop keeps a named state volume clean for a later engine on it; a volume
            # of its own is removed right after, so it is not waited for (~40 s an engine).
            if not own_volume:
                _run("stop", "-t", "30", name, check=False)
            _run("rm", "-f", f"{name}-mirror", name, check=False)
            if own_volume:
                _run("volume", "rm", "-f", volume, check=False)
            if on_network is None:
                _run("network", "rm", network, check=False)


@contextlib.asynccontextmanager
async def connected(engine: Engine, module_source: pathlib.Path) -> AsyncIterator[None]:
    """An SDK session on `engine`, with ci.main.MODULE_SOURCE set to `module_source` as the
    engine would load it (the seam for `dag.current_module()`)."""
    import dagger

    from ci import main

    saved = {k: os.environ.get(k) for k in engine.env}
    os.environ.update(engine.env)
    try:
        async with dagger.connection(dagger.Config(timeout=600)):
            token = main.MODULE_SOURCE.set(dagger.dag.host().directory(str(module_source), include=["ci/**", "deploy/**"]))
            try:
                yield
            finally:
                main.MODULE_SOURCE.reset(token)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
