"""build-and-push, build, verify-determinism and debug, executed end to end by a real Dagger
engine (marked `engine`): the engine of tests/dagger_engine.py, driven through the SDK as a
client with the arguments `dagger call` builds (the source with the module's Ignore list,
secrets by `set_secret`); ci.main.MODULE_SOURCE stands in for dag.current_module().

The BuildKit the pipeline starts pulls the Dockerfiles' base images itself: it is given the
mirror (stand-ins for docker.io's and ghcr.io's images) as a user gives a pull-through cache,
with `buildkit_config`. The outside registry is Debian's docker-registry with htpasswd over
TLS on the test network's gateway; the engine trusts the throwaway CA that signed it, as a
company's engine trusts its CA.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator

import anyio
import pytest

from ci import main
from ci.errors import InputError
from ci.registry import Registry
from tests import dagger_engine, pinned_buildkit
from tests.conftest import REPO
from tests.registry_fixture import RunningRegistry, ThrowawayCA, start_registry

pytestmark = [pytest.mark.engine, pytest.mark.docker, pytest.mark.usefixtures("docker")]

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return ThrowawayCA.make(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def engine(ca: ThrowawayCA) -> Iterator[dagger_engine.Engine]:
    pinned_buildkit.fill_mirror(pinned_buildkit.binaries())
    bin_dir, image = dagger_engine.build()
    with dagger_engine.running(bin_dir, image, pinned_buildkit.MIRROR_STORAGE, extra_ca=ca.cert) as started:
        yield started


@pytest.fixture
def outside(engine: dagger_engine.Engine, ca: ThrowawayCA, tmp_path: pathlib.Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningRegistry]:
    """A registry of its own for each test, where the engine's containers (and this process,
    trusting the same CA) reach it."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
    yield from start_registry(tmp_path, address=engine.gateway, certificate=ca.issue(engine.gateway), ca=ca.cert)


def pipeline(engine: dagger_engine.Engine) -> main.Dimbybot2:
    """The module object as `dagger call --buildkit-config=buildkitd.toml` makes it."""
    import dagger

    source = dagger.dag.host().directory(str(REPO), exclude=main.SOURCE_IGNORE)
    config = dagger.dag.directory().with_new_file("buildkitd.toml", engine.buildkitd_toml()).file("buildkitd.toml")
    return main.Dimbybot2(source=source, buildkit_config=config)


def client(registry: RunningRegistry) -> Registry:
    return Registry(registry.host, registry.username, registry.password)


async def push(engine: dagger_engine.Engine, registry: RunningRegistry, password: str | None = None, sha: str = SHA,
               **options: object) -> main.BuildAndPushResult:
    import dagger

    secret = dagger.dag.set_secret(f"registry-password-{uuid.uuid4().hex}", password or registry.password)
    return await pipeline(engine).build_and_push(registry=f"{registry.host}/dimbybot2", username=registry.username,
                                                 password=secret, sha=sha, **options)  # type: ignore[arg-type]


async def test_build_and_push_to_an_outside_registry_pushes_both_images_sha_then_latest(
        engine: dagger_engine.Engine, outside: RunningRegistry) -> None:
    async with dagger_engine.connected(engine, REPO):
        result = await push(engine, outside, cache_backend="engine")
    assert result.ok, [(i.name, i.error) for i in result.images]
    registry = client(outside)
    for image in result.images:
        repository = f"dimbybot2/dimbybot2-{image.name}"
        assert image.refs == [f"{outside.host}/{repository}:{SHA}", f"{outside.host}/{repository}:latest"]
        assert registry.digest(repository, SHA) == image.digest
        assert registry.digest(repository, "latest") == image.digest
        # The input key was computed in the engine, base images resolved through the mirror.
        assert image.avoidance.startswith("built: no image with these inputs yet"), image.avoidance


