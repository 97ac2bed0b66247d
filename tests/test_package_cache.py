"""Package caches across fresh runners, with the local driver and real BuildKit.

The bot's wheelhouse (`RUN --mount=type=cache,id=dimbybot2-wheels`) is saved to the build's own
cache backend after the install ran, and restored before the next build whose install step
misses: a lock change on a fresh runner then downloads only the wheels it changed.
Each fresh runner is a private dockerd (tests/fresh_docker.py). GitHub's cache is the stand-in
of tests/gha_standin (the v2 API over Azurite), since GitHub cannot run here; the registry
backend is a real registry (Debian's docker-registry).

Evidence that the cache was used is pip's own output in BuildKit's progress log: "Downloading"
for a wheel fetched from the index, "File was already downloaded" for one the restored
wheelhouse held.
"""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests import fresh_docker
from tests.conftest import BASE_IMAGES, LOCAL_BASES, REPO
from tests.gha_standin.service import GhaStandIn, start
from tests.registry_fixture import RunningRegistry, start_registry
from tests.test_gha_cache import copy_repo

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker")]

MAIN = "refs/heads/main"
PREFIX = "pkgcache-dimbybot2-bot-dimbybot2-wheels-"
REUSED = "File was already downloaded"
WHEELS = 17  # the wheels bot/requirements.lock installs on Python 3.11 (audioop-lts is for 3.13+)
# idna one release back: the wheel's sha256 as the index serves it (a lock bump of one package).
IDNA_BACK = ("idna==3.19 \\\n    --hash=sha256:815e7be7a7806d54abb586dc943addc79e8b2ee16915059658cbeff4b1b43bf4\n")


