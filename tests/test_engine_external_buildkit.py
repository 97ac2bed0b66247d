"""`--buildkit` on the real engine (marked `engine`): build-and-push and build against a
standalone buildkitd that the user runs and hands to the module, as
`dagger call build-and-push --buildkit=tcp://localhost:PORT` does (the CLI turns the address
into `Host.service` with frontend = backend = PORT and host "localhost").

Where that connection is dialed: the engine listens for the service in the netns of the
container it is bound to, but forwards each connection over the client's session, and the
client dials it: here the SDK's session on this machine (dagger v0.21.8, core/schema/host.go
and core/c2h.go). So "localhost" is this machine's loopback although the engine runs in a
container: the buildkitd publishes its port on 127.0.0.1 only, which the engine's own
network namespace could not reach.

The buildkitd is the pinned BuildKit as the mirror serves it (the moby/buildkit stand-in of
tests/images/buildkit), a privileged container with a network namespace of its own on the
engine's Docker network: it reaches the mirror at the engine's address and the outside
registry on the gateway. Its buildkitd.toml is its own, as a user's is: the mirrors, and the CA
of the outside registry. Its build history (`buildctl debug histories`) shows what ran on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dagger
import pytest

from ci import main, pins
from ci.errors import InputError
from tests import dagger_engine, pinned_buildkit
from tests.conftest import REPO
from tests.registry_fixture import RunningRegistry, ThrowawayCA, start_registry
from tests.test_engine_pipeline import SHA, client, pipeline, push

pytestmark = [pytest.mark.engine, pytest.mark.docker, pytest.mark.usefixtures("docker")]

CONFIG = "/etc/buildkit/buildkitd.toml"
OUTSIDE_CA = "/etc/buildkit/outside-ca.crt"
LISTEN = 1234  # inside the buildkitd's container; published on a free port of 127.0.0.1


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dagger_engine.DOCKER, *args], capture_output=True, text=True, check=check, timeout=300)


@dataclasses.dataclass(frozen=True)
class Standalone:
    """A buildkitd the user runs: a container `name`, its tcp port on the host's 127.0.0.1."""

    name: str
    port: int

    def service(self) -> dagger.Service:
        """What `--buildkit=tcp://localhost:PORT` gives the module."""
        return dagger.dag.host().service([dagger.PortForward(backend=self.port, frontend=self.port)], host="localhost")

    def buildctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.name, "buildctl", "--addr", f"tcp://127.0.0.1:{LISTEN}", *args, check=check)

    def history(self) -> list[dict[str, Any]]:
        """Every build this buildkitd has run (its history records)."""
        out = self.buildctl("debug", "histories", "--format", "{{json .Record}}").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return ThrowawayCA.make(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def engine_network() -> Iterator[tuple[str, str]]:
    """The engine's network, made here so that the standalone buildkitd can join it."""
    with dagger_engine.network() as made:
        yield made


@pytest.fixture(scope="module")
def engine(ca: ThrowawayCA, engine_network: tuple[str, str]) -> Iterator[dagger_engine.Engine]:
    pinned_buildkit.fill_mirror(pinned_buildkit.binaries())
    bin_dir, image = dagger_engine.build()
    with dagger_engine.running(bin_dir, image, pinned_buildkit.MIRROR_STORAGE, extra_ca=ca.cert,
                               on_network=engine_network[0]) as started:
        yield started


@pytest.fixture
def outside(engine: dagger_engine.Engine, ca: ThrowawayCA, tmp_path: pathlib.Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningRegistry]:
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
    yield from start_registry(tmp_path, address=engine.gateway, certificate=ca.issue(engine.gateway), ca=ca.cert)


@pytest.fixture(scope="module")
def buildkit_image(engine: dagger_engine.Engine) -> Iterator[str]:
    """The pinned BuildKit's image, pulled from the mirror into the host's Docker under a tag of
    this module's own, removed afterwards."""
    local = f"dimbybot2-test/standalone-buildkit:{uuid.uuid4().hex[:8]}"
    with pinned_buildkit.serving_mirror() as mirror:
        pulled = f"{mirror}/{pins.BUILDKIT_IMAGE}"
        docker("pull", "--quiet", pulled)
        try:
            docker("tag", pulled, local)
        finally:
            docker("rmi", pulled, check=False)
    try:
        yield local
    finally:
        docker("rmi", local, check=False)


@contextlib.contextmanager
def standalone_buildkitd(engine: dagger_engine.Engine, network: str, image: str, ca: ThrowawayCA, directory: pathlib.Path,
                         trusted: str | None = None) -> Iterator[Standalone]:
    """A fresh buildkitd (new state) listening on tcp, its port published on 127.0.0.1; it
    trusts `ca` for the registry `trusted`. Removed afterwards, its state volume with it."""
    config = directory / "buildkitd.toml"
    extra = f'[registry."{trusted}"]\n  ca = ["{OUTSIDE_CA}"]\n' if trusted else ""
    config.write_text(engine.buildkitd_toml() + extra)
    config.chmod(0o644)
    name = f"dimbybot2-standalone-buildkitd-{uuid.uuid4().hex[:8]}"
    try:
        docker("run", "-d", "--name", name, "--privileged", "--network", network, "-p", f"127.0.0.1::{LISTEN}",
               "-v", f"{config}:{CONFIG}:ro", "-v", f"{ca.cert}:{OUTSIDE_CA}:ro",
               image, "--addr", f"tcp://0.0.0.0:{LISTEN}", "--config", CONFIG)
        published = docker("port", name, f"{LISTEN}/tcp").stdout.split()[0]
        daemon = Standalone(name=name, port=int(published.rsplit(":", 1)[1]))
        deadline = time.monotonic() + 60
        while daemon.buildctl("debug", "workers", check=False).returncode:
            if time.monotonic() > deadline:
                logs = docker("logs", "--tail", "40", name, check=False)
                raise RuntimeError(f"the standalone buildkitd did not answer: {logs.stdout[-1500:]}{logs.stderr[-1500:]}")
            time.sleep(0.5)
        yield daemon
    finally:
        docker("rm", "-f", "-v", name, check=False)


def finished(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of builds that completed without an error."""
    return [r for r in records if r.get("CompletedAt") and not r.get("error")]


def results(record: dict[str, Any]) -> set[str]:
    """The digests a build record names as the build's results (what its exporters made)."""
    return {str(d.get("digest")) for d in ((record.get("Result") or {}).get("Results") or {}).values()}


def pushes(records: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Image name → the results of the builds that pushed it, from the buildkitd's own records."""
    pushed: dict[str, set[str]] = {}
    for record in finished(records):
        for exporter in record.get("Exporters") or []:
            attrs = exporter.get("Attrs") or {}
            if exporter.get("Type") == "image" and attrs.get("push") == "true":
                for name in str(attrs.get("name", "")).split(","):
                    pushed.setdefault(name, set()).update(results(record))
    return pushed


async def test_build_and_push_on_a_standalone_buildkitd_pushes_both_images_sha_then_latest(
        engine: dagger_engine.Engine, engine_network: tuple[str, str], buildkit_image: str, ca: ThrowawayCA,
        outside: RunningRegistry, tmp_path: pathlib.Path) -> None:
    with standalone_buildkitd(engine, engine_network[0], buildkit_image, ca, tmp_path, trusted=outside.host) as daemon:
        assert daemon.history() == []
        async with dagger_engine.connected(engine, REPO):
            buildkit = await daemon.service().start()  # the CLI starts a service argument before the call
            result = await push(engine, outside, buildkit=buildkit)
        records = daemon.history()
    assert result.ok, [(i.name, i.error) for i in result.images]
    assert sorted(i.name for i in result.images) == ["bot", "lavalink"]
    registry = client(outside)
    pushed = pushes(records)
    for image in result.images:
        repository = f"dimbybot2/dimbybot2-{image.name}"
        sha_ref = f"{outside.host}/{repository}:{SHA}"
        assert image.refs == [sha_ref, f"{outside.host}/{repository}:latest"]
        assert registry.digest(repository, SHA) == image.digest
        assert registry.digest(repository, "latest") == image.digest
        # Built and pushed by the standalone buildkitd: its own record of the push says so.
        assert image.digest in pushed.get(sha_ref, set()), records
        assert image.total_steps > 0
        # No build avoidance with an external BuildKit (its version is part of the input key).
        assert image.avoidance == ""


async def test_build_on_a_standalone_buildkitd_returns_the_image_as_a_container_the_bot_runs_in(
        engine: dagger_engine.Engine, engine_network: tuple[str, str], buildkit_image: str, ca: ThrowawayCA,
        tmp_path: pathlib.Path) -> None:
    """`dagger call build --image=bot --buildkit=tcp://localhost:PORT terminal`."""
    with standalone_buildkitd(engine, engine_network[0], buildkit_image, ca, tmp_path) as daemon:
        async with dagger_engine.connected(engine, REPO):
            buildkit = await daemon.service().start()
            build: Any = pipeline(engine).build  # the SDK's decorator is untyped
            ctr: dagger.Container = await build(image="bot", buildkit=buildkit)
            out = await ctr.with_exec(["python", "-c", "import dimbybot, sys; print(sys.prefix)"]).stdout()
            user = await ctr.user()
        records = daemon.history()
    assert out.strip() == "/opt/venv"
    assert user == "10001:10001"
    (record,) = finished(records)  # the one build, and it ran there
    assert [e.get("Type") for e in record.get("Exporters") or []] == ["oci"]
    assert all(digest.startswith("sha256:") for digest in results(record)) and results(record), record


async def test_buildkit_with_the_embedded_registry_is_refused_before_anything_is_built(
        engine: dagger_engine.Engine, engine_network: tuple[str, str], buildkit_image: str, ca: ThrowawayCA,
        tmp_path: pathlib.Path) -> None:
    """No --registry: the registry started in the pipeline resolves only inside it, so the
    standalone buildkitd could never push there; refused before it is asked anything."""
    with standalone_buildkitd(engine, engine_network[0], buildkit_image, ca, tmp_path) as daemon:
        async with dagger_engine.connected(engine, REPO):
            buildkit = await daemon.service().start()
            build_and_push: Any = pipeline(engine).build_and_push  # the SDK's decorator is untyped
            with pytest.raises(InputError) as refused:
                await build_and_push(sha=SHA, cache_backend="none", buildkit=buildkit)
        records = daemon.history()
    assert refused.value.argument == "--buildkit"
    assert "--registry" in str(refused.value) and main.EMBEDDED_REGISTRY in str(refused.value)
    assert records == []