def catalog(registry: RunningRegistry) -> list[str]:
    import base64
    import json
    import urllib.request

    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    request = urllib.request.Request(f"https://{registry.host}/v2/_catalog", headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return list(json.load(response)["repositories"])


def delete_image(registry: RunningRegistry, repository: str, digest: str) -> None:
    """Deletes the manifest: every tag on it goes too (what a registry's retention policy does)."""
    import base64
    import urllib.request

    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    request = urllib.request.Request(f"https://{registry.host}/v2/{repository}/manifests/{digest}", method="DELETE",
                                     headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=30):
        pass


async def test_the_same_call_twice_on_one_engine_pushes_and_moves_the_tags_again_from_the_engine_cache(
        engine: dagger_engine.Engine, outside: RunningRegistry) -> None:
    """The per-call id defeats the engine's exec cache for the push and the tag moves: with the
    tags deleted after the first call, the second puts them back; its build hits every step
    from the state volume (the `engine` backend)."""
    async with dagger_engine.connected(engine, REPO):
        first = await push(engine, outside, cache_backend="engine", images=["lavalink"])
        (image,) = first.images
        repository = "dimbybot2/dimbybot2-lavalink"
        delete_image(outside, repository, image.digest)
        assert client(outside).manifest_or_none(repository, "latest") is None
        second = await push(engine, outside, cache_backend="engine", images=["lavalink"])
    (again,) = second.images
    assert second.ok, again.error
    assert again.digest == image.digest
    assert client(outside).digest(repository, SHA) == client(outside).digest(repository, "latest") == image.digest
    assert again.cached_steps == again.total_steps > 0


async def test_a_wrong_password_is_refused_before_anything_is_built_or_pushed(
        engine: dagger_engine.Engine, outside: RunningRegistry) -> None:
    async with dagger_engine.connected(engine, REPO):
        with pytest.raises(InputError) as refused:
            await push(engine, outside, password="not-the-password")
    assert refused.value.argument == "--password"
    assert "not-the-password" not in str(refused.value)
    assert catalog(outside) == []


async def test_build_and_push_with_the_embedded_registry_pushes_both_images(engine: dagger_engine.Engine) -> None:
    """No --registry: the pipeline starts one for the call (Service.start keeps it up between
    the push and the tag moves), pushes both images and reads the SHA tag back."""
    async with dagger_engine.connected(engine, REPO):
        result = await pipeline(engine).build_and_push(sha=SHA, cache_backend="none")
    assert result.ok, [(i.name, i.error) for i in result.images]
    assert sorted(i.name for i in result.images) == ["bot", "lavalink"]
    for image in result.images:
        assert image.digest.startswith("sha256:")
        assert image.refs == [f"{main.EMBEDDED_REGISTRY}/dimbybot2-{image.name}:{SHA}",
                              f"{main.EMBEDDED_REGISTRY}/dimbybot2-{image.name}:latest"]


async def test_build_returns_the_image_as_a_container_the_bot_runs_in(engine: dagger_engine.Engine) -> None:
    """What `dagger call build --image=bot terminal` opens: the built image, its entrypoint's
    program importable from its venv."""
    async with dagger_engine.connected(engine, REPO):
        ctr = await pipeline(engine).build(image="bot")
        out = await ctr.with_exec(["python", "-c", "import dimbybot, sys; print(sys.prefix)"]).stdout()
        user = await ctr.user()
    assert out.strip() == "/opt/venv"
    assert user == "10001:10001"


async def test_verify_determinism_finds_the_cached_and_uncached_builds_identical(engine: dagger_engine.Engine) -> None:
    import json

    async with dagger_engine.connected(engine, REPO):
        out = await pipeline(engine).verify_determinism(image="lavalink")
    result = json.loads(out)
    assert result["identical"] is True, result
    hits, total = result["cached_build_hits"].split("/")
    assert hits == total


SECOND_CALL = """
import asyncio, json, os, pathlib, sys
sys.path.insert(0, os.environ["REPO"])
import dagger
from tests import dagger_engine
from tests.conftest import REPO
from tests.registry_fixture import RunningRegistry
from tests.test_engine_pipeline import push

async def main():
    engine = dagger_engine.Engine(**{**json.loads(os.environ["ENGINE"]), "bin_dir": pathlib.Path(os.environ["BIN_DIR"])})
    registry = RunningRegistry(**{**json.loads(os.environ["REGISTRY"]), "storage": pathlib.Path(os.environ["STORAGE"])})
    async with dagger_engine.connected(engine, REPO):
        result = await push(engine, registry, cache_backend="engine", images=["lavalink"])
    print(json.dumps({"ok": result.ok, "digest": result.images[0].digest, "error": result.images[0].error}))

asyncio.run(main())
"""


async def test_two_calls_at_once_on_one_engine_share_its_cache_without_colliding(
        engine: dagger_engine.Engine, outside: RunningRegistry) -> None:
    """Two `dagger call`s at once (two sessions: within one, the engine would run one service
    for both): their buildkitd want the one state volume, and LOCKED sharing makes the second
    wait for the first (shared, the second would die on buildkitd.lock)."""
    import dataclasses
    import json
    import os
    import sys

    env = {**os.environ, "REPO": str(REPO), "ENGINE": json.dumps(dataclasses.asdict(engine), default=str),
           "REGISTRY": json.dumps(dataclasses.asdict(outside), default=str),
           "BIN_DIR": str(engine.bin_dir), "STORAGE": str(outside.storage)}
    second: dict[str, object] = {}

    async def other_session() -> None:
        done = await anyio.run_process([sys.executable, "-c", SECOND_CALL], env=env, check=False)
        second["out"], second["code"], second["err"] = done.stdout.decode(), done.returncode, done.stderr.decode()[-3000:]

    async with dagger_engine.connected(engine, REPO):
        async with anyio.create_task_group() as group:
            group.start_soon(other_session)
            first = await push(engine, outside, cache_backend="engine", images=["lavalink"])
    assert second["code"] == 0, second["err"]
    other = json.loads(str(second["out"]).strip().splitlines()[-1])
    assert first.ok and other["ok"], (first.images[0].error, other["error"])
    assert other["digest"] == first.images[0].digest


# --- services: the embedded registry keeps what was pushed for the whole call -------------

BLOB = b"pushed before the slow step"
PUT_BLOB = f"from ci.registry import Registry; print(Registry('registry:5000', insecure=True).put_blob('probe', {BLOB!r}))"
HAS_BLOB = ("import sys; from ci.registry import Registry\n"
            "try:\n    Registry('registry:5000', insecure=True).blob('probe', sys.argv[1]); print('kept')\n"
            "except Exception as err:\n    print('gone:', err)")


async def run_against(registry: object, argv: list[str], call_id: str) -> str:
    ctr = (main.core_container(main.module_source()).with_service_binding(main.REGISTRY_ALIAS, registry)  # type: ignore[arg-type]
           .with_(main.once_per_call(call_id)).with_exec(argv))
    return (await ctr.stdout()).strip()


@pytest.mark.parametrize("started", [True, False], ids=["started-for-the-call", "only-bound"])
async def test_the_embedded_registry_survives_a_slow_step_only_when_started_for_the_call(
        engine: dagger_engine.Engine, started: bool) -> None:
    """The rule registry_service() is started for: an idle service is stopped about 10 s after
    its last client detaches, and the next binding meets a fresh one (here: an empty registry)."""
    async with dagger_engine.connected(engine, REPO):
        service = main.registry_service()
        if started:
            service = await service.start()
        try:
            digest = await run_against(service, ["python", "-c", PUT_BLOB], main.new_call_id())
            await anyio.sleep(20)  # the slow step between the push and the tag moves
            seen = await run_against(service, ["python", "-c", HAS_BLOB, digest], main.new_call_id())
        finally:
            if started:
                await service.stop()
    assert seen == "kept" if started else seen.startswith("gone:"), seen


# --- debug: the state before the step that missed, from the real build's cache -------------

def git(repo: pathlib.Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=ci@example.invalid", "-c", "user.name=ci", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def repo_with_a_code_change(root: pathlib.Path) -> tuple[pathlib.Path, str]:
    """A copy of the bot's build inputs with two commits: base, then one changed source file."""
    import shutil

    repo = root / "repo"
    repo.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml"):
        shutil.copy2(REPO / name, repo / name)
    shutil.copytree(REPO / "bot", repo / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "Lavalink", repo / "Lavalink")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD")
    code = next((repo / "bot" / "dimbybot").glob("*.py"))
    code.write_text(code.read_text() + "\n# changed\n")
    git(repo, "commit", "-qam", "head")
    return repo, base


async def test_debug_at_the_first_miss_opens_the_state_before_the_changed_copy(
        engine: dagger_engine.Engine, tmp_path: pathlib.Path) -> None:
    """`dagger call debug --image=bot --step=first-miss terminal` after a code change: the
    shell starts where the missed COPY would run, the dependencies already in place."""
    import dagger

    repo, base = repo_with_a_code_change(tmp_path)
    async with dagger_engine.connected(engine, REPO):
        ours = pipeline(engine)
        module = main.Dimbybot2(source=dagger.dag.host().directory(str(repo), exclude=main.SOURCE_IGNORE),
                                buildkit_config=ours.buildkit_config)
        state = await module.debug(image="bot", step="first-miss", base=base, cache_backend="engine")
        listing = await state.with_exec(["sh", "-c", "ls /app; test -x /opt/venv/bin/python && echo venv"]).stdout()
        after = await module.debug(image="bot", step="first-miss", at="after", base=base, cache_backend="engine")
        copied = await after.with_exec(["ls", "/app/dimbybot"]).stdout()
    assert listing.split() == ["venv"]  # /app is empty: the COPY of the code is the step that missed
    assert "__main__.py" in copied.split()


# --- build avoidance: unchanged inputs are not built again -------------------------------

async def test_a_commit_with_unchanged_inputs_is_not_built_its_tags_point_at_the_recorded_image(
        engine: dagger_engine.Engine, outside: RunningRegistry) -> None:
    later, forced = "1" * 40, "2" * 40
    async with dagger_engine.connected(engine, REPO):
        first = await push(engine, outside, cache_backend="none", images=["lavalink"])
        again = await push(engine, outside, sha=later, cache_backend="none", images=["lavalink"])
        rebuilt = await push(engine, outside, sha=forced, cache_backend="none", images=["lavalink"], no_skip=True)
    (built,), (skipped,), (forced_build,) = first.images, again.images, rebuilt.images
    assert again.ok and skipped.digest == built.digest, skipped.error
    assert skipped.avoidance == f"skipped: same inputs as {built.digest} (built for {SHA})"
    assert skipped.total_steps == 0  # BuildKit never ran
    repository = "dimbybot2/dimbybot2-lavalink"
    assert client(outside).digest(repository, later) == built.digest
    assert forced_build.avoidance.startswith("built: --no-skip") and forced_build.total_steps > 0
    assert client(outside).digest(repository, "latest") == forced_build.digest == built.digest