@pytest.fixture(scope="module")
def gha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhaStandIn]:
    yield from start(tmp_path_factory.mktemp("gha"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_registry(tmp_path_factory.mktemp("registry"))


def build_bot(repo: pathlib.Path, registry: RunningRegistry, env: dict[str, str], *args: str) -> dict[str, Any]:
    """`dimbybot-ci build-and-push --image bot` on a fresh runner; the bot's report."""
    with fresh_docker.running(images=BASE_IMAGES) as runner:
        environment = {**runner.env, **env, "REGISTRY_PASSWORD": registry.password}
        base_args = [arg for key, value in LOCAL_BASES for arg in ("--build-arg", f"{key}={value}")]
        result = subprocess.run(
            [sys.executable, "-m", "ci.cli", "build-and-push", "--repo", str(repo), *base_args, "--image", "bot",
             "--registry", f"{registry.host}/pkg", "--username", registry.username, "--sha", uuid.uuid4().hex + "0" * 8,
             "--no-skip", "--format", "json", *args],
            capture_output=True, text=True, env=environment, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (bot,) = json.loads(result.stdout)["images"]
    assert isinstance(bot, dict)
    return bot


def pip_output(repo: pathlib.Path) -> str:
    """What the install step printed, from the bot build's rawjson progress log."""
    vertices: set[str] = set()
    chunks: list[tuple[str, bytes]] = []
    decoder = json.JSONDecoder()
    text = (repo / ".work" / "bot.progress.json").read_text()
    position = 0
    while (position := text.find("{", position)) >= 0:
        value, position = decoder.raw_decode(text, position)
        for vertex in value.get("vertexes") or []:
            if "pip install" in vertex.get("name", ""):
                vertices.add(vertex["digest"])
        chunks += [(log["vertex"], base64.b64decode(log["data"])) for log in value.get("logs") or []]
    return b"".join(data for vertex, data in chunks if vertex in vertices).decode(errors="replace")


def change_lock(repo: pathlib.Path) -> None:
    """A new lock file with the same packages (the install step's inputs change, its result not)."""
    lock = repo / "bot" / "requirements.lock"
    lock.write_text(lock.read_text() + f"# relocked {uuid.uuid4()}\n")


def bump_one_package(repo: pathlib.Path) -> None:
    lock = repo / "bot" / "requirements.lock"
    text = lock.read_text()
    start = text.index("idna==3.20")
    end = text.index("    # via", start)
    lock.write_text(text[:start] + IDNA_BACK + text[end:])


def packages(report: dict[str, Any]) -> dict[str, Any]:
    (mount,) = report["package_caches"]
    assert mount["mount"] == "dimbybot2-wheels"
    return dict(mount)


@pytest.fixture(scope="module")
def gha_seed(gha: GhaStandIn, registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, dict[str, Any]]:
    repo = copy_repo(tmp_path_factory.mktemp("pkg-gha") / "repo")
    return repo, build_bot(repo, registry, gha.runner_env(MAIN), "--cache=gha")


def test_the_first_build_downloads_every_package_and_saves_the_pip_cache_to_its_own_gha_entry(
        gha: GhaStandIn, gha_seed: tuple[pathlib.Path, dict[str, Any]]) -> None:
    repo, report = gha_seed
    mount = packages(report)
    assert mount["ok"] and mount["restored_from"] is None and "nothing saved yet" in mount["detail"]
    assert mount["saved_as"].startswith(PREFIX) and mount["saved_bytes"] > 100_000, mount
    (entry,) = gha.service.finalized(PREFIX)
    assert entry.key == mount["saved_as"] and entry.size == mount["saved_bytes"]
    output = pip_output(repo)
    assert output.count("Downloading ") == WHEELS and REUSED not in output, output[-1500:]


def test_a_lock_change_on_a_fresh_runner_installs_from_the_restored_cache_and_gives_the_same_image(
        gha: GhaStandIn, registry: RunningRegistry, gha_seed: tuple[pathlib.Path, dict[str, Any]],
        tmp_path: pathlib.Path) -> None:
    _, seed = gha_seed
    repo = copy_repo(tmp_path / "repo")
    change_lock(repo)
    saved_before = len(gha.service.finalized(PREFIX))
    report = build_bot(repo, registry, gha.runner_env(MAIN), "--cache=gha")
    mount = packages(report)
    steps = {s["label"]: s["cached"] for s in report["steps"]}
    assert steps["deps 4/4"] is False, "the install must run again after a lock change"
    assert mount["restored_from"] == seed["package_caches"][0]["saved_as"] and not mount["exact"], mount["detail"]
    assert mount["restored_bytes"] == seed["package_caches"][0]["saved_bytes"]
    output = pip_output(repo)
    assert output.count(REUSED) == WHEELS and "Downloading " not in output, output[-1500:]
    # Same packages: pip left the cache as it was restored, so nothing is uploaded again.
    assert mount["saved_as"] is None and "not saved again" in mount["detail"], mount
    assert len(gha.service.finalized(PREFIX)) == saved_before
    # The cache mount is never part of the image: the same venv, the same image.
    assert report["digest"] == seed["digest"]


def test_a_lock_bump_of_one_package_downloads_only_that_wheel_and_saves_a_wheelhouse_without_the_old_one(
        gha: GhaStandIn, registry: RunningRegistry, tmp_path: pathlib.Path) -> None:
    import io
    import tarfile

    from ci.cache_client import RuntimeCache
    from ci.package_cache_store import GHA_VERSION

    bust = ("--cache=gha", "--cache-bust", f"bump{uuid.uuid4().hex[:6]}")  # its own scope: no other test's wheelhouse
    prefix = PREFIX.replace("dimbybot2-bot-", f"dimbybot2-bot-{bust[2]}-")
    seed = packages(build_bot(copy_repo(tmp_path / "seed"), registry, gha.runner_env(MAIN), *bust))
    repo = copy_repo(tmp_path / "repo")
    bump_one_package(repo)
    mount = packages(build_bot(repo, registry, gha.runner_env(MAIN), *bust))
    assert seed["saved_as"].startswith(prefix) and mount["restored_from"] == seed["saved_as"], mount
    output = pip_output(repo)
    assert output.count("Downloading ") == 1 and "Downloading idna-3.19-py3-none-any.whl" in output, output[-1500:]
    assert output.count(REUSED) == WHEELS - 1
    assert mount["saved_as"].startswith(prefix) and mount["saved_as"] != mount["restored_from"], mount
    found = RuntimeCache(gha.runner_env(MAIN)["ACTIONS_RUNTIME_TOKEN"], gha.results_url).lookup(mount["saved_as"], version=GHA_VERSION)
    assert found is not None
    with tarfile.open(fileobj=io.BytesIO(RuntimeCache.read_url(found[1], "the wheelhouse"))) as tar:
        wheels = sorted(m.name.removeprefix("./") for m in tar.getmembers() if m.name.endswith(".whl"))
    assert len(wheels) == WHEELS and "idna-3.19-py3-none-any.whl" in wheels and "idna-3.20-py3-none-any.whl" not in wheels


def test_unchanged_install_inputs_restore_nothing_and_save_nothing(
        gha: GhaStandIn, registry: RunningRegistry, gha_seed: tuple[pathlib.Path, dict[str, Any]],
        tmp_path: pathlib.Path) -> None:
    _, seed = gha_seed
    repo = copy_repo(tmp_path / "repo")
    (repo / "bot" / "dimbybot" / "__init__.py").write_text(f'__version__ = "{uuid.uuid4()}"\n')  # a code change
    downloads_before = [c for c in gha.service.calls if c[1].startswith(PREFIX)]
    report = build_bot(repo, registry, gha.runner_env(MAIN), "--cache=gha")
    mount = packages(report)
    assert mount["exact"] and mount["restored_bytes"] == 0 and "nothing restored" in mount["detail"], mount
    assert "hit the layer cache" in mount["detail"] and mount["saved_as"] is None
    assert [c for c in gha.service.calls if c[1].startswith(PREFIX)] == [*downloads_before, ("GetCacheEntryDownloadURL", seed["package_caches"][0]["saved_as"])]


def test_a_failing_cache_service_costs_only_the_package_cache_never_the_build(
        gha: GhaStandIn, registry: RunningRegistry, gha_seed: tuple[pathlib.Path, dict[str, Any]],
        tmp_path: pathlib.Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    change_lock(repo)
    gha.service.faults.status["GetCacheEntryDownloadURL"] = 500
    try:
        report = build_bot(repo, registry, gha.runner_env(MAIN), "--cache=gha")
    finally:
        gha.service.faults.status.pop("GetCacheEntryDownloadURL", None)
    mount = packages(report)
    assert report["error"] is None and report["digest"] and report["refs"]
    assert mount["ok"] is False and "restore failed, built without it" in mount["detail"] and "HTTP 500" in mount["detail"]
    assert any(w.startswith("package cache dimbybot2-wheels: restore failed") for w in report["warnings"])
    assert pip_output(repo).count("Downloading ") == WHEELS


def test_the_registry_backend_keeps_the_pip_cache_as_an_artifact_beside_the_layer_cache(
        registry: RunningRegistry, tmp_path: pathlib.Path) -> None:
    from ci.package_cache_store import ARTIFACT_TYPE
    from ci.registry import Registry

    cache_args = ("--cache=registry", "--cache-ref", f"{registry.host}/pkg/dimbybot2-cache-{uuid.uuid4().hex[:8]}")
    repo = copy_repo(tmp_path / "first")
    seed = packages(build_bot(repo, registry, {}, *cache_args))
    assert seed["saved_as"].startswith(PREFIX), seed
    client = Registry(registry.host, registry.username, registry.password)
    repository = cache_args[2].split("/", 1)[1]
    body, _, _ = client.get_manifest(repository, seed["saved_as"])
    assert json.loads(body)["artifactType"] == ARTIFACT_TYPE
    assert client.digest(repository, PREFIX + "latest") == client.digest(repository, seed["saved_as"])

    repo = copy_repo(tmp_path / "second")
    change_lock(repo)
    mount = packages(build_bot(repo, registry, {}, *cache_args))
    assert mount["restored_from"] == seed["saved_as"] and mount["restored_bytes"] == seed["saved_bytes"], mount
    assert "Downloading " not in pip_output(repo)
